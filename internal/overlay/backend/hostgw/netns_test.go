package hostgw

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/overlay/backend/backendtest"
	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-hostgw-") }

type node = backendtest.Node

func newBackend(cfg *subnet.Config, ext dataplane.ExternalInterface, o dataplane.Options) (backendtest.Backend, error) {
	b, err := New(cfg, ext, o)
	if err != nil {
		return nil, err
	}
	return b, nil
}

func start(t testing.TB, c *backendtest.Cluster, h *backendtest.Host, o dataplane.Options) *node {
	t.Helper()
	return backendtest.Start(t, c, h, newBackend, BackendType, `{"Type":"host-gw"}`, o)
}

func setup(t *testing.T, hosts int, ipv6 bool) (*backendtest.Cluster, []*node) {
	c := backendtest.New(t, hosts, ipv6)
	var nodes []*node
	for _, h := range c.Hosts {
		nodes = append(nodes, start(t, c, h, dataplane.Options{}))
	}
	backendtest.SyncAll(t, nodes, backendtest.Leases(nodes...))
	return c, nodes
}

func TestTrafficAndLeaseRemoval(t *testing.T) {
	t.Parallel()
	c, nodes := setup(t, 3, false)
	for _, n := range nodes {
		if err := n.Programmed(); err != nil {
			t.Errorf("host %d: %v", n.Host.N, err)
		}
		if n.B.MTU() != 1500 {
			t.Errorf("MTU = %d, want the underlay's 1500", n.B.MTU())
		}
	}
	c.PingPods(t)

	backendtest.SyncAll(t, nodes[:2], backendtest.Leases(nodes[0], nodes[1]))
	for _, n := range nodes[:2] {
		got, err := n.B.Observe()
		if err != nil {
			t.Fatal(err)
		}
		if s := got.String(); len(got.Routes) != 1 || strings.Contains(s, "10.5.3.0") {
			t.Errorf("host %d: after host 3 left:\n%s", n.Host.N, s)
		}
	}
	if err := backendtest.PingOnce(c.Hosts[0].Pod, c.Hosts[2].PodIP); err == nil {
		t.Error("pod 1 still reaches pod 3 after host 3's lease is gone")
	}
	backendtest.PingPod(t, c.Hosts[1], c.Hosts[0])

	backendtest.SyncAll(t, nodes, backendtest.Leases(nodes...))
	c.PingPods(t)
}

func TestDualStack(t *testing.T) {
	t.Parallel()
	c, nodes := setup(t, 3, true)
	for _, n := range nodes {
		if err := n.Programmed(); err != nil {
			t.Errorf("host %d: %v", n.Host.N, err)
		}
		if got, _ := n.B.Observe(); len(got.Routes) != 4 {
			t.Errorf("host %d: want 2 IPv4 and 2 IPv6 routes:\n%s", n.Host.N, got)
		}
	}
	c.PingPods(t)
}

func TestSyncTwiceChangesNothingAndStaleRoutesGo(t *testing.T) {
	t.Parallel()
	c := backendtest.New(t, 2, false)
	h1 := c.Hosts[0]
	// Left from before a restart: a route of a node that is gone, and one
	// of a node whose address changed. A static route is not linen's.
	for _, r := range []netlink.Route{
		{Dst: ipnet("10.5.77.0/24"), Gw: net.ParseIP("192.0.2.77"), LinkIndex: h1.Ext.Index, Protocol: dataplane.RouteProtocol},
		{Dst: ipnet("10.5.2.0/24"), Gw: net.ParseIP("192.0.2.99"), LinkIndex: h1.Ext.Index, Protocol: dataplane.RouteProtocol},
		{Dst: ipnet("10.7.0.0/16"), Gw: net.ParseIP("192.0.2.1"), LinkIndex: h1.Ext.Index, Protocol: 4 /* static */},
	} {
		if err := h1.H.RouteAdd(&r); err != nil {
			t.Fatalf("plant %s: %v", r.Dst, err)
		}
	}
	nodes := []*node{start(t, c, h1, dataplane.Options{}), start(t, c, c.Hosts[1], dataplane.Options{})}
	backendtest.SyncAll(t, nodes, backendtest.Leases(nodes...))
	got, err := nodes[0].B.Observe()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("route 10.5.2.0/24 via 192.0.2.12 dev eth0\n", got.String()); diff != "" {
		t.Errorf("after the first Sync (-want +got):\n%s", diff)
	}
	if rs, _ := h1.H.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipnet("10.7.0.0/16")}, netlink.RT_FILTER_DST); len(rs) != 1 {
		t.Error("the static route is gone")
	}
	backendtest.PingPod(t, c.Hosts[0], c.Hosts[1])

	before, _ := h1.Dump()
	w := nodes[0].B.Writes()
	nodes[0].Sync(t, backendtest.Leases(nodes[1], nodes[0]))
	nodes[0].Sync(t, backendtest.Leases(nodes...))
	if d := nodes[0].B.Writes() - w; d != 0 {
		t.Errorf("Sync of an unchanged lease set did %d netlink writes", d)
	}
	after, _ := h1.Dump()
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("kernel state changed (-before +after):\n%s", diff)
	}
}

