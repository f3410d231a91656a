package macvlan

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/main/sublink/sublinktest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

// lan is a node whose device ltmv0 is wired to a peer namespace standing
// for the rest of the LAN (10.90.0.1/24, 10.90.1.1/24, fd90::1/64).
type lan struct {
	host, peer *netns.NS
	env        *pluginmain.Env
	path       string
	log        *sublinktest.Log
}

func newLAN(t *testing.T) *lan {
	t.Helper()
	l := &lan{host: nstest.New(t), peer: nstest.New(t)}
	l.env, l.path, l.log = sublinktest.Env(t)
	sublinktest.Wire(t, l.host, "ltmv0", l.peer, "ltpeer0", "10.90.0.1/24", "10.90.1.1/24", "fd90::1/64")
	sublinktest.Serve(t, l.peer, "10.90.0.1:7000")
	return l
}

func (l *lan) call(id string, ns *netns.NS, ifName string, conf []byte) plugintest.Call {
	return plugintest.Call{ContainerID: id, NS: ns, IfName: ifName, Path: l.path, Conf: conf}
}

func (l *lan) add(t *testing.T, id string, ns *netns.NS, conf []byte) {
	t.Helper()
	plugintest.Add(t, l.host, l.env, Plugin(), l.call(id, ns, "eth0", conf))
}

func (l *lan) must(t *testing.T, cmd, id string, ns *netns.NS, conf []byte) {
	t.Helper()
	plugintest.Must(t, l.host, l.env, Plugin(), cmd, l.call(id, ns, "eth0", conf))
}

// fail runs cmd and returns its error, failing the test when there is none.
func (l *lan) fail(t *testing.T, cmd, id string, ns *netns.NS, conf []byte) *cniErr {
	t.Helper()
	c := l.call(id, ns, "eth0", conf)
	c.Command = cmd
	out, cerr := plugintest.Invoke(l.host, l.env, Plugin(), c)
	if cerr == nil {
		t.Fatalf("%s succeeded: %s", cmd, out)
	}
	return &cniErr{Code: cerr.Code, Msg: cerr.Msg}
}

type cniErr struct {
	Code uint
	Msg  string
}

func (e *cniErr) want(t *testing.T, code uint, words ...string) {
	t.Helper()
	if e.Code != code {
		t.Errorf("code %d, want %d: %s", e.Code, code, e.Msg)
	}
	for _, w := range words {
		if !strings.Contains(e.Msg, w) {
			t.Errorf("%q lacks %q", e.Msg, w)
		}
	}
}

func cfg(version, extra, ipam string) []byte {
	s := fmt.Sprintf(`{"cniVersion":%q,"name":"ltmv","type":"macvlan","master":"ltmv0"%s`, version, extra)
	if ipam != "" {
		s += `,"ipam":` + ipam
	}
	return []byte(s + "}")
}

func hostLocal(dir, subnet, extra string) string {
	return fmt.Sprintf(`{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]]%s}`, dir, subnet, extra)
}

