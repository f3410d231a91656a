package vxlan

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/overlay/backend/backendtest"
	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-vxlan-") }

type node = backendtest.Node

func newBackend(cfg *subnet.Config, ext dataplane.ExternalInterface, o dataplane.Options) (backendtest.Backend, error) {
	b, err := New(cfg, ext, o)
	if err != nil {
		return nil, err
	}
	return b, nil
}

type opts struct {
	backend  string // Backend object JSON
	stateDir string
}

func start(t testing.TB, c *backendtest.Cluster, h *backendtest.Host, o opts) *node {
	t.Helper()
	if o.backend == "" {
		o.backend = `{"Type":"vxlan"}`
	}
	return backendtest.Start(t, c, h, newBackend, BackendType, o.backend, dataplane.Options{StateDir: o.stateDir})
}

func setup(t *testing.T, hosts int, o opts) (*backendtest.Cluster, []*node) {
	c := backendtest.New(t, hosts, false)
	var nodes []*node
	for _, h := range c.Hosts {
		nodes = append(nodes, start(t, c, h, o))
	}
	backendtest.SyncAll(t, nodes, backendtest.Leases(nodes...))
	return c, nodes
}

func checkProgrammed(t testing.TB, n *node) {
	t.Helper()
	if err := n.Programmed(); err != nil {
		t.Errorf("host %d: %v", n.Host.N, err)
	}
}

func mustData(t testing.TB, a subnet.LeaseAttrs) LeaseData {
	t.Helper()
	d, _, err := ParseLeaseData(a.BackendData)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var (
	ping     = backendtest.PingPod
	leasesOf = backendtest.Leases
	syncAll  = backendtest.SyncAll
)

func TestTrafficAndLeaseRemoval(t *testing.T) {
	t.Parallel()
	c, nodes := setup(t, 3, opts{})
	for _, n := range nodes {
		checkProgrammed(t, n)
		if l := n.Host.Link("flannel.1"); l == nil || l.Attrs().MTU != 1450 || l.Attrs().HardwareAddr.String() != mustData(t, n.Attrs).VtepMAC {
			t.Errorf("host %d: flannel.1 = %+v, want MTU 1450 and the published VtepMAC", n.Host.N, l)
		}
		if n.B.MTU() != 1450 {
			t.Errorf("host %d: MTU() = %d, want 1450", n.Host.N, n.B.MTU())
		}
	}
	c.PingPods(t)
	// Host to remote pod: sourced from flannel.1's /32.
	if err := backendtest.Ping(c.Hosts[0].NS, c.Hosts[1].PodIP); err != nil {
		t.Errorf("host 1 -> pod 2: %v", err)
	}
	// The traffic crossed the VXLAN devices (encapsulated in both
	// directions on every host).
	for _, h := range c.Hosts {
		st := h.Link("flannel.1").Attrs().Statistics
		if st == nil || st.TxPackets == 0 || st.RxPackets == 0 {
			t.Errorf("host %d: flannel.1 counters %+v: no traffic went through the device", h.N, st)
		}
	}

	// Host 3 leaves: the others drop its route, neighbour and FDB entry.
	syncAll(t, nodes[:2], leasesOf(nodes[0], nodes[1]))
	mac3 := mustData(t, nodes[2].Attrs).VtepMAC
	for _, n := range nodes[:2] {
		checkProgrammed(t, n)
		got, err := n.B.Observe()
		if err != nil {
			t.Fatal(err)
		}
		if s := got.String(); strings.Contains(s, "10.5.3.") || strings.Contains(s, mac3) || strings.Contains(s, "192.0.2.13") {
			t.Errorf("host %d still has entries for host 3:\n%s", n.Host.N, s)
		}
		if len(got.Routes) != 1 || len(got.Neighs) != 1 || len(got.FDB) != 1 {
			t.Errorf("host %d: want one route, neighbour and FDB entry, have:\n%s", n.Host.N, got)
		}
	}
	if err := backendtest.PingOnce(c.Hosts[0].Pod, c.Hosts[2].PodIP); err == nil {
		t.Error("pod 1 still reaches pod 3 after host 3's lease is gone")
	}
	ping(t, c.Hosts[0], c.Hosts[1])

	// And comes back.
	syncAll(t, nodes, leasesOf(nodes...))
	ping(t, c.Hosts[0], c.Hosts[2])
	ping(t, c.Hosts[2], c.Hosts[1])
}

func TestSyncTwiceChangesNothing(t *testing.T) {
	t.Parallel()
	c, nodes := setup(t, 3, opts{})
	for _, n := range nodes {
		before, err := n.Host.Dump()
		if err != nil {
			t.Fatal(err)
		}
		w := n.B.Writes()
		n.Sync(t, leasesOf(nodes...))
		n.Sync(t, leasesOf(nodes[2], nodes[0], nodes[1])) // order does not matter
		if got := n.B.Writes(); got != w {
			t.Errorf("host %d: Sync of an unchanged lease set did %d netlink writes", n.Host.N, got-w)
		}
		after, err := n.Host.Dump()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before, after); diff != "" {
			t.Errorf("host %d: kernel state changed (-before +after):\n%s", n.Host.N, diff)
		}
	}
	ping(t, c.Hosts[0], c.Hosts[2])
}

