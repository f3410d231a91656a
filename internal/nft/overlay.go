package nft

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The overlay daemon's rules (`linen daemon --ip-masq`): flannel's
// masquerade policy, in a table of its own that the daemon replaces whole
// in one transaction whenever the node's lease changes:
//
//	table inet linen_overlay {
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			meta mark & 0x00004000 == 0x00004000 return   # kube-proxy already masquerades it
//			ip saddr <podCIDR> ip daddr <Network> return    # pod to pod: keep the source
//			ip saddr <Network> ip daddr <podCIDR> return
//			ip saddr != <Network> ip daddr <podCIDR> return # outside to a local pod: keep the source
//			ip saddr <Network> ip daddr != 224.0.0.0/4 masquerade fully-random  # pod to outside
//			ip saddr != <Network> ip daddr <Network> masquerade fully-random     # node to a remote pod
//		}
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			ip saddr <Network> accept
//			ip daddr <Network> accept
//		}
//	}
//
// (and the same with ip6 for the IPv6 network). The rules are per node, not
// per pod: nothing here changes when pods come and go.

// OverlayTable is the name of the daemon's table.
const OverlayTable = "linen_overlay"

// OverlayNet is one address family's pair: the cluster network and the
// node's pod subnet.
type OverlayNet struct {
	Network netip.Prefix
	Subnet  netip.Prefix
}

// kubeMasqMark is kube-proxy's masquerade mark bit.
const kubeMasqMark = 0x4000

// SetOverlayRules replaces the overlay table with rules for nets (one entry
// per enabled family) in one transaction. masq false installs only the
// forward rules.
func SetOverlayRules(c *Conn, nets []OverlayNet, masq bool) error {
	n := c.NFT()
	t := &nftables.Table{Name: OverlayTable, Family: nftables.TableFamilyINet}
	// Add-then-delete-then-add: the table is replaced whether or not it
	// existed, atomically.
	n.AddTable(t)
	n.DelTable(t)
	n.AddTable(t)
	accept := nftables.ChainPolicyAccept
	fwd := n.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	var post *nftables.Chain
	if masq {
		post = n.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
		n.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(kubeMasqMark), Xor: binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(kubeMasqMark)},
			&expr.Verdict{Kind: expr.VerdictReturn},
		}})
	}
	for _, on := range nets {
		if !on.Network.IsValid() {
			continue
		}
		v4 := on.Network.Addr().Is4()
		if on.Subnet.IsValid() && on.Subnet.Addr().Is4() != v4 {
			return fmt.Errorf("overlay rules: subnet %s and network %s differ in family", on.Subnet, on.Network)
		}
		n.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: rule(v4, match{src, on.Network, true}, verdict(expr.VerdictAccept))})
		n.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: rule(v4, match{dst, on.Network, true}, verdict(expr.VerdictAccept))})
		if !masq {
			continue
		}
		multicast := netip.MustParsePrefix("224.0.0.0/4")
		if !v4 {
			multicast = netip.MustParsePrefix("ff00::/8")
		}
		ret := verdict(expr.VerdictReturn)
		if on.Subnet.IsValid() {
			n.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: rule(v4, match{src, on.Subnet, true}, match{dst, on.Network, true}, ret)})
			n.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: rule(v4, match{src, on.Network, true}, match{dst, on.Subnet, true}, ret)})
			n.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: rule(v4, match{src, on.Network, false}, match{dst, on.Subnet, true}, ret)})
		}
		masquerade := []expr.Any{&expr.Masq{FullyRandom: true}}
		n.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: rule(v4, match{src, on.Network, true}, match{dst, multicast, false}, masquerade)})
		n.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: rule(v4, match{src, on.Network, false}, match{dst, on.Network, true}, masquerade)})
	}
	if err := n.Flush(); err != nil {
		return fmt.Errorf("replace table inet %s: %w", OverlayTable, err)
	}
	return nil
}

// DeleteOverlayRules removes the overlay table (nothing to remove is fine).
func DeleteOverlayRules(c *Conn) error {
	n := c.NFT()
	t := &nftables.Table{Name: OverlayTable, Family: nftables.TableFamilyINet}
	n.AddTable(t)
	n.DelTable(t)
	if err := n.Flush(); err != nil {
		return fmt.Errorf("delete table inet %s: %w", OverlayTable, err)
	}
	c.deleted = true
	return nil
}

type dir int

const (
	src dir = iota
	dst
)

// match is "ip saddr|daddr [!=] prefix".
type match struct {
	d  dir
	p  netip.Prefix
	eq bool
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// rule builds `meta nfproto ipv4|ipv6 <matches...> <tail>`.
func rule(v4 bool, parts ...any) []expr.Any {
	proto := byte(unix.NFPROTO_IPV4)
	if !v4 {
		proto = unix.NFPROTO_IPV6
	}
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	for _, p := range parts {
		switch p := p.(type) {
		case match:
			out = append(out, prefixMatch(v4, p)...)
		case []expr.Any:
			out = append(out, p...)
		}
	}
	return out
}

func prefixMatch(v4 bool, m match) []expr.Any {
	off, n := uint32(12), uint32(4)
	if !v4 {
		off, n = 8, 16
	}
	if m.d == dst {
		off += n
	}
	p := m.p.Masked()
	mask := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	op := expr.CmpOpEq
	if !m.eq {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Addr().AsSlice()},
	}
}
