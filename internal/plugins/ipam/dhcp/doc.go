// Package dhcp is the dhcp IPAM plugin and its daemon.
//
// A DHCP lease must be renewed for as long as the pod lives, which a plugin
// process that runs for one CNI call cannot do. So the plugin forwards each
// call over a unix socket (default /run/cni/dhcp.sock) to a long-running
// daemon, "linen-cni dhcp daemon", which holds one lease per attachment
// (container ID, network name, interface name).
//
// # The daemon
//
// For an allocation the daemon opens the pod's namespace (CNI_NETNS, behind
// -hostprefix), sets CNI_IFNAME up if it is down, and runs a DHCP client
// on it through an AF_PACKET socket created inside the namespace: DISCOVER,
// OFFER, REQUEST, ACK, with retransmissions backing off from 2 s to
// -resendmax, within -timeout. The client identifier (option 61) is
// "<containerID>/<network>/<ifName>", so a server recognises the
// attachment across renewals and daemon restarts. A goroutine per lease
// renews it at T1 by unicast to its server, rebinds at T2 by broadcast,
// and, when the server refuses it (DHCPNAK) or it expires, sets the
// interface down, since the address may now belong to someone else; CHECK
// then fails. Release (DEL, GC) sends DHCPRELEASE when the namespace and
// interface still exist and forgets the lease in any case.
//
// Leases survive a daemon restart: each is kept as a file in -statedir
// (default /run/cni/dhcp-leases), and a new daemon resumes the leases
// whose namespace still exists (same inode) and forgets the others. With
// -statedir "" leases live in memory only and a restart loses them: the
// pods keep their addresses, unrenewed, until the server gives them away.
//
// The daemon is a separate process, so a plugin that crashes mid-call
// leaves it running; a request whose plugin went away completes and its
// lease is kept, to be released by DEL or GC.
//
// # The protocol
//
// One JSON request per connection, one JSON response, each a line,
// carrying the protocol version (ProtoVersion). Operations: allocate,
// release, check, gc (with the network's valid attachments) and status.
// Errors carry a CNI error code and a message.
//
// # The plugin
//
// ADD asks for a lease and turns its options into the result: address and
// subnet mask, the first router as gateway, classless static routes
// (option 121, which replace the routers and static routes as RFC 3442
// requires; a route via 0.0.0.0 is on the link), otherwise static routes
// (option 33) and a default route via the router, and DNS from options 6,
// 15 and 119. DEL releases (and succeeds when no daemon runs, since no
// daemon then holds the lease); CHECK asks the daemon whether the lease is
// alive and compares it with prevResult; GC releases the network's leases
// of attachments not in cni.dev/valid-attachments; STATUS fails with code
// 50 when the daemon does not answer.
package dhcp