// Two pods in bridge mode on one master reach each other (IPv4 and IPv6)
// and the LAN reaches them; nothing appears on the node; CHECK passes; DEL
// removes the interface, again succeeds, and succeeds with the namespace
// gone.
func TestBridgeModeTraffic(t *testing.T) {
	l := newLAN(t)
	p1, p2 := nstest.New(t), nstest.New(t)
	c1 := cfg("1.1.0", `,"mode":"bridge"`, sublinktest.Static("10.90.0.11/24", "fd90::11/64"))
	c2 := cfg("1.1.0", "", sublinktest.Static("10.90.0.12/24", "fd90::12/64"))
	r1 := plugintest.Add(t, l.host, l.env, Plugin(), l.call("p1", p1, "eth0", c1))
	l.add(t, "p2", p2, c2)

	if len(r1.Interfaces) != 1 || r1.Interfaces[0].Name != "eth0" || r1.Interfaces[0].Sandbox != p1.Path() {
		t.Fatalf("result interfaces %v", r1.Interfaces)
	}
	link := sublinktest.Link(t, p1, "eth0")
	mv, ok := link.(*netlink.Macvlan)
	if !ok || mv.Mode != netlink.MACVLAN_MODE_BRIDGE {
		t.Fatalf("eth0 is %s %+v, want a bridge-mode macvlan", link.Type(), link)
	}
	if r1.Interfaces[0].Mac != link.Attrs().HardwareAddr.String() || r1.Interfaces[0].Mtu != 1500 {
		t.Errorf("result interface %+v, link MAC %s MTU %d", r1.Interfaces[0], link.Attrs().HardwareAddr, link.Attrs().MTU)
	}
	if len(r1.IPs) != 2 || r1.IPs[0].Interface == nil || *r1.IPs[0].Interface != 0 {
		t.Errorf("result IPs %v", r1.IPs)
	}
	sublinktest.OnlyLinks(t, l.host, "lo", "ltmv0")

	sublinktest.Serve(t, p1, "10.90.0.11:7000")
	sublinktest.Serve(t, p2, "10.90.0.12:7000")
	sublinktest.Serve(t, p2, "[fd90::12]:7000")
	sublinktest.MustReach(t, p1, "10.90.0.12:7000", "10.90.0.11")
	sublinktest.MustReach(t, p1, "[fd90::12]:7000", "fd90::11")
	sublinktest.MustReach(t, l.peer, "10.90.0.11:7000", "10.90.0.1")
	sublinktest.MustReach(t, p2, "10.90.0.1:7000", "10.90.0.12")

	l.must(t, "CHECK", "p1", p1, sublinktest.WithPrev(t, c1, r1))
	for i := 0; i < 2; i++ {
		l.must(t, "DEL", "p1", p1, c1)
	}
	sublinktest.OnlyLinks(t, p1, "lo")
	sublinktest.MustNotReach(t, p2, "10.90.0.11:7000")
	// containerd's second DEL: no namespace; then a namespace that is gone.
	plugintest.Must(t, l.host, l.env, Plugin(), "DEL", plugintest.Call{ContainerID: "p2", IfName: "eth0", Path: l.path, Conf: c2})
	plugintest.Must(t, l.host, l.env, Plugin(), "DEL", plugintest.Call{ContainerID: "p2", NetnsPath: "/run/netns/lt-macvlan-gone", IfName: "eth0", Path: l.path, Conf: c2})
	sublinktest.OnlyLinks(t, l.host, "lo", "ltmv0")
}

// Every configuration version: ADD through host-local (delegated in
// process), CHECK where the version has it, DEL releases the lease.
func TestVersions(t *testing.T) {
	l := newLAN(t)
	sublinktest.Serve(t, l.peer, "10.90.1.1:7000")
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			pod := nstest.New(t)
			dir := t.TempDir()
			c := cfg(v, "", hostLocal(dir, "10.90.1.0/24", ""))
			r := plugintest.Add(t, l.host, l.env, Plugin(), l.call("v", pod, "eth0", c))
			if len(r.IPs) != 1 {
				t.Fatalf("IPs %v", r.IPs)
			}
			ip := r.IPs[0].Address.IP.String()
			sublinktest.MustReach(t, pod, "10.90.1.1:7000", ip)
			if v >= "0.4.0" {
				l.must(t, "CHECK", "v", pod, sublinktest.WithPrev(t, c, r))
			}
			l.must(t, "DEL", "v", pod, c)
			if _, err := os.Stat(filepath.Join(dir, "ltmv", ip)); !os.IsNotExist(err) {
				t.Errorf("lease of %s not released: %v", ip, err)
			}
			sublinktest.OnlyLinks(t, pod, "lo")
		})
	}
}

// Private mode: pods of one master cannot reach each other, but reach the
// LAN. CHECK notices a configuration whose mode differs.
func TestPrivateMode(t *testing.T) {
	l := newLAN(t)
	p1, p2 := nstest.New(t), nstest.New(t)
	c1 := cfg("1.0.0", `,"mode":"private"`, sublinktest.Static("10.90.0.13/24"))
	c2 := cfg("1.0.0", `,"mode":"private"`, sublinktest.Static("10.90.0.14/24"))
	r1 := plugintest.Add(t, l.host, l.env, Plugin(), l.call("p1", p1, "eth0", c1))
	l.add(t, "p2", p2, c2)
	sublinktest.Serve(t, p2, "10.90.0.14:7000")
	sublinktest.MustNotReach(t, p1, "10.90.0.14:7000")
	sublinktest.MustReach(t, p1, "10.90.0.1:7000", "10.90.0.13")
	sublinktest.MustReach(t, p2, "10.90.0.1:7000", "10.90.0.14")
	bridge := cfg("1.0.0", `,"mode":"bridge"`, sublinktest.Static("10.90.0.13/24"))
	l.fail(t, "CHECK", "p1", p1, sublinktest.WithPrev(t, bridge, r1)).want(t, 999, "mode is private", "bridge")
	l.must(t, "DEL", "p1", p1, c1)
	l.must(t, "DEL", "p2", p2, c2)
}