func TestStaleEntriesRemovedOnFirstSync(t *testing.T) {
	t.Parallel()
	c := backendtest.New(t, 2, false)
	h1 := c.Hosts[0]
	n2 := start(t, c, c.Hosts[1], opts{})
	// Host 1 ran linen before: flannel.1 exists (with an address of an
	// old lease) and holds entries of a node that left while it was down,
	// and an FDB entry of host 2 that points elsewhere.
	old := start(t, c, h1, opts{})
	old.B.Close()
	dev := h1.Link("flannel.1")
	idx := dev.Attrs().Index
	staleMAC := backendtest.MAC("0a:00:00:00:00:77")
	mac2 := backendtest.MAC(mustData(t, n2.Attrs).VtepMAC)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("plant %s: %v", what, err)
		}
	}
	must("address", h1.H.AddrAdd(dev, &netlink.Addr{IPNet: ipnet("10.5.99.0/32")}))
	must("neighbour", h1.H.NeighSet(&netlink.Neigh{LinkIndex: idx, State: netlink.NUD_PERMANENT, IP: net.ParseIP("10.5.77.0"), HardwareAddr: staleMAC}))
	must("fdb", h1.H.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("192.0.2.77"), HardwareAddr: staleMAC}))
	must("wrong fdb", h1.H.NeighAppend(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("192.0.2.99"), HardwareAddr: mac2}))
	must("route", h1.H.RouteAdd(&netlink.Route{Dst: ipnet("10.5.77.0/24"), Gw: net.ParseIP("10.5.77.0"), LinkIndex: idx,
		Flags: int(netlink.FLAG_ONLINK), Protocol: dataplane.RouteProtocol}))
	// Not linen's: a static route stays.
	must("foreign route", h1.H.RouteAdd(&netlink.Route{Dst: ipnet("10.7.0.0/16"), Gw: net.ParseIP("192.0.2.1"), LinkIndex: h1.Ext.Index,
		Protocol: unix.RTPROT_STATIC}))

	n1 := start(t, c, h1, opts{})
	if got := n1.B.Stats()["device_creations"]; got != 0 {
		t.Errorf("the existing compatible device was recreated (%d creations)", got)
	}
	addrs, _ := h1.H.AddrList(dev, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.5.1.0/32" {
		t.Errorf("flannel.1 addresses = %v, want only 10.5.1.0/32", addrs)
	}
	nodes := []*node{n1, n2}
	syncAll(t, nodes, leasesOf(nodes...))
	got, err := n1.B.Observe()
	if err != nil {
		t.Fatal(err)
	}
	want := "route 10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink\n" +
		"neigh 10.5.2.0 dev flannel.1 lladdr " + mac2.String() + " permanent\n" +
		"fdb " + mac2.String() + " dev flannel.1 dst 192.0.2.12 self permanent\n"
	if diff := cmp.Diff(want, got.String()); diff != "" {
		t.Errorf("after the first Sync (-want +got):\n%s", diff)
	}
	foreign, err := h1.H.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipnet("10.7.0.0/16")}, netlink.RT_FILTER_DST)
	if err != nil || len(foreign) != 1 {
		t.Errorf("the static route not owned by linen is gone: %v %v", foreign, err)
	}
	ping(t, c.Hosts[0], c.Hosts[1])
}

