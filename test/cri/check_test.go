package cri

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/plugins/plugintest"
)

// podView is what the pod's own namespace holds.
type podView struct {
	Addrs  []netip.Prefix // of eth0, IPv4
	MTU    int            // of eth0
	LoUp   bool
	Routes map[string]string // IPv4 destination -> gateway ("" for none)
}

// inspectPod enters the pod's namespace (by the path CRI reported) and
// reads eth0's addresses and MTU, lo's state and the IPv4 routes.
func inspectPod(t *testing.T, path string) podView {
	t.Helper()
	ns, err := netns.Open(path)
	if err != nil {
		t.Fatalf("open pod netns %s: %v", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var v podView
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatalf("pod netns %s: eth0: %v", path, err)
	}
	v.MTU = eth0.Attrs().MTU
	addrs, err := h.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		v.Addrs = append(v.Addrs, netip.PrefixFrom(ip, ones))
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		v.LoUp = lo.Attrs().Flags&net.FlagUp != 0
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	v.Routes = map[string]string{}
	for _, r := range routes {
		dst := "0.0.0.0/0"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		gw := ""
		if r.Gw != nil {
			gw = r.Gw.String()
		}
		v.Routes[dst] = gw
	}
	return v
}

// bridgePorts lists the interfaces enslaved to bridge in ns.
func bridgePorts(t *testing.T, ns *netns.NS, bridge string) []string {
	t.Helper()
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br, err := h.LinkByName(bridge)
	if err != nil {
		t.Fatalf("bridge %s: %v", bridge, err)
	}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports
}

// veths lists the veth interfaces in ns, except the ones named in keep.
func veths(t *testing.T, ns *netns.NS, keep ...string) []string {
	t.Helper()
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Type() == "veth" && !slices.Contains(keep, l.Attrs().Name) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// ruleset is `nft list ruleset` inside ns.
func ruleset(t *testing.T, ns *netns.NS) string {
	t.Helper()
	out, err := plugintest.Exec(ns, 20*time.Second, "nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// leases lists host-local's reservations in dir (one file per address);
// the lock, last_reserved_ip.N and dot files (linen's index) are not leases.
func leases(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if e.Name() == "lock" || strings.HasPrefix(e.Name(), "last_reserved_ip.") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		out[e.Name()] = strings.TrimSpace(string(b))
	}
	return out
}

// released checks that nothing of the sandboxes ids is left: no lease in
// leaseDir, no port of bridge in host, no veth in host (but keep), no
// nftables element, no pod namespace under containerd's state, no task
// bundle, no libcni cache entry, no sandbox in CRI, no pod cgroup.
func released(t *testing.T, c *containerd, host *netns.NS, bridge, leaseDir string, ids []string, keep ...string) {
	t.Helper()
	if l := leases(t, leaseDir); len(l) > 0 {
		t.Errorf("leases left in %s: %v", leaseDir, l)
	}
	if p := bridgePorts(t, host, bridge); len(p) > 0 {
		t.Errorf("ports left on %s: %v", bridge, p)
	}
	if v := veths(t, host, keep...); len(v) > 0 {
		t.Errorf("veths left in the host namespace: %v", v)
	}
	rs := ruleset(t, host)
	if strings.Contains(rs, "elements = {") {
		t.Errorf("nftables elements left in the host namespace:\n%s", rs)
	}
	for _, id := range ids {
		if strings.Contains(rs, "id="+id) {
			t.Errorf("nftables still names sandbox %s", id)
		}
	}
	if ents, _ := os.ReadDir(c.netnsDir()); len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("pod namespaces left under %s: %v", c.netnsDir(), names)
	}
	if b, _ := filepath.Glob(filepath.Join(c.stateDir(), "io.containerd.runtime.v2.task", criNamespace, "*")); len(b) > 0 {
		t.Errorf("task bundles left: %v", b)
	}
	cache, _ := os.ReadDir(cniCacheDir)
	for _, e := range cache {
		for _, id := range ids {
			if strings.Contains(e.Name(), id) {
				t.Errorf("libcni cache entry left: %s", filepath.Join(cniCacheDir, e.Name()))
			}
		}
	}
	left, err := c.sandboxes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if slices.Contains(left, id) {
			t.Errorf("CRI still lists sandbox %s", id)
		}
		if cg := podCgroups(c, id); len(cg) > 0 {
			t.Errorf("cgroups left: %v", cg)
		}
	}
}

// podCgroups lists the cgroup directories of sandbox id (cgroup v2 and the
// v1 memory and pids controllers).
func podCgroups(c *containerd, id string) []string {
	var out []string
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"} {
		p := filepath.Join(root, cgroupParent(c.name), id)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}