// Passthru: the interface takes the master's MAC and the kernel makes the
// master promiscuous; a second passthru on the master is refused and
// leaves nothing; DEL ends the master's promiscuity.
func TestPassthru(t *testing.T) {
	l := newLAN(t)
	p1, p2 := nstest.New(t), nstest.New(t)
	c := cfg("1.0.0", `,"mode":"passthru"`, sublinktest.Static("10.90.0.21/24"))
	r := plugintest.Add(t, l.host, l.env, Plugin(), l.call("p1", p1, "eth0", c))
	master := sublinktest.Link(t, l.host, "ltmv0")
	if master.Attrs().Promisc == 0 {
		t.Error("master is not promiscuous")
	}
	if r.Interfaces[0].Mac != master.Attrs().HardwareAddr.String() {
		t.Errorf("passthru MAC %s, master's %s", r.Interfaces[0].Mac, master.Attrs().HardwareAddr)
	}
	sublinktest.MustReach(t, p1, "10.90.0.1:7000", "10.90.0.21")
	l.must(t, "CHECK", "p1", p1, sublinktest.WithPrev(t, c, r))

	c2 := cfg("1.0.0", `,"mode":"passthru"`, sublinktest.Static("10.90.0.22/24"))
	l.fail(t, "ADD", "p2", p2, c2).want(t, 999, "passthru", "ltmv0")
	sublinktest.OnlyLinks(t, p2, "lo")
	sublinktest.OnlyLinks(t, l.host, "lo", "ltmv0")

	l.must(t, "DEL", "p1", p1, c)
	if m := sublinktest.Link(t, l.host, "ltmv0"); m.Attrs().Promisc != 0 {
		t.Errorf("master promiscuity %d after DEL", m.Attrs().Promisc)
	}
}

// MTU and MAC are applied and reported; CHECK notices an MTU changed in
// the pod; an MTU above the master's is refused naming mtu and leaves
// nothing.
func TestMTUAndMAC(t *testing.T) {
	l := newLAN(t)
	p1, p2 := nstest.New(t), nstest.New(t)
	c := cfg("1.1.0", `,"mtu":1400,"runtimeConfig":{"mac":"02:00:00:00:90:01"}`, sublinktest.Static("10.90.0.31/24"))
	r := plugintest.Add(t, l.host, l.env, Plugin(), l.call("m", p1, "eth0", c))
	link := sublinktest.Link(t, p1, "eth0")
	if link.Attrs().MTU != 1400 || link.Attrs().HardwareAddr.String() != "02:00:00:00:90:01" {
		t.Errorf("eth0 MTU %d MAC %s", link.Attrs().MTU, link.Attrs().HardwareAddr)
	}
	if r.Interfaces[0].Mtu != 1400 || r.Interfaces[0].Mac != "02:00:00:00:90:01" {
		t.Errorf("result interface %+v", r.Interfaces[0])
	}
	sublinktest.MustReach(t, p1, "10.90.0.1:7000", "10.90.0.31")
	check := sublinktest.WithPrev(t, c, r)
	l.must(t, "CHECK", "m", p1, check)
	if err := nfttest.Handle(t, p1).LinkSetMTU(link, 1300); err != nil {
		t.Fatal(err)
	}
	l.fail(t, "CHECK", "m", p1, check).want(t, 999, "MTU 1300", "1400")

	l.fail(t, "ADD", "big", p2, cfg("1.1.0", `,"mtu":9000`, "")).want(t, 7, "mtu:", "9000", "1500", "ltmv0")
	sublinktest.OnlyLinks(t, p2, "lo")
	// Two macvlans of one master cannot share a MAC.
	l.fail(t, "ADD", "same", p2, cfg("1.1.0", `,"mac":"02:00:00:00:90:01"`, sublinktest.Static("10.90.0.32/24"))).want(t, 999, "02:00:00:00:90:01", "ltmv0")
	sublinktest.OnlyLinks(t, p2, "lo")
	l.must(t, "DEL", "m", p1, c)
}

