package vlan

import (
	"fmt"
	"net"
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

// The tests that create VLAN links skip, saying why, on kernels without
// 8021q; TestWithoutKernelSupport runs only there.

// trunk is a node whose device ltvl0 is wired to a peer namespace standing
// for a switch port that carries VLAN 100 (10.93.0.1/24 on ltpeer0.100).
type trunk struct {
	host, peer *netns.NS
	env        *pluginmain.Env
	path       string
}

func vlanProbe(la netlink.LinkAttrs) netlink.Link { return &netlink.Vlan{LinkAttrs: la, VlanId: 42} }

func newTrunk(t *testing.T, needVlan bool) *trunk {
	t.Helper()
	tr := &trunk{host: nstest.New(t), peer: nstest.New(t)}
	if needVlan {
		sublinktest.RequireKind(t, tr.host, "vlan (8021q)", vlanProbe)
	}
	tr.env, tr.path, _ = sublinktest.Env(t)
	sublinktest.Wire(t, tr.host, "ltvl0", tr.peer, "ltpeer0")
	if needVlan {
		vlanIf(t, tr.peer, "ltpeer0", 100, "10.93.0.1/24")
		sublinktest.Serve(t, tr.peer, "10.93.0.1:7000")
	}
	return tr
}

// vlanIf creates "<parent>.<id>" in ns, up, with addr.
func vlanIf(t *testing.T, ns *netns.NS, parent string, id int, addr string) {
	t.Helper()
	h := nfttest.Handle(t, ns)
	la := netlink.NewLinkAttrs()
	la.Name = fmt.Sprintf("%s.%d", parent, id)
	la.ParentIndex = sublinktest.Link(t, ns, parent).Attrs().Index
	la.Flags = net.FlagUp
	if err := h.LinkAdd(&netlink.Vlan{LinkAttrs: la, VlanId: id}); err != nil {
		t.Fatalf("create %s: %v", la.Name, err)
	}
	nfttest.Addr(t, ns, la.Name, addr)
}

func (tr *trunk) call(cmd, id string, ns *netns.NS, ifName string, conf []byte) plugintest.Call {
	return plugintest.Call{Command: cmd, ContainerID: id, NS: ns, IfName: ifName, Path: tr.path, Conf: conf}
}

func (tr *trunk) add(t *testing.T, id string, ns *netns.NS, conf []byte) *current.Result {
	t.Helper()
	return plugintest.Add(t, tr.host, tr.env, Plugin(), tr.call("ADD", id, ns, "eth0", conf))
}

func (tr *trunk) must(t *testing.T, cmd, id string, ns *netns.NS, conf []byte) {
	t.Helper()
	plugintest.Must(t, tr.host, tr.env, Plugin(), cmd, tr.call(cmd, id, ns, "eth0", conf))
}

func (tr *trunk) fail(t *testing.T, cmd, id string, ns *netns.NS, conf []byte, code uint, words ...string) {
	t.Helper()
	out, cerr := plugintest.Invoke(tr.host, tr.env, Plugin(), tr.call(cmd, id, ns, "eth0", conf))
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

func cfg(version string, id int, extra, ipam string) []byte {
	s := fmt.Sprintf(`{"cniVersion":%q,"name":"ltvl","type":"vlan","master":"ltvl0","vlanId":%d%s`, version, id, extra)
	if ipam != "" {
		s += `,"ipam":` + ipam
	}
	return []byte(s + "}")
}

// A pod on VLAN 100 reaches the switch port's VLAN 100 address; a pod on
// VLAN 200 does not; a second pod on VLAN 100 of the same master is
// refused naming vlanId; CHECK verifies the id; DEL is idempotent.
func TestTaggedTraffic(t *testing.T) {
	tr := newTrunk(t, true)
	p1, p2, p3 := nstest.New(t), nstest.New(t), nstest.New(t)
	c1 := cfg("1.1.0", 100, "", sublinktest.Static("10.93.0.11/24"))
	r1 := tr.add(t, "p1", p1, c1)
	link := sublinktest.Link(t, p1, "eth0")
	if v, ok := link.(*netlink.Vlan); !ok || v.VlanId != 100 {
		t.Fatalf("eth0 is %s %+v, want VLAN 100", link.Type(), link)
	}
	if link.Attrs().HardwareAddr.String() != sublinktest.Link(t, tr.host, "ltvl0").Attrs().HardwareAddr.String() {
		t.Errorf("VLAN interface MAC %s differs from the master's", link.Attrs().HardwareAddr)
	}
	sublinktest.OnlyLinks(t, tr.host, "lo", "ltvl0")
	sublinktest.Serve(t, p1, "10.93.0.11:7000")
	sublinktest.MustReach(t, p1, "10.93.0.1:7000", "10.93.0.11")
	sublinktest.MustReach(t, tr.peer, "10.93.0.11:7000", "10.93.0.1")

	c2 := cfg("1.1.0", 200, "", sublinktest.Static("10.93.0.12/24"))
	tr.add(t, "p2", p2, c2)
	sublinktest.MustNotReach(t, p2, "10.93.0.1:7000")

	tr.fail(t, "ADD", "p3", p3, cfg("1.1.0", 100, "", sublinktest.Static("10.93.0.13/24")), 7, "vlanId", "100", "ltvl0")
	sublinktest.OnlyLinks(t, p3, "lo")

	tr.must(t, "CHECK", "p1", p1, sublinktest.WithPrev(t, c1, r1))
	tr.fail(t, "CHECK", "p1", p1, sublinktest.WithPrev(t, cfg("1.1.0", 101, "", sublinktest.Static("10.93.0.11/24")), r1), 999, "VLAN id is 100")
	for i := 0; i < 2; i++ {
		tr.must(t, "DEL", "p1", p1, c1)
	}
	sublinktest.OnlyLinks(t, p1, "lo")
	plugintest.Must(t, tr.host, tr.env, Plugin(), "DEL", plugintest.Call{ContainerID: "p2", NetnsPath: "/run/netns/lt-vlan-gone", IfName: "eth0", Path: tr.path, Conf: c2})
	// The id is free again once its pod is gone.
	tr.add(t, "p3", p3, cfg("1.1.0", 100, "", sublinktest.Static("10.93.0.13/24")))
	sublinktest.MustReach(t, p3, "10.93.0.1:7000", "10.93.0.13")
	tr.must(t, "DEL", "p3", p3, cfg("1.1.0", 100, "", sublinktest.Static("10.93.0.13/24")))
}

// Every configuration version, layer 2 only (no ipam) with an MTU; before
// 0.3.0 there is no result without addresses, and ADD says so up front.
func TestVersionsL2(t *testing.T) {
	tr := newTrunk(t, true)
	for i, v := range []string{"0.1.0", "0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			pod := nstest.New(t)
			c := cfg(v, 300+i, `,"mtu":1400`, "")
			if v < "0.3.0" {
				tr.fail(t, "ADD", "v", pod, c, 7, "ipam:", v)
				sublinktest.OnlyLinks(t, pod, "lo")
				return
			}
			r := tr.add(t, "v", pod, c)
			link := sublinktest.Link(t, pod, "eth0")
			if link.Attrs().MTU != 1400 || link.Attrs().Flags&net.FlagUp == 0 || len(r.IPs) != 0 {
				t.Errorf("mtu %d flags %v ips %v", link.Attrs().MTU, link.Attrs().Flags, r.IPs)
			}
			if v >= "0.4.0" {
				tr.must(t, "CHECK", "v", pod, sublinktest.WithPrev(t, c, r))
			}
			tr.must(t, "DEL", "v", pod, c)
			sublinktest.OnlyLinks(t, pod, "lo")
		})
	}
}

