package bridge

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/ipam/hostlocal"
	"linen.dev/linen/internal/plugins/ipam/static"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
	"linen.dev/linen/internal/sysctl"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-bridge-") }

func conf(version, br, extra, ipam string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"ltnet-%s","type":"bridge","bridge":%q,"isGateway":true%s,"ipam":%s}`,
		version, br, br, extra, ipam))
}

func hostLocal(dir, subnet string) string {
	return fmt.Sprintf(`{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}]}`, dir, subnet)
}

// TestAddCheckDelTraffic: two pods on one bridge reach each other and the
// gateway; CHECK passes; DEL removes everything; DEL again succeeds.
func TestAddCheckDelTraffic(t *testing.T) {
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			host := nstest.New(t)
			p1, p2 := nstest.New(t), nstest.New(t)
			env := plugintest.Env(pluginmain.NewRegistry(hostlocal.Plugin())) // IPAM in process
			br := "ltbr" + strings.ReplaceAll(v, ".", "")
			dir := t.TempDir()
			c := conf(v, br, "", hostLocal(dir, "10.77.0.0/24"))
			r1 := plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "c1", NS: p1, IfName: "eth0", Conf: c})
			r2 := plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "c2", NS: p2, IfName: "eth0", Conf: c})
			ip1 := r1.IPs[0].Address.IP.String()
			ip2 := r2.IPs[0].Address.IP.String()
			if ip1 == ip2 {
				t.Fatalf("same IP %s twice", ip1)
			}
			if err := plugintest.Ping(p1, ip2); err != nil {
				t.Errorf("pod1 -> pod2: %v", err)
			}
			if err := plugintest.Ping(p2, "10.77.0.1"); err != nil {
				t.Errorf("pod2 -> gateway: %v", err)
			}
			if v >= "0.4.0" {
				cc := withPrev(t, c, r1)
				plugintest.Must(t, host, env, Plugin(), "CHECK", plugintest.Call{ContainerID: "c1", NS: p1, IfName: "eth0", Conf: cc})
			}
			for i := 0; i < 2; i++ {
				plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "c1", NS: p1, IfName: "eth0", Conf: c})
			}
			assertNoLink(t, p1, "eth0")
			if len(r1.Interfaces) > 1 {
				assertNoLink(t, host, r1.Interfaces[1].Name)
			}
			// DEL with the namespace unmounted, its file left behind (no
			// namespace any more), then gone: both release the lease.
			file := filepath.Join(t.TempDir(), "unmounted-netns")
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "c2", NetnsPath: file, IfName: "eth0", Conf: c})
			plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "c2", NetnsPath: "/run/netns/lt-bridge-gone", IfName: "eth0", Conf: c})
			for _, ip := range []string{ip1, ip2} {
				if _, err := os.Stat(filepath.Join(dir, "ltnet-"+br, ip)); !os.IsNotExist(err) {
					t.Errorf("lease %s not released by DEL: %v", ip, err)
				}
			}
		})
	}
}

// An ADD whose result cannot be expressed in the configuration's version
// (0.2.0 results need an address; a layer-2 network has none) fails and
// leaves no interface behind.
func TestAddUnreportableResult(t *testing.T) {
	host, pod := nstest.New(t), nstest.New(t)
	env := plugintest.Env(pluginmain.NewRegistry())
	c := []byte(`{"cniVersion":"0.2.0","name":"ltl2v","type":"bridge","bridge":"ltbrl2v","ipam":{}}`)
	out, cerr := plugintest.Invoke(host, env, Plugin(), plugintest.Call{Command: "ADD", ContainerID: "u1", NS: pod, IfName: "eth0", Conf: c})
	if cerr == nil {
		t.Fatalf("ADD succeeded: %s", out)
	}
	assertNoLink(t, pod, "eth0")
	links, err := nfttest.Handle(t, host).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Type() == "veth" {
			t.Errorf("veth %s left in the host namespace", l.Attrs().Name)
		}
	}
}

func withPrev(t *testing.T, conf []byte, prev *current.Result) []byte {
	t.Helper()
	s := string(conf)
	var head struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(conf, &head); err != nil {
		t.Fatal(err)
	}
	conv, err := prev.GetAsVersion(head.CNIVersion)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(conv)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s[:len(s)-1] + `,"prevResult":` + string(b) + `}`)
}

func assertNoLink(t *testing.T, ns *netns.NS, name string) {
	t.Helper()
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.LinkByName(name); err == nil {
		t.Errorf("link %q still exists in %s", name, ns.Path())
	}
}

// ipMasq and macspoofchk: the pod's traffic to another subnet leaves with
// the node's address; a frame with a forged source MAC is dropped; DEL
// (also without prevResult) leaves no element.
func TestMasqAndSpoofCheck(t *testing.T) {
	host, pod, outside := nstest.New(t), nstest.New(t), nstest.New(t)
	env := plugintest.Env(pluginmain.NewRegistry(hostlocal.Plugin()))
	// The node reaches "outside" (192.0.2.0/24) over a veth.
	nfttest.Veth(t, host, "ltup0", outside, "ltdown0")
	nfttest.Addr(t, host, "ltup0", "192.0.2.1/24")
	nfttest.Addr(t, outside, "ltdown0", "192.0.2.2/24")
	nfttest.EchoTCP(t, outside, "192.0.2.2:7000")

	c := conf("1.1.0", "ltbrm", `,"ipMasq":true,"macspoofchk":true`, hostLocal(t.TempDir(), "10.79.0.0/24"))
	r := plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "m1", NS: pod, IfName: "eth0", Conf: c})
	got, err := nfttest.TCP(pod, "192.0.2.2:7000", 3*time.Second)
	if err != nil {
		t.Fatalf("pod -> outside: %v", err)
	}
	if from := nfttest.From(got); from.String() != "192.0.2.1" {
		t.Errorf("outside saw source %s, want the node's 192.0.2.1 (masquerade)", from)
	}
	plugintest.Must(t, host, env, Plugin(), "CHECK", plugintest.Call{ContainerID: "m1", NS: pod, IfName: "eth0", Conf: withPrev(t, c, r)})

	// Forge the pod's MAC: the bridge must drop its frames.
	h := nfttest.Handle(t, pod)
	l, _ := h.LinkByName("eth0")
	if err := h.LinkSetHardwareAddr(l, []byte{0x02, 0xde, 0xad, 0xbe, 0xef, 0x01}); err != nil {
		t.Fatal(err)
	}
	if err := plugintest.Ping(pod, "10.79.0.1"); err == nil {
		t.Error("ping with a forged MAC got through the spoof check")
	}
	if err := h.LinkSetHardwareAddr(l, mustMAC(t, r.Interfaces[2].Mac)); err != nil {
		t.Fatal(err)
	}
	if err := plugintest.Ping(pod, "10.79.0.1"); err != nil {
		t.Errorf("ping with the pod's own MAC: %v", err)
	}

	// DEL without prevResult (as containerd's second DEL), then again.
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "m1", NS: pod, IfName: "eth0", Conf: c})
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "m1", IfName: "eth0", Conf: c})
	if rs := nfttest.Nft(t, host, "list", "ruleset"); strings.Contains(rs, "elements") {
		t.Errorf("elements left after DEL:\n%s", rs)
	}
}

// macspoofchk on a layer-2 network (no IPAM): the check applies all the
// same (addresses come from elsewhere); CHECK verifies it; DEL removes it.
func TestSpoofCheckL2(t *testing.T) {
	host, p1, p2 := nstest.New(t), nstest.New(t), nstest.New(t)
	env := plugintest.Env(pluginmain.NewRegistry())
	c := []byte(`{"cniVersion":"1.1.0","name":"ltl2s","type":"bridge","bridge":"ltbrl2s","macspoofchk":true,"ipam":{}}`)
	r1 := plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "l1", NS: p1, IfName: "eth0", Conf: c})
	plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "l2", NS: p2, IfName: "eth0", Conf: c})
	nfttest.Addr(t, p1, "eth0", "10.83.0.1/24")
	nfttest.Addr(t, p2, "eth0", "10.83.0.2/24")
	if err := plugintest.Ping(p1, "10.83.0.2"); err != nil {
		t.Fatalf("pod1 -> pod2 with its own MAC: %v", err)
	}
	plugintest.Must(t, host, env, Plugin(), "CHECK", plugintest.Call{ContainerID: "l1", NS: p1, IfName: "eth0", Conf: withPrev(t, c, r1)})

	h := nfttest.Handle(t, p1)
	l, _ := h.LinkByName("eth0")
	if err := h.LinkSetHardwareAddr(l, []byte{0x02, 0xde, 0xad, 0xbe, 0xef, 0x02}); err != nil {
		t.Fatal(err)
	}
	if err := plugintest.Ping(p1, "10.83.0.2"); err == nil {
		t.Error("ping with a forged MAC got through the spoof check of a layer-2 network")
	}

	for _, id := range []string{"l1", "l2"} {
		plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: id, IfName: "eth0", Conf: c})
	}
	if rs := nfttest.Nft(t, host, "list", "ruleset"); strings.Contains(rs, "elements") {
		t.Errorf("elements left after DEL:\n%s", rs)
	}
}

// A DEL whose configuration does not validate (here a VLAN out of range,
// as a stricter release might judge a cached configuration) still removes
// the pod's interface, lease and netfilter elements.
func TestDelInvalidConfig(t *testing.T) {
	host, pod := nstest.New(t), nstest.New(t)
	env := plugintest.Env(pluginmain.NewRegistry(hostlocal.Plugin()))
	dir := t.TempDir()
	c := conf("1.1.0", "ltbri", `,"ipMasq":true,"macspoofchk":true`, hostLocal(dir, "10.84.0.0/24"))
	r := plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "i1", NS: pod, IfName: "eth0", Conf: c})
	bad := conf("1.1.0", "ltbri", `,"ipMasq":true,"macspoofchk":true,"vlan":5000`, hostLocal(dir, "10.84.0.0/24"))
	if _, cerr := plugintest.Invoke(host, env, Plugin(), plugintest.Call{Command: "CHECK", ContainerID: "i1", NS: pod, IfName: "eth0", Conf: bad}); cerr == nil {
		t.Fatal("the configuration validates; the test needs one that does not")
	}
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "i1", NS: pod, IfName: "eth0", Conf: bad})
	assertNoLink(t, pod, "eth0")
	if _, err := os.Stat(filepath.Join(dir, "ltnet-ltbri", r.IPs[0].Address.IP.String())); !os.IsNotExist(err) {
		t.Errorf("lease not released: %v", err)
	}
	if rs := nfttest.Nft(t, host, "list", "ruleset"); strings.Contains(rs, "elements") {
		t.Errorf("elements left after DEL:\n%s", rs)
	}
	// Not even a name: nothing to go by, an error.
	if _, cerr := plugintest.Invoke(host, env, Plugin(), plugintest.Call{Command: "DEL", ContainerID: "i1", IfName: "eth0", Conf: []byte(`{"cniVersion":"1.1.0","type":"bridge"}`)}); cerr == nil {
		t.Error("DEL without a network name succeeded")
	}
}

// Two networks on one interface name: the second ADD fails on the name,
// and the DEL that follows it (as runtimes send) leaves the first network's
// interface alone; the first network's DEL then removes it.
func TestDelOtherNetworksInterface(t *testing.T) {
	host, pod := nstest.New(t), nstest.New(t)
	env := plugintest.Env(pluginmain.NewRegistry(hostlocal.Plugin()))
	ca := conf("1.1.0", "ltbroa", "", hostLocal(t.TempDir(), "10.85.0.0/24"))
	cb := conf("1.1.0", "ltbrob", "", hostLocal(t.TempDir(), "10.86.0.0/24"))
	plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "o1", NS: pod, IfName: "eth0", Conf: ca})
	if _, cerr := plugintest.Invoke(host, env, Plugin(), plugintest.Call{Command: "ADD", ContainerID: "o1", NS: pod, IfName: "eth0", Conf: cb}); cerr == nil {
		t.Fatal("second network's ADD on a taken name succeeded")
	}
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "o1", NS: pod, IfName: "eth0", Conf: cb})
	if _, err := nfttest.Handle(t, pod).LinkByName("eth0"); err != nil {
		t.Fatalf("the other network's DEL took eth0: %v", err)
	}
	if err := plugintest.Ping(pod, "10.85.0.1"); err != nil {
		t.Errorf("first network's pod -> gateway after the other DEL: %v", err)
	}
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "o1", NS: pod, IfName: "eth0", Conf: ca})
	assertNoLink(t, pod, "eth0")
}

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A bridge that carries another address of the gateway's subnet (after a
// subnet change) refuses ADD, leaving nothing, unless forceAddress replaces
// the address.
func TestForceAddress(t *testing.T) {
	host, pod := nstest.New(t), nstest.New(t)
	env := plugintest.Env(pluginmain.NewRegistry(hostlocal.Plugin()))
	nfttest.Bridge(t, host, "ltbrf")
	nfttest.Addr(t, host, "ltbrf", "10.81.0.200/24")
	dir := t.TempDir()
	c := conf("1.0.0", "ltbrf", "", hostLocal(dir, "10.81.0.0/24"))
	out, cerr := plugintest.Invoke(host, env, Plugin(), plugintest.Call{Command: "ADD", ContainerID: "f1", NS: pod, IfName: "eth0", Conf: c})
	if cerr == nil || !strings.Contains(cerr.Msg, "forceAddress") {
		t.Fatalf("ADD without forceAddress: %s %v", out, cerr)
	}
	assertNoLink(t, pod, "eth0")
	c = conf("1.0.0", "ltbrf", `,"forceAddress":true`, hostLocal(dir, "10.81.0.0/24"))
	plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "f1", NS: pod, IfName: "eth0", Conf: c})
	h := nfttest.Handle(t, host)
	br, _ := h.LinkByName("ltbrf")
	addrs, _ := h.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.81.0.1/24" {
		t.Errorf("bridge addresses %v, want only 10.81.0.1/24", addrs)
	}
	if err := plugintest.Ping(pod, "10.81.0.1"); err != nil {
		t.Error(err)
	}
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "f1", NS: pod, IfName: "eth0", Conf: c})
}

// Options on the pod interface: requested MAC (runtimeConfig), MTU on both
// veth ends, dual stack with default routes from isDefaultGateway, and IPv6
// traffic to the gateway without waiting for DAD.
func TestDualStackMTUAndMAC(t *testing.T) {
	host, pod := nstest.New(t), nstest.New(t)
	env := plugintest.Env(pluginmain.NewRegistry(hostlocal.Plugin()))
	ipam := fmt.Sprintf(`{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.82.0.0/24"}],[{"subnet":"fd00:82::/64"}]]}`, t.TempDir())
	c := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ltds","type":"bridge","bridge":"ltbrds","isDefaultGateway":true,"mtu":1400,"runtimeConfig":{"mac":"02:00:00:00:82:01"},"ipam":%s}`, ipam))
	r := plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "ds", NS: pod, IfName: "eth0", Conf: c})
	if len(r.IPs) != 2 {
		t.Fatalf("IPs %v, want one per family", r.IPs)
	}
	if r.Interfaces[2].Mac != "02:00:00:00:82:01" {
		t.Errorf("pod MAC %s", r.Interfaces[2].Mac)
	}
	h := nfttest.Handle(t, pod)
	l, _ := h.LinkByName("eth0")
	if l.Attrs().MTU != 1400 || l.Attrs().HardwareAddr.String() != "02:00:00:00:82:01" {
		t.Errorf("eth0 mtu %d mac %s", l.Attrs().MTU, l.Attrs().HardwareAddr)
	}
	hh := nfttest.Handle(t, host)
	hv, _ := hh.LinkByName(r.Interfaces[1].Name)
	if hv.Attrs().MTU != 1400 {
		t.Errorf("host veth mtu %d", hv.Attrs().MTU)
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, _ := h.RouteList(l, fam)
		found := false
		for _, rt := range routes {
			if rt.Gw != nil && (rt.Dst == nil || rt.Dst.IP.IsUnspecified()) {
				found = true
			}
		}
		if !found {
			t.Errorf("no default route for family %d: %v", fam, routes)
		}
	}
	for _, gw := range []string{"10.82.0.1", "fd00:82::1"} {
		if err := plugintest.Ping(pod, gw); err != nil {
			t.Errorf("ping %s: %v", gw, err)
		}
	}
	// A pod with IPv6 keeps its link-local address; the bridge port
	// carries IPv6 frames without any IPv6 of its own.
	ll := false
	for _, a := range ipv6Addrs(t, pod, "eth0") {
		ll = ll || a.IP.IsLinkLocalUnicast()
	}
	if !ll {
		t.Error("dual-stack pod has no IPv6 link-local address")
	}
	assertPortNoIPv6(t, host, r.Interfaces[1].Name)
	plugintest.Must(t, host, env, Plugin(), "CHECK", plugintest.Call{ContainerID: "ds", NS: pod, IfName: "eth0", Conf: withPrev(t, c, r)})
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "ds", NS: pod, IfName: "eth0", Conf: c})
}