// A failure after IPAM (a route whose gateway is not on the link) undoes
// everything: no interface, no temporary link, no lease.
func TestFailedAddLeavesNothing(t *testing.T) {
	l := newLAN(t)
	pod := nstest.New(t)
	dir := t.TempDir()
	c := cfg("1.0.0", "", hostLocal(dir, "10.90.2.0/24", `,"routes":[{"dst":"10.99.0.0/16","gw":"192.0.2.1"}]`))
	l.fail(t, "ADD", "u", pod, c).want(t, 999, "10.99.0.0/16")
	sublinktest.OnlyLinks(t, pod, "lo")
	sublinktest.OnlyLinks(t, l.host, "lo", "ltmv0")
	ents, _ := os.ReadDir(filepath.Join(dir, "ltmv"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "10.90.2.") {
			t.Errorf("lease %s left behind", e.Name())
		}
	}
}

// Bad requests fail before touching anything, naming what is wrong.
func TestBadRequests(t *testing.T) {
	l := newLAN(t)
	pod := nstest.New(t)
	// A missing master.
	l.fail(t, "ADD", "b", pod, []byte(`{"cniVersion":"1.0.0","name":"ltmv","type":"macvlan","master":"ltnone"}`)).want(t, 7, "master:", "ltnone")
	// Layer 2 only in a version whose results carry only addresses.
	l.fail(t, "ADD", "b", pod, cfg("0.2.0", "", "")).want(t, 7, "ipam:", "0.2.0")
	// Invalid configuration: code 7, every field.
	l.fail(t, "ADD", "b", pod, cfg("1.0.0", `,"mode":"nope","mtu":1`, "")).want(t, 7, "mode:", "mtu:")
	sublinktest.OnlyLinks(t, pod, "lo")
	// CNI_IFNAME taken in the pod.
	sublinktest.Wire(t, pod, "eth0", l.peer, "ltpeer9")
	l.fail(t, "ADD", "b", pod, cfg("1.0.0", "", "")).want(t, 4, "CNI_IFNAME", "eth0")
	sublinktest.OnlyLinks(t, pod, "lo", "eth0")
	// DEL leaves an interface of that name alone when it is not a macvlan.
	l.must(t, "DEL", "b", pod, cfg("1.0.0", "", ""))
	sublinktest.OnlyLinks(t, pod, "lo", "eth0")
	if !strings.Contains(l.log.String(), "not ours") {
		t.Errorf("DEL did not log the foreign interface:\n%s", l.log)
	}
	// CHECK without prevResult.
	l.fail(t, "CHECK", "b", pod, cfg("1.0.0", "", "")).want(t, 7, "prevResult")
}

// The node has its own eth0: the pod's eth0 is created all the same (the
// temporary name never clashes), and the node's is untouched. Most
// kernels in use look the new name up on the node, so without the
// temporary name this fails there; recent ones (6.18) look in the pod.
func TestPodNameTakenOnNode(t *testing.T) {
	l := newLAN(t)
	pod := nstest.New(t)
	h := nfttest.Handle(t, l.host)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "ltnode1"}); err != nil {
		t.Fatal(err)
	}
	before := sublinktest.Link(t, l.host, "eth0").Attrs().Index
	c := cfg("1.0.0", "", sublinktest.Static("10.90.0.51/24"))
	l.add(t, "n", pod, c)
	if after := sublinktest.Link(t, l.host, "eth0"); after.Attrs().Index != before || after.Type() != "veth" {
		t.Errorf("node's eth0 changed: %s index %d (was %d)", after.Type(), after.Attrs().Index, before)
	}
	sublinktest.MustReach(t, pod, "10.90.0.1:7000", "10.90.0.51")
	l.must(t, "DEL", "n", pod, c)
}