func ipnet(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

type errString string

func (e errString) Error() string { return string(e) }

func TestDeviceRepair(t *testing.T) {
	t.Parallel()
	c, nodes := setup(t, 2, opts{})
	h1, n1 := c.Hosts[0], nodes[0]
	mac := h1.Link("flannel.1").Attrs().HardwareAddr.String()

	repaired := func() error {
		l := h1.Link("flannel.1")
		switch {
		case l == nil:
			return errString("flannel.1 is missing")
		case l.Attrs().HardwareAddr.String() != mac:
			return errString("flannel.1 has MAC " + l.Attrs().HardwareAddr.String() + ", want " + mac)
		case l.Attrs().Flags&net.FlagUp == 0:
			return errString("flannel.1 is down")
		}
		if addrs, _ := h1.H.AddrList(l, netlink.FAMILY_V4); len(addrs) != 1 {
			return errString("flannel.1 has no address")
		}
		return n1.Programmed()
	}

	t.Run("watcher recreates a deleted device", func(t *testing.T) {
		if err := h1.H.LinkDel(h1.Link("flannel.1")); err != nil {
			t.Fatal(err)
		}
		if err := backendtest.Eventually(10*time.Second, repaired); err != nil {
			t.Fatalf("not repaired: %v", err)
		}
		ping(t, c.Hosts[0], c.Hosts[1])
	})
	t.Run("watcher brings a downed device back up", func(t *testing.T) {
		// Down drops every route and neighbour entry through the device.
		if err := h1.H.LinkSetDown(h1.Link("flannel.1")); err != nil {
			t.Fatal(err)
		}
		if err := backendtest.Eventually(10*time.Second, repaired); err != nil {
			t.Fatalf("not repaired: %v", err)
		}
		ping(t, c.Hosts[0], c.Hosts[1])
	})
	t.Run("Sync repairs a deleted device", func(t *testing.T) {
		if err := h1.H.LinkDel(h1.Link("flannel.1")); err != nil {
			t.Fatal(err)
		}
		// Whether the watcher or this Sync gets there first, the Sync
		// returns with the data plane whole.
		n1.Sync(t, leasesOf(nodes...))
		if err := repaired(); err != nil {
			t.Fatal(err)
		}
		ping(t, c.Hosts[1], c.Hosts[0])
	})
	if got := n1.B.Stats()["device_creations"]; got != 3 {
		t.Errorf("device_creations = %d, want 3 (Prepare and two repairs)", got)
	}
}

func TestPeriodicResyncRestoresEntries(t *testing.T) {
	t.Parallel()
	c := backendtest.New(t, 2, false)
	o := dataplane.Options{Resync: 100 * time.Millisecond}
	n1 := backendtest.Start(t, c, c.Hosts[0], newBackend, BackendType, `{"Type":"vxlan"}`, o)
	n2 := start(t, c, c.Hosts[1], opts{})
	syncAll(t, []*node{n1, n2}, leasesOf(n1, n2))
	h1 := c.Hosts[0]
	routes, err := h1.H.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: dataplane.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil || len(routes) != 1 {
		t.Fatalf("routes %v %v", routes, err)
	}
	if err := h1.H.RouteDel(&routes[0]); err != nil {
		t.Fatal(err)
	}
	if err := backendtest.Eventually(10*time.Second, n1.Programmed); err != nil {
		t.Fatalf("route not restored: %v", err)
	}
	ping(t, c.Hosts[0], c.Hosts[1])
}

func TestVtepMACKeptAcrossRestart(t *testing.T) {
	t.Parallel()
	c := backendtest.New(t, 2, false)
	state := t.TempDir()
	h1 := c.Hosts[0]
	n1 := start(t, c, h1, opts{stateDir: state})
	n2 := start(t, c, c.Hosts[1], opts{})
	syncAll(t, []*node{n1, n2}, leasesOf(n1, n2))
	mac := mustData(t, n1.Attrs).VtepMAC
	index := h1.Link("flannel.1").Attrs().Index
	n1.B.Close()

	// Restart: the device is reused, and a restart that finds the data
	// plane in place writes nothing.
	before, _ := h1.Dump()
	r := start(t, c, h1, opts{stateDir: state})
	r.Sync(t, leasesOf(r, n2))
	if got := mustData(t, r.Attrs).VtepMAC; got != mac {
		t.Errorf("VtepMAC after restart = %s, want %s", got, mac)
	}
	if l := h1.Link("flannel.1"); l.Attrs().Index != index {
		t.Errorf("flannel.1 was recreated (index %d, was %d)", l.Attrs().Index, index)
	}
	if w := r.B.Writes(); w != 0 {
		t.Errorf("restart with everything in place did %d netlink writes", w)
	}
	after, _ := h1.Dump()
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("restart changed the kernel (-before +after):\n%s", diff)
	}
	r.B.Close()

	// The device is deleted while the daemon is down: the MAC comes from
	// the state directory.
	if err := h1.H.LinkDel(h1.Link("flannel.1")); err != nil {
		t.Fatal(err)
	}
	r2 := start(t, c, h1, opts{stateDir: state})
	if got := mustData(t, r2.Attrs).VtepMAC; got != mac {
		t.Errorf("VtepMAC after the device was deleted = %s, want %s (from the state dir)", got, mac)
	}
	r2.Sync(t, leasesOf(r2, n2))
	ping(t, c.Hosts[0], c.Hosts[1])
	ping(t, c.Hosts[1], c.Hosts[0])
}

