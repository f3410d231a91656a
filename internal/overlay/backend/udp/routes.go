package udp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

// BackendType is the lower-cased Backend.Type this package implements.
const BackendType = "udp"

// Route is one entry of the userspace forwarding table: inner packets for
// Subnet go, as UDP payload, to Peer (the lease's PublicIP, the configured
// port).
type Route struct {
	Subnet netip.Prefix
	Peer   netip.AddrPort
}

// Params are the inputs of Desired besides the leases.
type Params struct {
	Network   netip.Prefix
	Port      int
	Own       netip.Prefix // this node's subnet (invalid before Configure)
	OwnPublic netip.Addr   // this node's public IP
}

// Desired computes the forwarding table for the lease set: one route per
// remote udp lease. Leases of other backend types, the own lease and leases
// of this node's public IP are skipped; a lease without an IPv4 public IP,
// outside the network, or overlapping a lease that sorts before it yields an
// error naming it (and no route). The result is sorted by subnet.
func Desired(p Params, leases []subnet.Lease) ([]Route, []error) {
	var routes []Route
	var errs []error
	for _, l := range dataplane.SortedLeases(leases) {
		if l.Attrs.BackendType != BackendType || !l.Subnet.IsValid() {
			continue
		}
		sn := l.Subnet.Masked()
		if (p.Own.IsValid() && sn == p.Own.Masked()) || (p.OwnPublic.IsValid() && l.Attrs.PublicIP == p.OwnPublic) {
			continue
		}
		bad := func(format string, args ...any) {
			errs = append(errs, &dataplane.LeaseError{Key: l.Key(), Err: fmt.Errorf(format, args...)})
		}
		switch {
		case !l.Attrs.PublicIP.Is4():
			bad("no IPv4 PublicIP")
			continue
		case p.Network.IsValid() && (sn.Bits() < p.Network.Bits() || !p.Network.Contains(sn.Addr())):
			bad("subnet %s is outside the network %s", sn, p.Network)
			continue
		}
		if i := slices.IndexFunc(routes, func(r Route) bool { return r.Subnet.Overlaps(sn) }); i >= 0 {
			bad("subnet %s overlaps %s", sn, routes[i].Subnet)
			continue
		}
		routes = append(routes, Route{Subnet: sn, Peer: netip.AddrPortFrom(l.Attrs.PublicIP, uint16(p.Port))})
	}
	return routes, errs
}

// Render prints routes one a line ("10.5.2.0/24 -> 192.0.2.12:8285").
func Render(routes []Route) string {
	var b strings.Builder
	for _, r := range routes {
		fmt.Fprintf(&b, "%s -> %s\n", r.Subnet, r.Peer)
	}
	return b.String()
}

// table is the data path's immutable lookup structure, swapped atomically
// on every Sync: a map per prefix length, longest first (flannel's leases
// all have one length, so a lookup is one mask and one map access).
type table struct {
	bits []int
	m    map[netip.Prefix]netip.AddrPort
}

func newTable(routes []Route) *table {
	t := &table{m: make(map[netip.Prefix]netip.AddrPort, len(routes))}
	for _, r := range routes {
		t.m[r.Subnet] = r.Peer
		if !slices.Contains(t.bits, r.Subnet.Bits()) {
			t.bits = append(t.bits, r.Subnet.Bits())
		}
	}
	slices.SortFunc(t.bits, func(a, b int) int { return b - a })
	return t
}

// lookup returns the peer for an IPv4 destination and the matching subnet.
func (t *table) lookup(dst netip.Addr) (netip.AddrPort, netip.Prefix, bool) {
	for _, b := range t.bits {
		p, _ := dst.Prefix(b)
		if peer, ok := t.m[p]; ok {
			return peer, p, true
		}
	}
	return netip.AddrPort{}, netip.Prefix{}, false
}

func (t *table) len() int { return len(t.m) }