// linkInContainer: the master is in the pod (an earlier plugin put it
// there); the interface is stacked on it inside the pod.
func TestLinkInContainer(t *testing.T) {
	l := newLAN(t)
	pod, far := nstest.New(t), nstest.New(t)
	sublinktest.Wire(t, pod, "ltm1", far, "ltfar0", "10.90.3.1/24")
	sublinktest.Serve(t, far, "10.90.3.1:7000")
	c := []byte(`{"cniVersion":"1.1.0","name":"ltmvc","type":"macvlan","master":"ltm1","linkInContainer":true,"ipam":` + sublinktest.Static("10.90.3.2/24") + `}`)
	r := plugintest.Add(t, l.host, l.env, Plugin(), l.call("c", pod, "net1", c))
	link := sublinktest.Link(t, pod, "net1")
	if link.Attrs().ParentIndex != sublinktest.Link(t, pod, "ltm1").Attrs().Index {
		t.Errorf("net1 is stacked on index %d, not on ltm1", link.Attrs().ParentIndex)
	}
	sublinktest.MustReach(t, pod, "10.90.3.1:7000", "10.90.3.2")
	plugintest.Must(t, l.host, l.env, Plugin(), "CHECK", l.call("c", pod, "net1", sublinktest.WithPrev(t, c, r)))
	// The same name on the node is not the master CHECK means.
	sublinktest.Wire(t, l.host, "ltm1", far, "ltfar1")
	onNode := []byte(strings.Replace(string(sublinktest.WithPrev(t, c, r)), `"linkInContainer":true`, `"linkInContainer":false`, 1))
	c2 := l.call("c", pod, "net1", onNode)
	c2.Command = "CHECK"
	if _, cerr := plugintest.Invoke(l.host, l.env, Plugin(), c2); cerr == nil || !strings.Contains(cerr.Msg, "master") {
		t.Errorf("CHECK with the master on the node: %v", cerr)
	}
	plugintest.Must(t, l.host, l.env, Plugin(), "DEL", l.call("c", pod, "net1", c))
	sublinktest.OnlyLinks(t, pod, "lo", "ltm1")
}

// Without master, the default route's interface is used; a node without a
// default route gets an error naming master; STATUS reports a missing
// master with code 50.
func TestDefaultRouteMaster(t *testing.T) {
	l := newLAN(t)
	pod := nstest.New(t)
	nfttest.Addr(t, l.host, "ltmv0", "10.90.0.254/24")
	// A second device with a worse default route.
	other := nstest.New(t)
	sublinktest.Wire(t, l.host, "ltmv9", other, "ltother0", "10.90.9.1/24")
	nfttest.Addr(t, l.host, "ltmv9", "10.90.9.254/24")
	h := nfttest.Handle(t, l.host)
	for _, r := range []struct {
		gw  string
		dev string
		pri int
	}{{"10.90.9.1", "ltmv9", 200}, {"10.90.0.1", "ltmv0", 100}} {
		dev := sublinktest.Link(t, l.host, r.dev)
		_, all, _ := net.ParseCIDR("0.0.0.0/0")
		if err := h.RouteAdd(&netlink.Route{Dst: all, Gw: net.ParseIP(r.gw), LinkIndex: dev.Attrs().Index, Priority: r.pri}); err != nil {
			t.Fatal(err)
		}
	}
	c := []byte(`{"cniVersion":"1.1.0","name":"ltmvd","type":"macvlan","ipam":` + sublinktest.Static("10.90.0.61/24") + `}`)
	r := plugintest.Add(t, l.host, l.env, Plugin(), l.call("d", pod, "eth0", c))
	if got, want := sublinktest.Link(t, pod, "eth0").Attrs().ParentIndex, sublinktest.Link(t, l.host, "ltmv0").Attrs().Index; got != want {
		t.Errorf("stacked on index %d, want ltmv0 (%d)", got, want)
	}
	sublinktest.MustReach(t, pod, "10.90.0.1:7000", "10.90.0.61")
	l.must(t, "CHECK", "d", pod, sublinktest.WithPrev(t, c, r))
	l.must(t, "STATUS", "", nil, c)
	l.fail(t, "STATUS", "", nil, []byte(`{"cniVersion":"1.1.0","name":"ltmvd","type":"macvlan","master":"ltnone"}`)).want(t, 50, "master", "ltnone")
	l.must(t, "DEL", "d", pod, c)

	bare, pod2 := nstest.New(t), nstest.New(t)
	c2 := l.call("d2", pod2, "eth0", []byte(`{"cniVersion":"1.1.0","name":"ltmvd","type":"macvlan"}`))
	c2.Command = "ADD"
	if _, cerr := plugintest.Invoke(bare, l.env, Plugin(), c2); cerr == nil || cerr.Code != 7 || !strings.Contains(cerr.Msg, "default route") {
		t.Errorf("ADD without master or default route: %v", cerr)
	}
	c2.Command = "STATUS"
	if _, cerr := plugintest.Invoke(bare, l.env, Plugin(), c2); cerr == nil || cerr.Code != 50 {
		t.Errorf("STATUS without master or default route: %v", cerr)
	}
}