// requireVlanFiltering skips when the kernel's bridge has no VLAN filtering.
func requireVlanFiltering(t *testing.T, host *netns.NS) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = "ltvfprobe"
	on := true
	h := nfttest.Handle(t, host)
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la, VlanFiltering: &on}); err != nil {
		t.Skipf("skipped: this kernel's bridge has no VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING): %v", err)
	}
	_ = h.LinkDel(&netlink.Bridge{LinkAttrs: la})
}

// staticPods adds pods with fixed addresses to one bridge network whose
// options are extra.
func staticPods(t *testing.T, host *netns.NS) func(id, extra, ip string) *netns.NS {
	env := plugintest.Env(pluginmain.NewRegistry(static.Plugin()))
	return func(id, extra, ip string) *netns.NS {
		ns := nstest.New(t)
		c := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ltvl","type":"bridge","bridge":"ltbrvl"%s,"ipam":{"type":"static","addresses":[{"address":"%s/24"}]}}`, extra, ip))
		plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: id, NS: ns, IfName: "eth0", Conf: c})
		t.Cleanup(func() {
			plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: id, NS: ns, IfName: "eth0", Conf: c})
		})
		return ns
	}
}

// VLAN filtering: pods on VLAN 10 reach each other, a pod on VLAN 20 on the
// same bridge does not reach them.
func TestVlanFiltering(t *testing.T) {
	host := nstest.New(t)
	requireVlanFiltering(t, host)
	add := staticPods(t, host)
	a := add("v10a", `,"vlan":10`, "10.83.0.2")
	add("v10b", `,"vlan":10`, "10.83.0.3")
	add("v20", `,"vlan":20`, "10.83.0.4")
	add("trunk", `,"vlanTrunk":[{"minID":10,"maxID":20}]`, "10.83.0.9")
	if err := plugintest.Ping(a, "10.83.0.3"); err != nil {
		t.Errorf("same VLAN: %v", err)
	}
	if err := plugintest.Ping(a, "10.83.0.4"); err == nil {
		t.Error("a pod on VLAN 10 reached one on VLAN 20")
	}
}

