package hostlocal

import (
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// WireRoute is a route as IPAM configurations write it (ipam.routes[]).
// It is shared with the static IPAM plugin.
type WireRoute struct {
	Dst      string `json:"dst"`
	GW       string `json:"gw,omitempty"`
	MTU      int    `json:"mtu,omitempty"`
	AdvMSS   int    `json:"advmss,omitempty"`
	Priority int    `json:"priority,omitempty"`
	Table    *int   `json:"table,omitempty"`
	Scope    *int   `json:"scope,omitempty"`
}

// Route is a validated route. GW is the zero Addr when the route uses the
// gateway of its family (chosen by the interface plugin).
type Route struct {
	Dst      netip.Prefix
	GW       netip.Addr
	MTU      int
	AdvMSS   int
	Priority int
	Table    *int
	Scope    *int
}

// ParseRoutes validates routes, recording problems under field
// ("ipam.routes"). A destination with host bits set is accepted and masked
// (documented examples use "3ffe:ffff:0:01ff::1/64").
func ParseRoutes(fe *pluginmain.FieldErrors, field string, in []WireRoute) []Route {
	var out []Route
	for i, w := range in {
		f := pluginmain.Idx(field, i)
		n := fe.Len()
		var r Route
		if w.Dst == "" {
			fe.Add(f+".dst", "missing (a CIDR such as 0.0.0.0/0)")
		} else if p, err := netip.ParsePrefix(w.Dst); err != nil {
			fe.Add(f+".dst", "%q is not a CIDR", w.Dst)
		} else if p.Addr().Is4In6() {
			fe.Add(f+".dst", "%q is an IPv4-mapped IPv6 prefix; write the IPv4 form", w.Dst)
		} else {
			r.Dst = p.Masked()
		}
		if w.GW != "" {
			a, err := netip.ParseAddr(w.GW)
			switch {
			case err != nil || a.Zone() != "":
				fe.Add(f+".gw", "%q is not an IP address", w.GW)
			case r.Dst.IsValid() && a.Unmap().Is4() != r.Dst.Addr().Is4():
				fe.Add(f+".gw", "%s is %s but dst %s is %s", a, family(a.Unmap()), r.Dst, family(r.Dst.Addr()))
			default:
				r.GW = a.Unmap()
			}
		}
		if w.MTU < 0 {
			fe.Add(f+".mtu", "%d is negative", w.MTU)
		}
		if w.AdvMSS < 0 {
			fe.Add(f+".advmss", "%d is negative", w.AdvMSS)
		}
		if w.Priority < 0 {
			fe.Add(f+".priority", "%d is negative", w.Priority)
		}
		if w.Table != nil && *w.Table < 0 {
			fe.Add(f+".table", "%d is negative", *w.Table)
		}
		if w.Scope != nil && (*w.Scope < 0 || *w.Scope > 255) {
			fe.Add(f+".scope", "%d is outside 0..255", *w.Scope)
		}
		if fe.Len() != n {
			continue
		}
		r.MTU, r.AdvMSS, r.Priority, r.Table, r.Scope = w.MTU, w.AdvMSS, w.Priority, w.Table, w.Scope
		out = append(out, r)
	}
	return out
}

// CNI converts the route to the result type.
func (r Route) CNI() *types.Route {
	out := &types.Route{
		Dst:      net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())},
		MTU:      r.MTU,
		AdvMSS:   r.AdvMSS,
		Priority: r.Priority,
		Table:    r.Table,
		Scope:    r.Scope,
	}
	if r.GW.IsValid() {
		out.GW = r.GW.AsSlice()
	}
	return out
}