func TestIncompatibleDeviceRecreated(t *testing.T) {
	t.Parallel()
	c := backendtest.New(t, 2, false)
	h1 := c.Hosts[0]
	mac := backendtest.MAC("0a:00:00:00:00:aa")
	la := netlink.NewLinkAttrs()
	la.Name, la.HardwareAddr = "flannel.1", mac
	if err := h1.H.LinkAdd(&netlink.Vxlan{LinkAttrs: la, VxlanId: 1, Port: 4789, Learning: true, VtepDevIndex: h1.Ext.Index}); err != nil {
		t.Fatal(err)
	}
	n1 := start(t, c, h1, opts{})
	n2 := start(t, c, c.Hosts[1], opts{})
	syncAll(t, []*node{n1, n2}, leasesOf(n1, n2))
	l, ok := h1.Link("flannel.1").(*netlink.Vxlan)
	if !ok || l.Port != DefaultPort || l.Learning || !l.SrcAddr.Equal(net.IP(h1.Ext.IfaceAddr.AsSlice())) {
		t.Fatalf("flannel.1 = %+v, want port %d, learning off, local %s", l, DefaultPort, h1.Ext.IfaceAddr)
	}
	if l.HardwareAddr.String() != mac.String() || mustData(t, n1.Attrs).VtepMAC != mac.String() {
		t.Errorf("MAC %s, published %s, want %s kept", l.HardwareAddr, mustData(t, n1.Attrs).VtepMAC, mac)
	}
	ping(t, c.Hosts[0], c.Hosts[1])
}

func TestDirectRouting(t *testing.T) {
	t.Parallel()
	c, nodes := setup(t, 3, opts{backend: `{"Type":"vxlan","DirectRouting":true}`})
	for _, n := range nodes {
		got, err := n.B.Observe()
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Routes) != 2 || len(got.Neighs) != 0 || len(got.FDB) != 0 {
			t.Errorf("host %d: want two plain routes and no VXLAN entries, have:\n%s", n.Host.N, got)
		}
		for _, r := range got.Routes {
			if r.Dev != "eth0" {
				t.Errorf("host %d: route %s is not direct", n.Host.N, r)
			}
		}
	}
	c.PingPods(t)
}

func TestDualStack(t *testing.T) {
	t.Parallel()
	c := backendtest.New(t, 3, true)
	var nodes []*node
	for _, h := range c.Hosts {
		nodes = append(nodes, start(t, c, h, opts{}))
	}
	syncAll(t, nodes, leasesOf(nodes...))
	for _, n := range nodes {
		checkProgrammed(t, n)
		if n.B.MTU() != 1430 {
			t.Errorf("MTU = %d, want 1430 (the IPv6 device's)", n.B.MTU())
		}
		if l := n.Host.Link("flannel-v6.1"); l == nil || l.Attrs().MTU != 1430 {
			t.Errorf("host %d: flannel-v6.1 = %v", n.Host.N, l)
		}
	}
	c.PingPods(t)
	for _, h := range c.Hosts {
		if st := h.Link("flannel-v6.1").Attrs().Statistics; st == nil || st.TxPackets == 0 {
			t.Errorf("host %d: no traffic through flannel-v6.1", h.N)
		}
	}
}