// Isolated ports do not reach each other but do reach ordinary ports.
func TestPortIsolation(t *testing.T) {
	host := nstest.New(t)
	add := staticPods(t, host)
	i1 := add("iso1", `,"portIsolation":true`, "10.83.0.5")
	add("iso2", `,"portIsolation":true`, "10.83.0.6")
	add("open3", ``, "10.83.0.7")
	if err := plugintest.Ping(i1, "10.83.0.6"); err == nil {
		t.Error("two isolated ports reached each other")
	}
	if err := plugintest.Ping(i1, "10.83.0.7"); err != nil {
		t.Errorf("isolated port to a normal port: %v", err)
	}
}

// A VLAN network's gateway lives on "<bridge>.<vlan>", which needs the
// kernel's 8021q support.
func TestVlanGateway(t *testing.T) {
	host, pod := nstest.New(t), nstest.New(t)
	requireVlanFiltering(t, host)
	h := nfttest.Handle(t, host)
	la := netlink.NewLinkAttrs()
	la.Name = "ltprobe"
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}
	br, _ := h.LinkByName("ltprobe")
	vla := netlink.NewLinkAttrs()
	vla.Name, vla.ParentIndex = "ltprobe.5", br.Attrs().Index
	if err := h.LinkAdd(&netlink.Vlan{LinkAttrs: vla, VlanId: 5}); err != nil {
		t.Skipf("skipped: this kernel cannot create VLAN interfaces (8021q module missing): %v", err)
	}
	env := plugintest.Env(pluginmain.NewRegistry(hostlocal.Plugin()))
	c := conf("1.0.0", "ltbrvg", `,"vlan":7`, hostLocal(t.TempDir(), "10.84.0.0/24"))
	plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "vg", NS: pod, IfName: "eth0", Conf: c})
	if err := plugintest.Ping(pod, "10.84.0.1"); err != nil {
		t.Errorf("pod -> VLAN gateway: %v", err)
	}
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "vg", NS: pod, IfName: "eth0", Conf: c})
}

