// Package linen is the linen meta-plugin, registered as "linen" and as
// "flannel": it turns the node's lease, published by the overlay daemon in
// subnet.env, into the configuration of an interface plugin (bridge with
// host-local IPAM by default) and delegates to it.
//
// It keeps the flannel CNI plugin's contract, so flannel's standard
// conflist works unchanged:
//
//   - the delegate is the "delegate" object with name, cniVersion and ipam
//     filled in, ipMasq = !FLANNEL_IPMASQ and mtu = FLANNEL_MTU unless set,
//     isGateway = true and bridge = "cni0" for the bridge unless set;
//   - ipam is the "ipam" object with type host-local (unless set), one
//     range set per family from FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET and a
//     route to each FLANNEL_NETWORK;
//   - the delegate configuration of each attachment is saved under dataDir
//     before ADD and replayed on DEL, so DEL releases the address even
//     after subnet.env changed or disappeared; a flannel-written file is
//     read the same way, and flannel can read linen's.
//
// On top of that: CHECK replays the saved configuration (and reports a
// subnet that moved), GC removes saved configurations of attachments that
// are gone and forwards GC to the delegate, STATUS reports a missing
// subnet.env (code 50), configuration problems are reported all at once
// with their field paths, and the delegate runs in process when CNI_PATH
// resolves it to linen-cni. See README.md.
package linen
