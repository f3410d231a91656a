// Package sublink is what the plugins whose pod interface is a virtual link
// stacked on a master device share: macvlan, ipvlan and vlan. The three
// differ only in the link they build (its kind and kind-specific
// attributes) and in what CHECK compares; finding the master, creating the
// link inside the pod namespace, addressing it through IPAM, DEL, CHECK,
// GC and STATUS are the same and live here.
//
// # Creating the link
//
// The pod interface is created by one RTM_NEWLINK sent from the namespace
// of the master (the node, or the pod with linkInContainer) with
// IFLA_NET_NS_FD naming the pod namespace: it comes to life inside the pod,
// bound to a master outside it, and is never visible on the node. It is
// created under a random temporary name and then renamed, inside the pod,
// to CNI_IFNAME. The detour exists because most kernels in use look up the
// requested name in the sender's namespace, not the target's (only recent
// ones, such as 6.18, look in the target): creating "eth0" from a node that
// has an "eth0" fails with EEXIST there. The
// temporary name is random and checked in both namespaces; the rename is a
// single operation inside the pod, which either takes CNI_IFNAME or fails
// with nothing renamed. Neither step switches a thread's namespace.
//
// # Addressing
//
// With ipam set, the IPAM plugin's addresses and routes go onto the link
// (ipcfg). Without ipam the interface is layer 2 only: created and set up,
// no address. arp_notify (and ndisc_notify for IPv6) are set on the new
// interface before it comes up, so the kernel announces its addresses with
// a gratuitous ARP and an unsolicited neighbour advertisement when the link
// goes up: neighbours that cached a previous owner of an address (a pod
// restarted with the same IP and a new MAC) learn the new one at once.
package sublink
