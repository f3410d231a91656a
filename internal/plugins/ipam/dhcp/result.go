package dhcp

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/plugins/ipam/dhcp/dhcp4"
)

// linkScope is RT_SCOPE_LINK, set on routes to destinations the server
// says are on the link.
const linkScope = 253

// BuildResult turns a lease into the IPAM result:
//
//   - the address with the subnet mask (option 1; the address class's mask
//     when the server sends none) and the first router (option 3) as
//     gateway;
//   - routes: the classless static routes (option 121) when present,
//     which then replace the router and static-route options as RFC 3442
//     requires; otherwise the static routes (option 33) and a default
//     route via the first router. A classless route whose router is
//     0.0.0.0 is on the link: it gets gateway 0.0.0.0 and link scope;
//   - DNS from options 6 (servers), 15 (domain) and 119 (search list).
//
// priority, when positive, becomes every route's metric. Malformed options
// are errors naming the option: a lease the plugin cannot read is not
// silently reduced.
func BuildResult(l *WireLease, priority int) (*current.Result, error) {
	addr, err := leaseAddr(l)
	if err != nil {
		return nil, err
	}
	opts := fromWire(l.Options)
	bits := dhcp4.ClassBits(addr)
	if m := opts.Get(dhcp4.OptSubnetMask); m != nil {
		if bits, err = dhcp4.MaskBits(m); err != nil {
			return nil, fmt.Errorf("lease %s: option %s: %w", addr, codeName(dhcp4.OptSubnetMask), err)
		}
	}
	ipc := &current.IPConfig{Address: net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(bits, 32)}}
	var routers []netip.Addr
	if opts.Has(dhcp4.OptRouter) {
		rs, ok := opts.Addrs(dhcp4.OptRouter)
		if !ok {
			return nil, fmt.Errorf("lease %s: option %s: length %d is not a multiple of 4", addr, codeName(dhcp4.OptRouter), len(opts.Get(dhcp4.OptRouter)))
		}
		routers = rs
	}
	if len(routers) > 0 {
		ipc.Gateway = routers[0].AsSlice()
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, IPs: []*current.IPConfig{ipc}}

	route := func(dst netip.Prefix, gw netip.Addr) *types.Route {
		r := &types.Route{Dst: net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)}, GW: gw.AsSlice()}
		if gw.IsUnspecified() {
			scope := linkScope
			r.Scope = &scope
		}
		if priority > 0 {
			r.Priority = priority
		}
		return r
	}
	if b := opts.Get(dhcp4.OptClasslessRoutes); opts.Has(dhcp4.OptClasslessRoutes) {
		rs, err := dhcp4.ParseClasslessRoutes(b)
		if err != nil {
			return nil, fmt.Errorf("lease %s: option %s: %w", addr, codeName(dhcp4.OptClasslessRoutes), err)
		}
		for _, r := range rs {
			res.Routes = append(res.Routes, route(r.Dst, r.Router))
		}
	} else {
		if b := opts.Get(dhcp4.OptStaticRoutes); opts.Has(dhcp4.OptStaticRoutes) {
			rs, err := dhcp4.ParseStaticRoutes(b)
			if err != nil {
				return nil, fmt.Errorf("lease %s: option %s: %w", addr, codeName(dhcp4.OptStaticRoutes), err)
			}
			for _, r := range rs {
				res.Routes = append(res.Routes, route(r.Dst, r.Router))
			}
		}
		if len(routers) > 0 {
			res.Routes = append(res.Routes, route(netip.PrefixFrom(netip.IPv4Unspecified(), 0), routers[0]))
		}
	}

	if opts.Has(dhcp4.OptDNS) {
		ns, ok := opts.Addrs(dhcp4.OptDNS)
		if !ok {
			return nil, fmt.Errorf("lease %s: option %s: length %d is not a multiple of 4", addr, codeName(dhcp4.OptDNS), len(opts.Get(dhcp4.OptDNS)))
		}
		for _, a := range ns {
			res.DNS.Nameservers = append(res.DNS.Nameservers, a.String())
		}
	}
	if d := opts.Get(dhcp4.OptDomainName); len(d) > 0 {
		res.DNS.Domain = trimNUL(string(d))
	}
	if opts.Has(dhcp4.OptDomainSearch) {
		s, err := dhcp4.ParseDomainSearch(opts.Get(dhcp4.OptDomainSearch))
		if err != nil {
			return nil, fmt.Errorf("lease %s: option %s: %w", addr, codeName(dhcp4.OptDomainSearch), err)
		}
		res.DNS.Search = s
	}
	return res, nil
}

// trimNUL drops the NUL padding some servers append to text options.
func trimNUL(s string) string {
	for len(s) > 0 && s[len(s)-1] == 0 {
		s = s[:len(s)-1]
	}
	return s
}