// disableContainerInterface leaves the pod's interface down and unaddressed;
// promiscMode puts the bridge in promiscuous mode.
func TestNoContainerInterfaceAndPromisc(t *testing.T) {
	host, pod := nstest.New(t), nstest.New(t)
	env := plugintest.Env(pluginmain.NewRegistry())
	c := []byte(`{"cniVersion":"1.0.0","name":"ltl2","type":"bridge","bridge":"ltbrl2","promiscMode":true,"disableContainerInterface":true}`)
	r := plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "l2", NS: pod, IfName: "eth0", Conf: c})
	if len(r.IPs) != 0 {
		t.Errorf("IPs %v, want none", r.IPs)
	}
	l, err := nfttest.Handle(t, pod).LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().Flags&net.FlagUp != 0 {
		t.Error("eth0 is up")
	}
	br, _ := nfttest.Handle(t, host).LinkByName("ltbrl2")
	if br.Attrs().Promisc == 0 {
		t.Error("bridge is not promiscuous")
	}
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "l2", NS: pod, IfName: "eth0", Conf: c})
}

// A bridge port carries no IPv6 of its own, an IPv4-only pod gets no IPv6
// link-local address, and the bridge the plugin creates does not snoop
// multicast: none of them makes work for every other pod at a pod's start.
// The pod still reaches its gateway and another pod.
func TestQuietPorts(t *testing.T) {
	host, p1, p2 := nstest.New(t), nstest.New(t), nstest.New(t)
	env := plugintest.Env(pluginmain.NewRegistry(hostlocal.Plugin()))
	c := conf("1.1.0", "ltbrq", "", hostLocal(t.TempDir(), "10.84.0.0/24"))
	r1 := plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "q1", NS: p1, IfName: "eth0", Conf: c})
	r2 := plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "q2", NS: p2, IfName: "eth0", Conf: c})
	if err := plugintest.Ping(p1, r2.IPs[0].Address.IP.String()); err != nil {
		t.Errorf("pod to pod: %v", err)
	}
	if err := plugintest.Ping(p1, "10.84.0.1"); err != nil {
		t.Errorf("pod to gateway: %v", err)
	}
	assertPortNoIPv6(t, host, r1.Interfaces[1].Name)
	if a := ipv6Addrs(t, p1, "eth0"); len(a) != 0 {
		t.Errorf("IPv4-only pod has IPv6 addresses %v", a)
	}
	if on := snooping(t, host, "ltbrq"); on {
		t.Error("the bridge the plugin created snoops multicast")
	}
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "q1", NS: p1, IfName: "eth0", Conf: c})
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "q2", NS: p2, IfName: "eth0", Conf: c})
}