func TestPeerNotOnLink(t *testing.T) {
	t.Parallel()
	c, nodes := setup(t, 2, false)
	h1 := c.Hosts[0]
	// 198.51.100.0/24 is behind a router on the underlay; 203.0.113.0/24
	// is not reachable at all.
	if err := h1.H.RouteAdd(&netlink.Route{Dst: ipnet("198.51.100.0/24"), Gw: net.ParseIP("192.0.2.254"), LinkIndex: h1.Ext.Index}); err != nil {
		t.Fatal(err)
	}
	far := subnet.Lease{Subnet: netip.MustParsePrefix("10.5.8.0/24"),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.51.100.8"), BackendType: BackendType}}
	lost := subnet.Lease{Subnet: netip.MustParsePrefix("10.5.9.0/24"),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("203.0.113.9"), BackendType: BackendType}}
	leases := append(backendtest.Leases(nodes...), far, lost)
	err := nodes[0].TrySync(leases)
	var le *dataplane.LeaseError
	if !errors.As(err, &le) {
		t.Fatalf("Sync: %v, want lease errors", err)
	}
	for _, want := range []string{
		"lease 10.5.8.0-24: public IP 198.51.100.8 is not on-link on eth0 (reached via gateway 192.0.2.254): host-gw needs L2 adjacency",
		"lease 10.5.9.0-24: public IP 203.0.113.9 is not on-link on eth0 (no route: network is unreachable): host-gw needs L2 adjacency",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Sync error\n%v\nlacks\n%s", err, want)
		}
	}
	if got, _ := nodes[0].B.Observe(); got.String() != "route 10.5.2.0/24 via 192.0.2.12 dev eth0\n" {
		t.Errorf("the on-link peer's route is missing:\n%s", got)
	}
	if got := nodes[0].B.Stats()["lease_errors"]; got != 2 {
		t.Errorf("lease_errors = %d, want 2", got)
	}
	backendtest.PingPod(t, c.Hosts[0], c.Hosts[1])
}

func TestInterfaceDownUpReprograms(t *testing.T) {
	t.Parallel()
	c, nodes := setup(t, 2, false)
	h1 := c.Hosts[0]
	eth0 := h1.Link("eth0")
	if err := h1.H.LinkSetDown(eth0); err != nil {
		t.Fatal(err)
	}
	// The kernel drops the routes through a device that goes down.
	if got, _ := nodes[0].B.Observe(); len(got.Routes) != 0 {
		t.Fatalf("routes still there while eth0 is down:\n%s", got)
	}
	if err := h1.H.LinkSetUp(eth0); err != nil {
		t.Fatal(err)
	}
	if err := backendtest.Eventually(10*time.Second, nodes[0].Programmed); err != nil {
		t.Fatalf("routes not restored after eth0 came back: %v", err)
	}
	backendtest.PingPod(t, c.Hosts[0], c.Hosts[1])
}

func ipnet(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}
