// Package ipcfg applies a CNI result to an interface (addresses, link up,
// routes) and validates an interface against a result for CHECK. Every main
// plugin uses it, so the rules live in one place:
//
//   - an IP belongs to the interface when its "interface" index names it;
//   - a route without a gateway uses the first gateway of its family among
//     those IPs, or none (a device route);
//   - IPv6 addresses are added with NODAD unless DAD is wanted, so ADD never
//     waits for duplicate address detection (which costs 1-2 s per pod).
package ipcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/sysctl"
)

// Options tune Configure.
type Options struct {
	// DAD keeps duplicate address detection on for IPv6 addresses.
	DAD bool
	// SkipRoutes leaves the result's routes out (the caller adds its own).
	SkipRoutes bool
}

// IPsFor returns the result IPs assigned to the interface named ifName in
// res (by the "interface" index), or all IPs without an index when no
// interface in res has that name.
func IPsFor(res *current.Result, ifName string) []*current.IPConfig {
	idx := sandboxIndex(res, ifName)
	var out []*current.IPConfig
	for _, ip := range res.IPs {
		if ip == nil {
			continue
		}
		if ip.Interface == nil {
			if idx < 0 {
				out = append(out, ip)
			}
			continue
		}
		if *ip.Interface == idx {
			out = append(out, ip)
		}
	}
	return out
}

// SandboxInterface returns the interface of res named ifName inside the
// sandbox (the first, should res list it twice), or nil.
func SandboxInterface(res *current.Result, ifName string) *current.Interface {
	if i := sandboxIndex(res, ifName); i >= 0 {
		return res.Interfaces[i]
	}
	return nil
}

func sandboxIndex(res *current.Result, ifName string) int {
	for i, in := range res.Interfaces {
		if in != nil && in.Name == ifName && in.Sandbox != "" {
			return i
		}
	}
	return -1
}

// Configure assigns ips and the result's routes to link, which lives in the
// namespace ns reached through the handle h, and sets it up.
func Configure(h *netlink.Handle, ns *netns.NS, link netlink.Link, ips []*current.IPConfig, routes []*types.Route, opt Options) error {
	name := link.Attrs().Name
	hasV6 := false
	for _, ip := range ips {
		if ip.Address.IP.To4() == nil {
			hasV6 = true
		}
	}
	if hasV6 {
		// A namespace may start with IPv6 disabled on new links; turn it on
		// for this interface only, and keep addresses across link down.
		if err := ns.Do(func() error {
			for _, kv := range [][2]string{
				{sysctl.Link("ipv6", name, "disable_ipv6"), "0"},
				{sysctl.Link("ipv6", name, "keep_addr_on_down"), "1"},
			} {
				if err := sysctl.Ensure(kv[0], kv[1]); err != nil && !errors.Is(err, unix.ENOENT) {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("enable IPv6 on %q: %w", name, err)
		}
	}
	for _, ip := range ips {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.Address.IP, Mask: ip.Address.Mask}}
		if ip.Address.IP.To4() == nil && !opt.DAD {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add address %s to %q: %w", ip.Address.String(), name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %q up: %w", name, err)
	}
	if opt.SkipRoutes {
		return nil
	}
	for _, r := range routes {
		nr := RouteFor(link.Attrs().Index, ips, r)
		if err := h.RouteAdd(nr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add route %s via %v dev %q: %w", r.Dst.String(), nr.Gw, name, err)
		}
	}
	return nil
}

// RouteFor builds the kernel route for a result route on the link with the
// given index, taking the gateway default from ips.
func RouteFor(linkIndex int, ips []*current.IPConfig, r *types.Route) *netlink.Route {
	dst := r.Dst
	gw := r.GW
	v4 := dst.IP.To4() != nil
	if gw == nil {
		for _, ip := range ips {
			if ip.Gateway != nil && (ip.Gateway.To4() != nil) == v4 {
				gw = ip.Gateway
				break
			}
		}
	}
	nr := &netlink.Route{LinkIndex: linkIndex, Dst: &net.IPNet{IP: dst.IP, Mask: dst.Mask}, Gw: gw, MTU: r.MTU, AdvMSS: r.AdvMSS, Priority: r.Priority}
	if gw == nil {
		nr.Scope = netlink.SCOPE_LINK
	}
	if r.Table != nil {
		nr.Table = *r.Table
	}
	if r.Scope != nil {
		nr.Scope = netlink.Scope(*r.Scope)
	}
	return nr
}

// Prefix converts a result address to netip.
func Prefix(n net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	a = a.Unmap()
	if a.Is4() && ones > 32 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones)
}

// RoutedAddrs returns the distinct addresses of ips, in order, without
// invalid and link-local unicast ones: the addresses traffic is routed,
// forwarded or filtered by (a link-local address never leaves its link).
func RoutedAddrs(ips []*current.IPConfig) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if ip == nil {
			continue
		}
		a := Prefix(ip.Address).Addr()
		if !a.IsValid() || a.IsLinkLocalUnicast() || seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, a)
	}
	return out
}