// multicastSnooping: true creates a snooping bridge; an existing bridge
// keeps its own setting, whatever the configuration says.
func TestMulticastSnooping(t *testing.T) {
	host := nstest.New(t)
	env := plugintest.Env(pluginmain.NewRegistry(hostlocal.Plugin()))
	dir := t.TempDir()
	n := 0
	step := func(br, extra string, want bool) {
		t.Helper()
		n++
		id := fmt.Sprintf("s%d", n)
		pod := nstest.New(t)
		c := conf("1.0.0", br, extra, hostLocal(dir, "10.85.0.0/24"))
		plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: id, NS: pod, IfName: "eth0", Conf: c})
		if got := snooping(t, host, br); got != want {
			t.Errorf("%s with %q: snooping %v, want %v", br, extra, got, want)
		}
		plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: id, NS: pod, IfName: "eth0", Conf: c})
	}
	step("ltbrs1", `,"multicastSnooping":true`, true)
	// A bridge made by someone else, with the kernel's default (on).
	la := netlink.NewLinkAttrs()
	la.Name = "ltbrs2"
	if err := nfttest.Handle(t, host).LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}
	if !snooping(t, host, "ltbrs2") {
		t.Skip("skipped: this kernel's bridges do not snoop multicast by default (CONFIG_BRIDGE_IGMP_SNOOPING off)")
	}
	step("ltbrs2", ``, true)
	step("ltbrs2", `,"multicastSnooping":false`, true)
}

