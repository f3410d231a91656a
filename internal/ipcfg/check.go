package ipcfg

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

// Check verifies that link carries every address in ips and every route in
// routes (with the gateway RouteFor would choose). Extra state is allowed:
// later plugins in a chain may add to the interface.
func Check(h *netlink.Handle, link netlink.Link, ips []*current.IPConfig, routes []*types.Route) error {
	name := link.Attrs().Name
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %q: %w", name, err)
	}
	for _, ip := range ips {
		found := false
		for _, a := range addrs {
			if a.IP.Equal(ip.Address.IP) && a.Mask.String() == ip.Address.Mask.String() {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("interface %q: address %s is missing", name, ip.Address.String())
		}
	}
	if len(routes) == 0 {
		return nil
	}
	have, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: link.Attrs().Index, Table: 0}, netlink.RT_FILTER_OIF)
	if err != nil {
		return fmt.Errorf("list routes of %q: %w", name, err)
	}
	for _, r := range routes {
		want := RouteFor(link.Attrs().Index, ips, r)
		if !hasRoute(have, want) {
			return fmt.Errorf("interface %q: route %s via %v is missing", name, r.Dst.String(), want.Gw)
		}
	}
	return nil
}

func hasRoute(have []netlink.Route, want *netlink.Route) bool {
	for _, r := range have {
		if !sameDst(r.Dst, want.Dst) {
			continue
		}
		if want.Gw != nil && !want.Gw.IsUnspecified() && !want.Gw.Equal(r.Gw) { // gw 0.0.0.0: on the link
			continue
		}
		if want.Table != 0 && r.Table != want.Table {
			continue
		}
		return true
	}
	return false
}

func sameDst(a, b *net.IPNet) bool {
	isDefault := func(n *net.IPNet) bool {
		if n == nil {
			return true
		}
		ones, _ := n.Mask.Size()
		return ones == 0 && n.IP.IsUnspecified()
	}
	if isDefault(a) || isDefault(b) {
		if !(isDefault(a) && isDefault(b)) {
			return false
		}
		// The kernel reports a default route without its family; the
		// caller listed routes of this link only, so a family mismatch
		// would show as a missing route of the other family elsewhere.
		if a != nil && b != nil {
			return (a.IP.To4() != nil) == (b.IP.To4() != nil)
		}
		return true
	}
	return a.IP.Equal(b.IP) && a.Mask.String() == b.Mask.String()
}