// The kernel announces the new address when the interface comes up
// (arp_notify): a neighbour that accepts gratuitous ARP learns the pod's
// MAC without any traffic from the pod.
func TestGratuitousARP(t *testing.T) {
	l := newLAN(t)
	pod := nstest.New(t)
	nfttest.Sysctl(t, l.peer, "net/ipv4/conf/ltpeer0/arp_accept", "1")
	c := cfg("1.0.0", "", sublinktest.Static("10.90.0.71/24"))
	r := plugintest.Add(t, l.host, l.env, Plugin(), l.call("g", pod, "eth0", c))
	h := nfttest.Handle(t, l.peer)
	peerIf := sublinktest.Link(t, l.peer, "ltpeer0")
	deadline := time.Now().Add(3 * time.Second)
	found := false
	for !found && time.Now().Before(deadline) {
		neighs, err := h.NeighList(peerIf.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range neighs {
			if n.IP.Equal(net.ParseIP("10.90.0.71")) && n.HardwareAddr.String() == r.Interfaces[0].Mac {
				found = true
			}
		}
		if !found {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !found {
		t.Errorf("the LAN did not learn 10.90.0.71 at %s from a gratuitous ARP", r.Interfaces[0].Mac)
	}
	l.must(t, "DEL", "g", pod, c)
}

// CHECK notices drift: a missing address, a MAC other than the result's, a
// link set down, a different master.
func TestCheckDetectsDrift(t *testing.T) {
	l := newLAN(t)
	pod := nstest.New(t)
	c := cfg("1.0.0", "", sublinktest.Static("10.90.0.81/24"))
	r := plugintest.Add(t, l.host, l.env, Plugin(), l.call("k", pod, "eth0", c))
	check := sublinktest.WithPrev(t, c, r)
	l.must(t, "CHECK", "k", pod, check)

	other := nstest.New(t)
	sublinktest.Wire(t, l.host, "ltmv1", other, "ltother1")
	onOther := []byte(strings.Replace(string(check), `"master":"ltmv0"`, `"master":"ltmv1"`, 1))
	l.fail(t, "CHECK", "k", pod, onOther).want(t, 999, "not on master", "ltmv1")

	wrongMAC := *r
	wrongMAC.Interfaces = append(wrongMAC.Interfaces[:0:0], r.Interfaces...)
	ifc := *r.Interfaces[0]
	ifc.Mac = "02:00:00:00:00:99"
	wrongMAC.Interfaces[0] = &ifc
	l.fail(t, "CHECK", "k", pod, sublinktest.WithPrev(t, c, &wrongMAC)).want(t, 999, "MAC")

	h := nfttest.Handle(t, pod)
	link := sublinktest.Link(t, pod, "eth0")
	addr, _ := netlink.ParseAddr("10.90.0.81/24")
	if err := h.AddrDel(link, addr); err != nil {
		t.Fatal(err)
	}
	l.fail(t, "CHECK", "k", pod, check).want(t, 999, "10.90.0.81/24", "missing")
	if err := h.LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	l.fail(t, "CHECK", "k", pod, check).want(t, 999, "down")
	l.must(t, "DEL", "k", pod, c)
}

// GC goes to IPAM: with no valid attachment left, host-local releases the
// lease.
func TestGC(t *testing.T) {
	l := newLAN(t)
	pod := nstest.New(t)
	dir := t.TempDir()
	c := cfg("1.1.0", "", hostLocal(dir, "10.90.1.0/24", ""))
	r := plugintest.Add(t, l.host, l.env, Plugin(), l.call("gc", pod, "eth0", c))
	lease := filepath.Join(dir, "ltmv", r.IPs[0].Address.IP.String())
	if _, err := os.Stat(lease); err != nil {
		t.Fatal(err)
	}
	keep := []byte(strings.TrimSuffix(string(c), "}") + `,"cni.dev/valid-attachments":[{"containerID":"gc","ifname":"eth0"}]}`)
	l.must(t, "GC", "", nil, keep)
	if _, err := os.Stat(lease); err != nil {
		t.Errorf("GC released a valid attachment's lease: %v", err)
	}
	l.must(t, "GC", "", nil, []byte(strings.TrimSuffix(string(c), "}")+`,"cni.dev/valid-attachments":[]}`))
	if _, err := os.Stat(lease); !os.IsNotExist(err) {
		t.Errorf("GC kept a stale lease: %v", err)
	}
	l.must(t, "DEL", "gc", pod, c)
}