func snooping(t *testing.T, ns *netns.NS, br string) bool {
	t.Helper()
	l, err := nfttest.Handle(t, ns).LinkByName(br)
	if err != nil {
		t.Fatal(err)
	}
	b, ok := l.(*netlink.Bridge)
	if !ok || b.MulticastSnooping == nil {
		t.Fatalf("%s: no bridge attributes (%T)", br, l)
	}
	return *b.MulticastSnooping
}

func ipv6Addrs(t *testing.T, ns *netns.NS, ifName string) []netlink.Addr {
	t.Helper()
	h := nfttest.Handle(t, ns)
	l, err := h.LinkByName(ifName)
	if err != nil {
		t.Fatal(err)
	}
	a, err := h.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// assertPortNoIPv6: the bridge port has IPv6 disabled and no address.
func assertPortNoIPv6(t *testing.T, host *netns.NS, port string) {
	t.Helper()
	var v string
	if err := host.Do(func() (err error) {
		v, err = sysctl.Get(sysctl.Link("ipv6", port, "disable_ipv6"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if v != "1" {
		t.Errorf("port %s: disable_ipv6 = %s, want 1", port, v)
	}
	if a := ipv6Addrs(t, host, port); len(a) != 0 {
		t.Errorf("port %s has IPv6 addresses %v", port, a)
	}
}