// linkInContainer: the trunk is already in the pod; the VLAN interface is
// stacked on it there.
func TestLinkInContainer(t *testing.T) {
	tr := newTrunk(t, true)
	pod, far := nstest.New(t), nstest.New(t)
	sublinktest.Wire(t, pod, "lttrunk", far, "ltfar0")
	vlanIf(t, far, "ltfar0", 300, "10.93.3.1/24")
	sublinktest.Serve(t, far, "10.93.3.1:7000")
	c := []byte(`{"cniVersion":"1.0.0","name":"ltvlc","type":"vlan","master":"lttrunk","vlanId":300,"linkInContainer":true,"ipam":` + sublinktest.Static("10.93.3.2/24") + `}`)
	r := plugintest.Add(t, tr.host, tr.env, Plugin(), tr.call("ADD", "c", pod, "net1", c))
	sublinktest.MustReach(t, pod, "10.93.3.1:7000", "10.93.3.2")
	plugintest.Must(t, tr.host, tr.env, Plugin(), "CHECK", tr.call("CHECK", "c", pod, "net1", sublinktest.WithPrev(t, c, r)))
	plugintest.Must(t, tr.host, tr.env, Plugin(), "DEL", tr.call("DEL", "c", pod, "net1", c))
	sublinktest.OnlyLinks(t, pod, "lo", "lttrunk")
}

// Requests that are wrong before any VLAN link exists fail the same on
// every kernel.
func TestBadRequests(t *testing.T) {
	tr := newTrunk(t, false)
	pod := nstest.New(t)
	tr.fail(t, "ADD", "b", pod, []byte(`{"cniVersion":"1.0.0","name":"ltvl","type":"vlan","master":"ltnone","vlanId":5}`), 7, "master:", "ltnone")
	tr.fail(t, "ADD", "b", pod, cfg("1.0.0", 5, `,"mtu":9000`, ""), 7, "mtu:", "1500")
	tr.fail(t, "ADD", "b", pod, cfg("1.0.0", 0, "", ""), 7, "vlanId:")
	tr.fail(t, "STATUS", "", nil, []byte(`{"cniVersion":"1.1.0","name":"ltvl","type":"vlan","master":"ltnone","vlanId":5}`), 50, "ltnone")
	tr.must(t, "STATUS", "", nil, cfg("1.1.0", 5, "", ""))
	sublinktest.OnlyLinks(t, pod, "lo")
	tr.must(t, "DEL", "b", pod, cfg("1.0.0", 5, "", ""))
}

// On a kernel without 8021q, ADD says so and leaves nothing behind.
func TestWithoutKernelSupport(t *testing.T) {
	tr := newTrunk(t, false)
	h := nfttest.Handle(t, tr.host)
	la := netlink.NewLinkAttrs()
	la.Name, la.ParentIndex = "ltprobe", sublinktest.Link(t, tr.host, "ltvl0").Attrs().Index
	if err := h.LinkAdd(vlanProbe(la)); err == nil {
		_ = h.LinkDel(vlanProbe(la))
		t.Skip("skipped: this kernel creates VLAN links; the test covers kernels that cannot")
	}
	pod := nstest.New(t)
	tr.fail(t, "ADD", "n", pod, cfg("1.0.0", 5, "", sublinktest.Static("10.93.0.51/24")), 999, "kernel lacks vlan", "8021q")
	sublinktest.OnlyLinks(t, pod, "lo")
	sublinktest.OnlyLinks(t, tr.host, "lo", "ltvl0")
}
