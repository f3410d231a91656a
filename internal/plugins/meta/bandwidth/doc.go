// Package bandwidth is the bandwidth meta plugin: it limits the rate of a
// pod's traffic in each direction, chained after an interface plugin that
// gives the pod a veth pair (bridge, ptp).
//
// Traffic into the pod is shaped where it leaves the host: a TBF qdisc at
// the root of the host end of the veth. Traffic out of the pod arrives on
// the host end, where shaping is not possible, so an ingress qdisc with a
// match-all u32 filter redirects it (mirred) to an IFB device of its own,
// whose root holds the second TBF. With a subnet list the TBFs become HTB
// qdiscs with one shaped class and u32 filters on the address of the other
// end. Everything is programmed over netlink; nothing runs tc.
//
// The IFB device is named from a hash of network, container ID and
// interface, and its alias names the owner, so DEL and GC find it with no
// state and without the pod's namespace. See README.md.
package bandwidth
