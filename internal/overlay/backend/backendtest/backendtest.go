// Package backendtest builds small simulated clusters for the overlay
// backends' tests: "hosts" as network namespaces whose eth0 hangs on one
// bridge (the underlay switch, 192.0.2.0/24 and 2001:db8::/64) in a
// namespace of its own, and per host a "pod" namespace with an address in
// the host's subnet (10.5.<n>.2/24, 2001:db8:5:<n>::2/64) behind a veth whose
// host end is the subnet's gateway. Traffic between pods of different hosts
// crosses the data plane a backend programmed.
//
// Everything happens inside namespaces the test created (nstest.New); every
// wait is bounded.
package backendtest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

// Cluster is a switch namespace and the hosts on it.
type Cluster struct {
	Switch *netns.NS
	Hosts  []*Host
	IPv6   bool
	t      testing.TB
}

// Host is one simulated node.
type Host struct {
	N       int       // 1, 2, ...
	NS      *netns.NS // the host's namespace (the backend runs here)
	Pod     *netns.NS // nil when the host has no pod
	H       *netlink.Handle
	Ext     dataplane.ExternalInterface
	Subnet  netip.Prefix // 10.5.<n>.0/24
	Subnet6 netip.Prefix // 2001:db8:5:<n>::/64 (IPv6 clusters)
	PodIP   netip.Addr
	PodIP6  netip.Addr
}

// Network is the cluster network the hosts' subnets are in.
var (
	Network     = netip.MustParsePrefix("10.5.0.0/16")
	IPv6Network = netip.MustParsePrefix("2001:db8:5::/48")
)

// NetConfig is a network configuration for the cluster with the given
// Backend object.
func (c *Cluster) NetConfig(backendType, backendJSON string) *subnet.Config {
	cfg := &subnet.Config{Network: Network, SubnetLen: 24, EnableIPv4: true, BackendType: backendType,
		Backend: []byte(backendJSON)}
	if c.IPv6 {
		cfg.EnableIPv6, cfg.IPv6Network, cfg.IPv6SubnetLen = true, IPv6Network, 64
	}
	return cfg
}

// New builds a cluster of n hosts, each with a pod. It skips the test when
// not root.
func New(t testing.TB, n int, ipv6 bool) *Cluster {
	t.Helper()
	nstest.RequireRoot(t)
	c := &Cluster{Switch: nstest.New(t), IPv6: ipv6, t: t}
	nfttest.Bridge(t, c.Switch, "sw0")
	for i := 0; i < n; i++ {
		c.AddHost(true)
	}
	return c
}

// AddHost adds a host (with a pod when withPod) and returns it.
func (c *Cluster) AddHost(withPod bool) *Host {
	t := c.t
	t.Helper()
	n := len(c.Hosts) + 1
	h := &Host{N: n, NS: nstest.New(t)}
	h.H = nfttest.Handle(t, h.NS)
	port := fmt.Sprintf("swp%d", n)
	nfttest.Veth(t, h.NS, "eth0", c.Switch, port)
	nfttest.Enslave(t, c.Switch, port, "sw0")
	nfttest.Forwarding(t, h.NS)
	h.Ext = dataplane.ExternalInterface{Name: "eth0", MTU: 1500,
		IfaceAddr: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + n)})}
	h.Ext.ExtAddr = h.Ext.IfaceAddr
	nfttest.Addr(t, h.NS, "eth0", h.Ext.IfaceAddr.String()+"/24")
	h.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(n), 0}), 24)
	if c.IPv6 {
		h.Ext.IfaceAddr6 = netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", 10+n))
		h.Ext.ExtAddr6 = h.Ext.IfaceAddr6
		nfttest.Addr(t, h.NS, "eth0", h.Ext.IfaceAddr6.String()+"/64")
		h.Subnet6 = netip.MustParsePrefix(fmt.Sprintf("2001:db8:5:%d::/64", n))
	}
	l, err := h.H.LinkByName("eth0")
	if err != nil {
		t.Fatalf("host %d: %v", n, err)
	}
	h.Ext.Index = l.Attrs().Index
	if withPod {
		h.Pod = nstest.New(t)
		nfttest.Veth(t, h.NS, "vpod", h.Pod, "eth0")
		gw := h.Subnet.Addr().Next()
		h.PodIP = gw.Next()
		nfttest.Addr(t, h.NS, "vpod", netip.PrefixFrom(gw, 24).String())
		nfttest.Addr(t, h.Pod, "eth0", netip.PrefixFrom(h.PodIP, 24).String())
		nfttest.Route(t, h.Pod, "default4", gw.String())
		if c.IPv6 {
			gw6 := h.Subnet6.Addr().Next()
			h.PodIP6 = gw6.Next()
			nfttest.Addr(t, h.NS, "vpod", netip.PrefixFrom(gw6, 64).String())
			nfttest.Addr(t, h.Pod, "eth0", netip.PrefixFrom(h.PodIP6, 64).String())
			nfttest.Route(t, h.Pod, "default6", gw6.String())
		}
	}
	c.Hosts = append(c.Hosts, h)
	return h
}

