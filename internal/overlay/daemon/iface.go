package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/overlay/backend"
)

// IfaceOptions choose the external interface, as flanneld's flags do.
type IfaceOptions struct {
	Ifaces     []string // --iface: names or addresses, tried in order
	Regexes    []string // --iface-regex: matched against names, then addresses
	PublicIP   string   // --public-ip
	PublicIPv6 string   // --public-ipv6
	IPv4, IPv6 bool     // families the network uses
}

// SelectInterface finds the external interface in the namespace of h: the
// first --iface that resolves, else the first link matching a --iface-regex,
// else the link of the default route.
func SelectInterface(h *netlink.Handle, o IfaceOptions) (backend.ExternalInterface, error) {
	var none backend.ExternalInterface
	links, err := h.LinkList()
	if err != nil {
		return none, fmt.Errorf("list links: %w", err)
	}
	addrsOf := func(l netlink.Link) []netip.Addr {
		as, _ := h.AddrList(l, netlink.FAMILY_ALL)
		var out []netip.Addr
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
		return out
	}
	var chosen netlink.Link
	for _, want := range o.Ifaces {
		if ip, err := netip.ParseAddr(want); err == nil {
			for _, l := range links {
				for _, a := range addrsOf(l) {
					if a == ip {
						chosen = l
					}
				}
				if chosen != nil {
					break
				}
			}
		} else {
			for _, l := range links {
				if l.Attrs().Name == want {
					chosen = l
					break
				}
			}
		}
		if chosen != nil {
			break
		}
	}
	if chosen == nil && len(o.Ifaces) > 0 && len(o.Regexes) == 0 {
		return none, fmt.Errorf("--iface %v: no such interface or address", o.Ifaces)
	}
	for _, expr := range o.Regexes {
		if chosen != nil {
			break
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return none, fmt.Errorf("--iface-regex %q: %w", expr, err)
		}
		for _, l := range links {
			if re.MatchString(l.Attrs().Name) {
				chosen = l
				break
			}
			for _, a := range addrsOf(l) {
				if re.MatchString(a.String()) {
					chosen = l
					break
				}
			}
			if chosen != nil {
				break
			}
		}
	}
	if chosen == nil && (len(o.Ifaces) > 0 || len(o.Regexes) > 0) {
		return none, fmt.Errorf("no interface matches --iface %v / --iface-regex %v", o.Ifaces, o.Regexes)
	}
	if chosen == nil {
		family := netlink.FAMILY_V4
		if !o.IPv4 {
			family = netlink.FAMILY_V6
		}
		routes, err := h.RouteListFiltered(family, &netlink.Route{Dst: nil}, netlink.RT_FILTER_DST)
		if err != nil {
			return none, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.LinkIndex > 0 {
				if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
					chosen = l
					break
				}
			}
		}
		if chosen == nil {
			return none, errors.New("no default route to pick the external interface from: give --iface")
		}
	}
	ext := backend.ExternalInterface{Name: chosen.Attrs().Name, Index: chosen.Attrs().Index, MTU: chosen.Attrs().MTU}
	for _, a := range addrsOf(chosen) {
		switch {
		case a.Is4() && !ext.IfaceAddr.IsValid() && a.IsGlobalUnicast():
			ext.IfaceAddr = a
		case a.Is6() && !ext.IfaceAddr6.IsValid() && a.IsGlobalUnicast():
			ext.IfaceAddr6 = a
		}
	}
	if o.IPv4 && !ext.IfaceAddr.IsValid() {
		return none, fmt.Errorf("interface %s has no IPv4 address", ext.Name)
	}
	if o.IPv6 && !ext.IfaceAddr6.IsValid() {
		return none, fmt.Errorf("interface %s has no global IPv6 address", ext.Name)
	}
	ext.ExtAddr, ext.ExtAddr6 = ext.IfaceAddr, ext.IfaceAddr6
	if o.PublicIP != "" {
		a, err := netip.ParseAddr(o.PublicIP)
		if err != nil || !a.Is4() {
			return none, fmt.Errorf("--public-ip %q is not an IPv4 address", o.PublicIP)
		}
		ext.ExtAddr = a
	}
	if o.PublicIPv6 != "" {
		a, err := netip.ParseAddr(o.PublicIPv6)
		if err != nil || !a.Is6() {
			return none, fmt.Errorf("--public-ipv6 %q is not an IPv6 address", o.PublicIPv6)
		}
		ext.ExtAddr6 = a
	}
	return ext, nil
}
