package ipvlan

import (
	"fmt"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/main/sublink/sublinktest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

// The tests that create ipvlan links skip, saying why, on kernels without
// ipvlan; TestWithoutKernelSupport runs only there.

// lan is a node whose device ltiv0 is wired to a peer namespace standing
// for the rest of the LAN (10.91.0.1/24, fd91::1/64).
type lan struct {
	host, peer *netns.NS
	env        *pluginmain.Env
	path       string
}

func ipvlanProbe(la netlink.LinkAttrs) netlink.Link {
	return &netlink.IPVlan{LinkAttrs: la, Mode: netlink.IPVLAN_MODE_L2}
}

func newLAN(t *testing.T, needIPVlan bool) *lan {
	t.Helper()
	l := &lan{host: nstest.New(t), peer: nstest.New(t)}
	if needIPVlan {
		sublinktest.RequireKind(t, l.host, "ipvlan", ipvlanProbe)
	}
	l.env, l.path, _ = sublinktest.Env(t)
	sublinktest.Wire(t, l.host, "ltiv0", l.peer, "ltpeer0", "10.91.0.1/24", "fd91::1/64")
	sublinktest.Serve(t, l.peer, "10.91.0.1:7000")
	return l
}

func (l *lan) call(cmd, id string, ns *netns.NS, conf []byte) plugintest.Call {
	return plugintest.Call{Command: cmd, ContainerID: id, NS: ns, IfName: "eth0", Path: l.path, Conf: conf}
}

func (l *lan) add(t *testing.T, id string, ns *netns.NS, conf []byte) *current.Result {
	t.Helper()
	return plugintest.Add(t, l.host, l.env, Plugin(), l.call("ADD", id, ns, conf))
}

func (l *lan) must(t *testing.T, cmd, id string, ns *netns.NS, conf []byte) {
	t.Helper()
	plugintest.Must(t, l.host, l.env, Plugin(), cmd, l.call(cmd, id, ns, conf))
}

// fail runs cmd, expects an error with the code, mentioning words.
func (l *lan) fail(t *testing.T, cmd, id string, ns *netns.NS, conf []byte, code uint, words ...string) {
	t.Helper()
	out, cerr := plugintest.Invoke(l.host, l.env, Plugin(), l.call(cmd, id, ns, conf))
	if cerr == nil {
		t.Fatalf("%s succeeded: %s", cmd, out)
	}
	if cerr.Code != code {
		t.Errorf("%s: code %d, want %d: %s", cmd, cerr.Code, code, cerr.Msg)
	}
	for _, w := range words {
		if !strings.Contains(cerr.Msg, w) {
			t.Errorf("%s: %q lacks %q", cmd, cerr.Msg, w)
		}
	}
}

func cfg(version, extra, ipam string) []byte {
	s := fmt.Sprintf(`{"cniVersion":%q,"name":"ltiv","type":"ipvlan","master":"ltiv0"%s`, version, extra)
	if ipam != "" {
		s += `,"ipam":` + ipam
	}
	return []byte(s + "}")
}

// l2 mode: two pods of one master reach each other (IPv4 and IPv6) and the
// LAN reaches them; both use the master's MAC; CHECK passes; DEL is
// idempotent and succeeds without the namespace.
func TestL2Traffic(t *testing.T) {
	l := newLAN(t, true)
	p1, p2 := nstest.New(t), nstest.New(t)
	c1 := cfg("1.1.0", "", sublinktest.Static("10.91.0.11/24", "fd91::11/64"))
	c2 := cfg("1.1.0", `,"mode":"l2"`, sublinktest.Static("10.91.0.12/24", "fd91::12/64"))
	r1 := l.add(t, "p1", p1, c1)
	l.add(t, "p2", p2, c2)
	master := sublinktest.Link(t, l.host, "ltiv0")
	link := sublinktest.Link(t, p1, "eth0")
	if iv, ok := link.(*netlink.IPVlan); !ok || iv.Mode != netlink.IPVLAN_MODE_L2 {
		t.Fatalf("eth0 is %s %+v, want an l2 ipvlan", link.Type(), link)
	}
	if r1.Interfaces[0].Mac != master.Attrs().HardwareAddr.String() || link.Attrs().HardwareAddr.String() != r1.Interfaces[0].Mac {
		t.Errorf("MACs: result %s, link %s, master %s", r1.Interfaces[0].Mac, link.Attrs().HardwareAddr, master.Attrs().HardwareAddr)
	}
	sublinktest.OnlyLinks(t, l.host, "lo", "ltiv0")
	sublinktest.Serve(t, p1, "10.91.0.11:7000")
	sublinktest.Serve(t, p2, "10.91.0.12:7000")
	sublinktest.Serve(t, p2, "[fd91::12]:7000")
	sublinktest.MustReach(t, p1, "10.91.0.12:7000", "10.91.0.11")
	sublinktest.MustReach(t, p1, "[fd91::12]:7000", "fd91::11")
	sublinktest.MustReach(t, l.peer, "10.91.0.11:7000", "10.91.0.1")
	sublinktest.MustReach(t, p2, "10.91.0.1:7000", "10.91.0.12")
	l.must(t, "CHECK", "p1", p1, sublinktest.WithPrev(t, c1, r1))
	l.fail(t, "CHECK", "p1", p1, sublinktest.WithPrev(t, cfg("1.1.0", `,"mode":"l3"`, sublinktest.Static("10.91.0.11/24", "fd91::11/64")), r1), 999, "mode is l2")
	for i := 0; i < 2; i++ {
		l.must(t, "DEL", "p1", p1, c1)
	}
	sublinktest.OnlyLinks(t, p1, "lo")
	plugintest.Must(t, l.host, l.env, Plugin(), "DEL", plugintest.Call{ContainerID: "p2", NetnsPath: "/run/netns/lt-ipvlan-gone", IfName: "eth0", Path: l.path, Conf: c2})
}

// l3 mode: the node's namespace routes the pods' traffic. Pods reach each
// other directly; the LAN reaches them through a route via the node's
// address on the master.
func TestL3Mode(t *testing.T) {
	l := newLAN(t, true)
	nfttest.Addr(t, l.host, "ltiv0", "10.91.0.254/24")
	nfttest.Route(t, l.peer, "10.92.0.0/24", "10.91.0.254")
	p1, p2 := nstest.New(t), nstest.New(t)
	ipam := func(ip string) string {
		return `{"type":"static","addresses":[{"address":"` + ip + `"}],"routes":[{"dst":"0.0.0.0/0"}]}`
	}
	c1 := cfg("1.0.0", `,"mode":"l3"`, ipam("10.92.0.11/24"))
	r1 := l.add(t, "p1", p1, c1)
	l.add(t, "p2", p2, cfg("1.0.0", `,"mode":"l3"`, ipam("10.92.0.12/24")))
	if iv := sublinktest.Link(t, p1, "eth0").(*netlink.IPVlan); iv.Mode != netlink.IPVLAN_MODE_L3 {
		t.Errorf("mode %v", iv.Mode)
	}
	sublinktest.Serve(t, p1, "10.92.0.11:7000")
	sublinktest.Serve(t, p2, "10.92.0.12:7000")
	sublinktest.MustReach(t, p1, "10.92.0.12:7000", "10.92.0.11")
	sublinktest.MustReach(t, p1, "10.91.0.1:7000", "10.92.0.11")
	sublinktest.MustReach(t, l.peer, "10.92.0.12:7000", "10.91.0.1")
	l.must(t, "CHECK", "p1", p1, sublinktest.WithPrev(t, c1, r1))
	l.must(t, "DEL", "p1", p1, c1)
	l.must(t, "DEL", "p2", p2, cfg("1.0.0", `,"mode":"l3"`, ipam("10.92.0.12/24")))
}

// l3s mode is created and verified like the others.
func TestL3SMode(t *testing.T) {
	l := newLAN(t, true)
	pod := nstest.New(t)
	c := cfg("1.0.0", `,"mode":"l3s","mtu":1400`, sublinktest.Static("10.92.1.11/24"))
	out, cerr := plugintest.Invoke(l.host, l.env, Plugin(), l.call("ADD", "s", pod, c))
	if cerr != nil {
		// l3s needs CONFIG_IPVLAN_L3S (netfilter) besides ipvlan; nothing
		// may be left behind when the kernel refuses it.
		sublinktest.OnlyLinks(t, pod, "lo")
		t.Skipf("skipped: kernel refuses l3s (CONFIG_IPVLAN_L3S): %v", cerr)
	}
	r, err := current.NewResult(out)
	if err != nil {
		t.Fatal(err)
	}
	res, _ := current.GetResult(r)
	link := sublinktest.Link(t, pod, "eth0")
	if iv := link.(*netlink.IPVlan); iv.Mode != netlink.IPVLAN_MODE_L3S || link.Attrs().MTU != 1400 {
		t.Errorf("mode %v mtu %d", iv.Mode, link.Attrs().MTU)
	}
	l.must(t, "CHECK", "s", pod, sublinktest.WithPrev(t, c, res))
	l.must(t, "DEL", "s", pod, c)
	sublinktest.OnlyLinks(t, pod, "lo")
}

// Chained after a plugin that names the master: no master, no ipam; the
// previous result's address goes onto the ipvlan; CHECK finds the master
// in the result; a result naming two interfaces is refused.
func TestChained(t *testing.T) {
	l := newLAN(t, true)
	pod := nstest.New(t)
	prev := `{"cniVersion":"1.0.0","interfaces":[{"name":"ltiv0"}],"ips":[{"address":"10.91.0.31/24","interface":0}]}`
	c := []byte(`{"cniVersion":"1.0.0","name":"ltivc","type":"ipvlan","prevResult":` + prev + `}`)
	r := l.add(t, "c", pod, c)
	if len(r.Interfaces) != 2 || r.Interfaces[0].Name != "ltiv0" || r.Interfaces[1].Name != "eth0" || r.Interfaces[1].Sandbox != pod.Path() {
		t.Fatalf("interfaces %v", r.Interfaces)
	}
	if len(r.IPs) != 1 || *r.IPs[0].Interface != 1 || r.IPs[0].Address.String() != "10.91.0.31/24" {
		t.Fatalf("IPs %v", r.IPs)
	}
	if got, want := sublinktest.Link(t, pod, "eth0").Attrs().ParentIndex, sublinktest.Link(t, l.host, "ltiv0").Attrs().Index; got != want {
		t.Errorf("stacked on %d, want ltiv0 (%d)", got, want)
	}
	sublinktest.MustReach(t, pod, "10.91.0.1:7000", "10.91.0.31")
	check := []byte(`{"cniVersion":"1.0.0","name":"ltivc","type":"ipvlan"}`)
	l.must(t, "CHECK", "c", pod, sublinktest.WithPrev(t, check, r))
	l.must(t, "DEL", "c", pod, check)
	sublinktest.OnlyLinks(t, pod, "lo")

	two := []byte(`{"cniVersion":"1.0.0","name":"ltivc","type":"ipvlan","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"ltiv0"},{"name":"ltiv9"}]}}`)
	l.fail(t, "ADD", "c", pod, two, 7, "master:", "exactly one")
	sublinktest.OnlyLinks(t, pod, "lo")
}

// A master that carries a macvlan cannot carry an ipvlan: ADD fails,
// naming the master, and leaves nothing.
func TestMasterWithMacvlan(t *testing.T) {
	l := newLAN(t, true)
	pod := nstest.New(t)
	h := nfttest.Handle(t, l.host)
	la := netlink.NewLinkAttrs()
	la.Name, la.ParentIndex = "ltmv0", sublinktest.Link(t, l.host, "ltiv0").Attrs().Index
	if err := h.LinkAdd(&netlink.Macvlan{LinkAttrs: la, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
		t.Fatalf("macvlan on the master: %v", err)
	}
	l.fail(t, "ADD", "m", pod, cfg("1.0.0", "", sublinktest.Static("10.91.0.41/24")), 999, "ltiv0")
	sublinktest.OnlyLinks(t, pod, "lo")
	sublinktest.OnlyLinks(t, l.host, "lo", "ltiv0", "ltmv0")
}

// Requests that are wrong before any ipvlan exists fail the same on every
// kernel, naming what is wrong and leaving nothing.
func TestBadRequests(t *testing.T) {
	l := newLAN(t, false)
	pod := nstest.New(t)
	l.fail(t, "ADD", "b", pod, []byte(`{"cniVersion":"1.0.0","name":"ltiv","type":"ipvlan","master":"ltnone"}`), 7, "master:", "ltnone")
	l.fail(t, "ADD", "b", pod, cfg("1.0.0", `,"mtu":1501`, ""), 7, "mtu:", "1500")
	l.fail(t, "ADD", "b", pod, cfg("1.0.0", `,"mode":"l9"`, ""), 7, "mode:")
	l.fail(t, "STATUS", "", nil, []byte(`{"cniVersion":"1.1.0","name":"ltiv","type":"ipvlan","master":"ltnone"}`), 50, "ltnone")
	l.must(t, "STATUS", "", nil, cfg("1.1.0", "", ""))
	sublinktest.OnlyLinks(t, pod, "lo")
	sublinktest.Wire(t, pod, "eth0", l.peer, "ltpeer9")
	l.fail(t, "ADD", "b", pod, cfg("1.0.0", "", ""), 4, "CNI_IFNAME")
	l.must(t, "DEL", "b", pod, cfg("1.0.0", "", "")) // not an ipvlan: left alone
	sublinktest.OnlyLinks(t, pod, "lo", "eth0")
}

// On a kernel without ipvlan, ADD says so and leaves nothing behind.
func TestWithoutKernelSupport(t *testing.T) {
	l := newLAN(t, false)
	h := nfttest.Handle(t, l.host)
	la := netlink.NewLinkAttrs()
	la.Name, la.ParentIndex = "ltprobe", sublinktest.Link(t, l.host, "ltiv0").Attrs().Index
	if err := h.LinkAdd(ipvlanProbe(la)); err == nil {
		_ = h.LinkDel(ipvlanProbe(la))
		t.Skip("skipped: this kernel creates ipvlan links; the test covers kernels that cannot")
	}
	pod := nstest.New(t)
	l.fail(t, "ADD", "n", pod, cfg("1.0.0", "", sublinktest.Static("10.91.0.51/24")), 999, "kernel lacks ipvlan", "ltiv0")
	sublinktest.OnlyLinks(t, pod, "lo")
	sublinktest.OnlyLinks(t, l.host, "lo", "ltiv0")
}