// Lease is the host's lease with the attributes its backend published.
func (h *Host) Lease(attrs subnet.LeaseAttrs) subnet.Lease {
	l := subnet.Lease{Subnet: h.Subnet, IPv6Subnet: h.Subnet6, Attrs: attrs}
	if !l.Attrs.PublicIP.IsValid() {
		l.Attrs.PublicIP = h.Ext.ExtAddr
	}
	if h.Subnet6.IsValid() && !l.Attrs.PublicIPv6.IsValid() {
		l.Attrs.PublicIPv6 = h.Ext.ExtAddr6
	}
	return l
}

// Exec runs a program from a thread inside ns and returns its output.
func Exec(ns *netns.NS, timeout time.Duration, name string, args ...string) (string, error) {
	var out []byte
	var rerr error
	err := ns.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out, rerr = exec.CommandContext(ctx, name, args...).CombinedOutput()
		return nil
	})
	if err != nil {
		return "", err
	}
	if rerr != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), rerr, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Ping sends up to three echo requests from ns to addr (answered within
// 4 s in all) and reports whether one was answered.
func Ping(ns *netns.NS, addr netip.Addr) error {
	_, err := Exec(ns, 10*time.Second, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-w", "4", "-q", addr.String())
	return err
}

// PingOnce sends one echo request (1 s timeout): for checks that traffic
// does NOT pass.
func PingOnce(ns *netns.NS, addr netip.Addr) error {
	_, err := Exec(ns, 5*time.Second, "ping", "-n", "-c", "1", "-W", "1", "-q", addr.String())
	return err
}

// Eventually polls cond every 50 ms until it returns nil or limit passes
// (then it returns cond's last error).
func Eventually(limit time.Duration, cond func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Link returns the named link of the host, or nil when it does not exist.
func (h *Host) Link(name string) netlink.Link {
	l, err := h.H.LinkByName(name)
	if err != nil {
		return nil
	}
	return l
}

// MAC parses a MAC address (tests).
func MAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// Dump renders the host's routing-relevant kernel state (links, addresses,
// main-table routes, permanent neighbour entries, FDB entries) for
// before/after comparisons; the kernel's dynamic neighbour entries, whose
// state moves on its own, are left out.
func (h *Host) Dump() (string, error) {
	var b strings.Builder
	links, err := h.H.LinkList()
	if err != nil {
		return "", err
	}
	for _, l := range links {
		a := l.Attrs()
		fmt.Fprintf(&b, "link %d %s %s mtu %d %s %s\n", a.Index, a.Name, l.Type(), a.MTU, a.HardwareAddr, a.Flags)
		addrs, err := h.H.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return "", err
		}
		for _, ad := range addrs {
			fmt.Fprintf(&b, "addr %s dev %s\n", ad.IPNet, a.Name)
		}
	}
	routes, err := h.H.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return "", err
	}
	for _, r := range routes {
		fmt.Fprintf(&b, "route %s via %s dev %d proto %d flags %d\n", r.Dst, r.Gw, r.LinkIndex, r.Protocol, r.Flags)
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6, 7 /* AF_BRIDGE */} {
		ns, err := h.H.NeighList(0, fam)
		if err != nil {
			return "", err
		}
		for _, n := range ns {
			if n.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			fmt.Fprintf(&b, "neigh %d %s %s dev %d state %#x flags %#x\n", fam, n.IP, n.HardwareAddr, n.LinkIndex, n.State, n.Flags)
		}
	}
	return b.String(), nil
}
