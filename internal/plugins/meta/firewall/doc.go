// Package firewall is the firewall meta plugin: chained after an interface
// plugin, it lets the pod's forwarded traffic through the node's packet
// filter (also where the forward policy drops) and limits which
// connections reach the pod (ingressPolicy open, same-bridge, isolated).
//
// The rules live in internal/nft (FirewallTable): a static nftables table,
// and per pod only set elements tagged with the attachment, so ADD and DEL
// are one netlink transaction each, in process. See README.md for the
// configuration and the behaviour.
package firewall
