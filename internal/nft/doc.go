// Package nft is linen's packet filtering: masquerading (ipMasq of the
// bridge and ptp plugins), host port mappings (the portmap plugin) and the
// bridge MAC spoof check, in nftables, over netlink, in process. It never
// runs nft or iptables.
//
// # Design
//
// The rules are static; what changes per pod is set and map elements. A
// pod's ADD or DEL is one nf_tables transaction of element adds or deletes,
// and its cost does not depend on how many pods the node has: no rule is
// listed, parsed or searched on any per-pod path, and every per-pod set is
// a hash set. (Sets of concatenated address ranges — pipapo — would be the
// obvious way to write "source in the pod's subnet", but deleting one
// element from one costs O(elements): 1.7 ms at 600 elements here. Prefix
// ranges are therefore masked lookups into one hash set per prefix length:
// `ip saddr & 255.255.255.0 . ip daddr . th dport @hpsnat4_24`.)
//
// One inet table holds masquerading and host ports for IPv4 and IPv6
// (Linux 5.2 or later for nat in inet); a bridge table holds the spoof
// check. The table comment carries the layout version; a binary that finds
// another version refuses to touch the table, so a later layout can
// replace an older one deliberately. On each ADD a Conn looks its table up
// by name (with its set names, one round trip) and builds what is missing
// only then, under an flock in /run/linen so that concurrent plugins never
// duplicate rules, in one transaction, so a table is either absent or
// complete. A table found incomplete (a chain or set deleted by hand) is
// rebuilt in place: rules replaced, elements kept. The per-prefix-length
// sets are created, with their rule, by the first ADD that needs them (its
// element add fails with ENOENT, which costs the common path nothing).
//
// The static ruleset (`nft list table`, without elements):
//
//	table inet linen {
//		comment "linen schema=1"
//		map hp4 {
//			type inet_proto . inet_service : ipv4_addr . inet_service
//		}
//		map hp4ip {
//			type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
//		}
//		map hp6 {
//			type inet_proto . inet_service : ipv6_addr . inet_service
//		}
//		map hp6ip {
//			type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service
//		}
//		set masq4 {
//			type ipv4_addr
//		}
//		set masq6 {
//			type ipv6_addr
//		}
//		chain prerouting {
//			type nat hook prerouting priority dstnat; policy accept;
//			fib daddr type local jump hostports
//		}
//		chain output {
//			type nat hook output priority -100; policy accept;
//			fib daddr type local jump hostports
//		}
//		chain hostports {
//			dnat ip to ip daddr . meta l4proto . th dport map @hp4ip
//			meta nfproto ipv4 dnat ip to meta l4proto . th dport map @hp4
//			dnat ip6 to ip6 daddr . meta l4proto . th dport map @hp6ip
//			meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @hp6
//		}
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			ct status dnat meta nfproto ipv4 jump hpsnat4
//			ct status dnat meta nfproto ipv6 jump hpsnat6
//			ip saddr @masq4 ip daddr != 224.0.0.0/4 jump masq4
//			ip6 saddr @masq6 ip6 daddr != ff00::/8 jump masq6
//		}
//		chain hpsnat4 {
//		}
//		chain hpsnat6 {
//		}
//		chain masq4 {
//			masquerade
//		}
//		chain masq6 {
//			masquerade
//		}
//	}
//	table bridge linen {
//		comment "linen schema=1"
//		set spoofifs {
//			type ifname
//		}
//		set spoofok {
//			type ifname . ether_addr
//		}
//		chain prerouting {
//			type filter hook prerouting priority dstnat; policy accept;
//			iifname @spoofifs iifname . ether saddr != @spoofok drop
//		}
//	}
//
// and, for example, the dynamic sets' rules of a node with /24 pod subnets
// (hairpin, localhost and masqAll host ports, masquerading):
//
//	chain hpsnat4 {
//		ip saddr & 255.255.255.0 . ip daddr . th dport @hpsnat4_24 masquerade
//		ip saddr & 255.0.0.0 . ip daddr . th dport @hpsnat4_8 masquerade
//		ip saddr & 0.0.0.0 . ip daddr . th dport @hpsnat4_0 masquerade
//	}
//	chain masq4 {
//		ip saddr . ip daddr & 255.255.255.0 @masqskip4_24 return
//		masquerade
//	}
//
// How the pieces work:
//
//   - Host ports: traffic to a local address (prerouting, and output for the
//     host's own connections) is translated by map lookup; the hostIP maps
//     come first, so a mapping bound to one address wins there over a
//     wildcard mapping of the same port.
//   - hpsnat4/6_<L> hold (source network . pod address . container port) of
//     translated connections to masquerade, the source network being of
//     prefix length L: the pod's subnet (hairpin: a pod reaching its own or
//     a neighbour's host port, whose reply would otherwise bypass the host),
//     127.0.0.0/8 (host ports on localhost; needs route_localnet on the
//     pod's host interface) and, for masqAll, 0.0.0.0/0 or ::/0.
//   - masq4/6 hold the pods to masquerade; masqskip4/6_<L> hold (pod .
//     subnet) of the destinations that stay unmasqueraded. Multicast is
//     never masqueraded.
//   - The spoof check drops frames entering from a listed bridge port
//     unless (port . source MAC) is listed.
//
// Per-pod kernel state: hash set elements only, about 100–250 bytes each
// with its comment. A dual-stack pod with one host port and snat has 5
// host port elements (hp4, hp6, hpsnat4_<L>, hpsnat4_8, hpsnat6_<L>);
// ipMasq adds 4 (masq and masqskip per family); the spoof check 2. Per
// packet: the nat chains run for the first packet of a connection only,
// each lookup is a hash lookup, and the per-length rules number the prefix
// lengths in use (one or two), not the pods.
//
// # Ownership
//
// Every element's comment names its owner, `net=<network> id=<container>
// if=<ifname>` (see Owner.Tag). Adds are exclusive: a host port held by
// another attachment fails the ADD with a *PortConflictError naming it, and
// nothing changes; in the other sets a key held by another owner is stale
// (its pod address or interface name was reused after a missed DEL) and is
// replaced. DEL looks its elements up by key when the caller knows them
// (runtimeConfig and prevResult), else lists the sets concerned and filters
// by tag; it deletes only elements with its tag, in one transaction, and
// sends no transaction at all when there is nothing to delete. GC lists the
// sets and deletes the elements of the network whose owner is not among
// the valid attachments.
//
// # The socket
//
// All of it runs over one lasting NETLINK_NETFILTER socket (Conn, from
// Dial). On Linux 6.x, releasing such a socket while nf_tables' destroy
// work is pending — after any transaction that deleted something, in any
// process of the namespace — blocks the release for about one RCU grace
// period (~13 ms here). Transactions themselves do not wait. Dial therefore
// returns a duplicate of the socket's descriptor, which the plugin entry
// hands to a detached helper so that the final release happens off the
// pod's critical path. Conntrack entries are removed over the same socket.
//
// google/nftables builds the static structure (sets, chains, rule
// expressions); this package sends it, and the per-pod element messages,
// itself, because v0.3.0 cannot write a table comment, set NLM_F_EXCL on
// element adds, or get single elements.
package nft
