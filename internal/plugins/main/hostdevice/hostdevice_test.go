package hostdevice

import (
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
	"linen.dev/linen/internal/plugins/main/sublink/sublinktest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

// node is a test node whose device lthd0 (a veth; alias "rack 3 uplink",
// MTU 1450, up) leads to a peer namespace standing for the network the
// device is on (10.94.0.1/24, fd94::1/64).
type node struct {
	host, peer *netns.NS
	env        *pluginmain.Env
	path       string
	log        *sublinktest.Log
	dir        string // dataDir
	p          *pluginmain.Plugin
	mac        string
	index      int
}

func newNode(t *testing.T) *node {
	t.Helper()
	n := &node{host: nstest.New(t), peer: nstest.New(t), dir: t.TempDir(), p: Plugin()}
	n.env, n.path, n.log = sublinktest.Env(t)
	sublinktest.Wire(t, n.host, "lthd0", n.peer, "ltpeer0", "10.94.0.1/24", "fd94::1/64")
	sublinktest.Serve(t, n.peer, "10.94.0.1:7000")
	h := nfttest.Handle(t, n.host)
	l := sublinktest.Link(t, n.host, "lthd0")
	if err := h.LinkSetAlias(l, "rack 3 uplink"); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMTU(l, 1450); err != nil {
		t.Fatal(err)
	}
	n.mac, n.index = l.Attrs().HardwareAddr.String(), l.Attrs().Index
	return n
}

func (n *node) cfg(version, sel, ipam string) []byte {
	s := fmt.Sprintf(`{"cniVersion":%q,"name":"lthd","type":"host-device","dataDir":%q%s`, version, n.dir, sel)
	if ipam != "" {
		s += `,"ipam":` + ipam
	}
	return []byte(s + "}")
}

func (n *node) call(cmd, id string, ns *netns.NS, conf []byte) plugintest.Call {
	return plugintest.Call{Command: cmd, ContainerID: id, NS: ns, IfName: "eth1", Path: n.path, Conf: conf}
}

func (n *node) add(t *testing.T, id string, ns *netns.NS, conf []byte) *current.Result {
	t.Helper()
	return plugintest.Add(t, n.host, n.env, n.p, n.call("ADD", id, ns, conf))
}

func (n *node) must(t *testing.T, cmd, id string, ns *netns.NS, conf []byte) {
	t.Helper()
	plugintest.Must(t, n.host, n.env, n.p, cmd, n.call(cmd, id, ns, conf))
}

func (n *node) fail(t *testing.T, cmd, id string, ns *netns.NS, conf []byte, code uint, words ...string) {
	t.Helper()
	out, cerr := plugintest.Invoke(n.host, n.env, n.p, n.call(cmd, id, ns, conf))
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

func (n *node) statePath(id string) string { return filepath.Join(n.dir, "lthd", id+":eth1") }

// home asserts that lthd0 is back on the node as it was before ADD: same
// MAC, MTU 1450, up, its alias, no address left from the pod.
func (n *node) home(t *testing.T, alias string) {
	t.Helper()
	l := sublinktest.Link(t, n.host, "lthd0")
	at := l.Attrs()
	if at.HardwareAddr.String() != n.mac || at.MTU != 1450 || at.Flags&net.FlagUp == 0 || at.Alias != alias {
		t.Errorf("lthd0 back with MAC %s MTU %d flags %v alias %q; want %s 1450 up %q", at.HardwareAddr, at.MTU, at.Flags, at.Alias, n.mac, alias)
	}
	addrs, _ := nfttest.Handle(t, n.host).AddrList(l, netlink.FAMILY_V4)
	if len(addrs) != 0 {
		t.Errorf("lthd0 kept the pod's addresses %v", addrs)
	}
}

// The device moves into the pod under CNI_IFNAME and carries the pod's
// traffic both ways; CHECK passes; DEL gives it back as it was (name,
// alias, MAC, MTU, up) and removes the record; DEL again succeeds.
func TestMoveAndGiveBack(t *testing.T) {
	n := newNode(t)
	pod := nstest.New(t)
	c := n.cfg("1.1.0", `,"device":"lthd0"`, sublinktest.Static("10.94.0.2/24", "fd94::2/64"))
	r := n.add(t, "c", pod, c)
	sublinktest.OnlyLinks(t, n.host, "lo")
	link := sublinktest.Link(t, pod, "eth1")
	if link.Attrs().HardwareAddr.String() != n.mac || link.Attrs().Alias != "lthd0" {
		t.Errorf("eth1 in the pod: MAC %s alias %q", link.Attrs().HardwareAddr, link.Attrs().Alias)
	}
	if len(r.Interfaces) != 1 || r.Interfaces[0].Name != "eth1" || r.Interfaces[0].Mac != n.mac || r.Interfaces[0].Sandbox != pod.Path() || r.Interfaces[0].Mtu != 1450 {
		t.Errorf("result interfaces %+v", r.Interfaces[0])
	}
	if _, err := os.Stat(n.statePath("c")); err != nil {
		t.Errorf("no record: %v", err)
	}
	sublinktest.Serve(t, pod, "10.94.0.2:7000")
	sublinktest.MustReach(t, pod, "10.94.0.1:7000", "10.94.0.2")
	sublinktest.MustReach(t, n.peer, "10.94.0.2:7000", "10.94.0.1")
	sublinktest.Serve(t, n.peer, "[fd94::1]:7000")
	sublinktest.MustReach(t, pod, "[fd94::1]:7000", "fd94::2")
	n.must(t, "CHECK", "c", pod, sublinktest.WithPrev(t, c, r))

	n.must(t, "DEL", "c", pod, c)
	sublinktest.OnlyLinks(t, pod, "lo")
	n.home(t, "rack 3 uplink")
	if _, err := os.Stat(n.statePath("c")); !os.IsNotExist(err) {
		t.Errorf("record left: %v", err)
	}
	n.must(t, "DEL", "c", pod, c)
	n.must(t, "DEL", "c", nil, c)
	n.home(t, "rack 3 uplink")
}

// Every configuration version, layer 2 only: versions before 0.3.0 have
// no result without addresses, so ADD refuses them before moving anything.
func TestVersions(t *testing.T) {
	n := newNode(t)
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			pod := nstest.New(t)
			c := n.cfg(v, `,"device":"lthd0"`, "")
			if v < "0.3.0" {
				n.fail(t, "ADD", "v", pod, c, 7, "ipam:", v)
				sublinktest.OnlyLinks(t, pod, "lo")
				n.home(t, "rack 3 uplink")
				return
			}
			r := n.add(t, "v", pod, c)
			if l := sublinktest.Link(t, pod, "eth1"); l.Attrs().Flags&net.FlagUp == 0 {
				t.Error("eth1 is down")
			}
			if v >= "0.4.0" {
				n.must(t, "CHECK", "v", pod, sublinktest.WithPrev(t, c, r))
			}
			n.must(t, "DEL", "v", pod, c)
			n.home(t, "rack 3 uplink")
		})
	}
}

// Every selector finds the device: hwaddr (in any case), and through a
// fake sysfs: pciBusID, kernelpath, runtimeConfig.deviceID as a PCI
// address and as an auxiliary device; the PCI address reaches the result.
// A sysfs entry whose index is another device's is refused.
func TestSelectorsMove(t *testing.T) {
	n := newNode(t)
	s := newSysfs(t)
	s.pci("0000:00:05.0", "virtio-pci", map[string]int{"lthd0": n.index})
	s.aux("0000:00:09.0", "mlx5_core.sf.2", map[string]int{"lthd0": n.index})
	s.pci("0000:00:0a.0", "virtio-pci", map[string]int{"lthd0": n.index + 100})
	n.p = newPlugin(s.root)
	cases := []struct{ sel, pci string }{
		{`,"hwaddr":"` + strings.ToUpper(n.mac) + `"`, "0000:00:05.0"},
		{`,"device":"lthd0"`, "0000:00:05.0"},
		{`,"pciBusID":"00:05.0"`, "0000:00:05.0"},
		{`,"kernelpath":"/sys/devices/pci0000:00/0000:00:05.0"`, "0000:00:05.0"},
		{`,"runtimeConfig":{"deviceID":"0000:00:05.0"}`, "0000:00:05.0"},
		{`,"runtimeConfig":{"deviceID":"mlx5_core.sf.2"}`, "0000:00:09.0"},
	}
	for _, tc := range cases {
		pod := nstest.New(t)
		c := n.cfg("1.1.0", tc.sel, "")
		r := n.add(t, "s", pod, c)
		if r.Interfaces[0].PciID != tc.pci {
			t.Errorf("%s: pciID %q, want %q", tc.sel, r.Interfaces[0].PciID, tc.pci)
		}
		sublinktest.Link(t, pod, "eth1")
		n.must(t, "DEL", "s", pod, c)
		n.home(t, "rack 3 uplink")
	}
	pod := nstest.New(t)
	n.fail(t, "ADD", "s", pod, n.cfg("1.1.0", `,"pciBusID":"0000:00:0a.0"`, ""), 7, "pciBusID:", "index")
	n.fail(t, "ADD", "s", pod, n.cfg("1.1.0", `,"pciBusID":"0000:00:0b.0"`, ""), 7, "pciBusID:", "no device")
	sublinktest.OnlyLinks(t, pod, "lo")
	n.home(t, "rack 3 uplink")
}

// The pod's namespace is deleted with the device inside: a veth dies with
// it (its peer too). DEL without the namespace succeeds, releases the
// lease, removes the record and logs that the device is gone.
func TestNamespaceGoneVirtualDevice(t *testing.T) {
	n := newNode(t)
	pod, err := netns.NewNamed(netns.DefaultDir, nstest.Name())
	if err != nil {
		t.Fatal(err)
	}
	path := pod.Path()
	t.Cleanup(func() { _ = netns.DeleteNamed(path) })
	ipamDir := t.TempDir()
	c := n.cfg("1.1.0", `,"device":"lthd0"`, fmt.Sprintf(`{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.94.0.0/24"}]]}`, ipamDir))
	r := n.add(t, "g", pod, c)
	pod.Close()
	if err := netns.DeleteNamed(path); err != nil {
		t.Fatal(err)
	}
	// The kernel tears the namespace down asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := nfttest.Handle(t, n.peer).LinkByName("ltpeer0"); err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := nfttest.Handle(t, n.peer).LinkByName("ltpeer0"); err == nil {
		t.Fatal("the veth outlived its namespace for 10 s")
	}
	plugintest.Must(t, n.host, n.env, n.p, "DEL", plugintest.Call{ContainerID: "g", NetnsPath: path, IfName: "eth1", Path: n.path, Conf: c})
	if _, err := os.Stat(n.statePath("g")); !os.IsNotExist(err) {
		t.Errorf("record left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ipamDir, "lthd", r.IPs[0].Address.IP.String())); !os.IsNotExist(err) {
		t.Errorf("lease left: %v", err)
	}
	if log := n.log.String(); !strings.Contains(log, "the device is gone") || !strings.Contains(log, "device=lthd0") || !strings.Contains(log, n.mac) {
		t.Errorf("DEL did not warn about the lost device:\n%s", log)
	}
}

// A physical device returns to the node when its namespace dies, under
// the pod's name for it or "dev<N>": simulated by moving the pod's
// interface to the node and renaming it. DEL without the namespace finds
// it by its alias and MAC and restores it.
func TestReturnedByKernel(t *testing.T) {
	n := newNode(t)
	pod := nstest.New(t)
	c := n.cfg("1.0.0", `,"device":"lthd0"`, sublinktest.Static("10.94.0.3/24"))
	n.add(t, "k", pod, c)
	ph := nfttest.Handle(t, pod)
	if err := ph.LinkSetNsFd(sublinktest.Link(t, pod, "eth1"), n.host.Fd()); err != nil {
		t.Fatal(err)
	}
	hh := nfttest.Handle(t, n.host)
	if err := hh.LinkSetName(sublinktest.Link(t, n.host, "eth1"), "dev7"); err != nil {
		t.Fatal(err)
	}
	plugintest.Must(t, n.host, n.env, n.p, "DEL", plugintest.Call{ContainerID: "k", NetnsPath: "/run/netns/lt-hostdev-gone", IfName: "eth1", Path: n.path, Conf: c})
	sublinktest.OnlyLinks(t, n.host, "lo", "lthd0")
	n.home(t, "rack 3 uplink")
}

// A failure after the move (a route whose gateway is not on the link)
// gives the device back as it was and leaves no record.
func TestFailedAddGivesBack(t *testing.T) {
	n := newNode(t)
	pod := nstest.New(t)
	ipam := `{"type":"static","addresses":[{"address":"10.94.0.4/24"}],"routes":[{"dst":"10.99.0.0/16","gw":"192.0.2.1"}]}`
	n.fail(t, "ADD", "f", pod, n.cfg("1.0.0", `,"device":"lthd0"`, ipam), 999, "10.99.0.0/16")
	sublinktest.OnlyLinks(t, pod, "lo")
	n.home(t, "rack 3 uplink")
	if _, err := os.Stat(n.statePath("f")); !os.IsNotExist(err) {
		t.Errorf("record left: %v", err)
	}
}

// Bad requests fail naming the problem, and the device stays as it was.
func TestBadRequests(t *testing.T) {
	n := newNode(t)
	pod := nstest.New(t)
	n.fail(t, "ADD", "b", pod, n.cfg("1.0.0", "", ""), 7, "no device selected")
	n.fail(t, "ADD", "b", pod, n.cfg("1.0.0", `,"device":"lthd0","hwaddr":"`+n.mac+`"`, ""), 7, "device and hwaddr")
	n.fail(t, "ADD", "b", pod, n.cfg("1.0.0", `,"device":"ltnone"`, ""), 7, "device:", "ltnone")
	n.fail(t, "ADD", "b", pod, n.cfg("1.0.0", `,"hwaddr":"02:00:00:00:00:99"`, ""), 7, "hwaddr:", "02:00:00:00:00:99")
	// A device the kernel keeps in its namespace.
	nfttest.Bridge(t, n.host, "ltbr0")
	n.fail(t, "ADD", "b", pod, n.cfg("1.0.0", `,"device":"ltbr0"`, ""), 999, "ltbr0", "cannot move")
	if l := sublinktest.Link(t, n.host, "ltbr0"); l.Attrs().Alias != "" {
		t.Errorf("ltbr0 kept alias %q", l.Attrs().Alias)
	}
	// The node's uplink.
	nfttest.Addr(t, n.host, "lthd0", "10.94.0.254/24")
	nfttest.Route(t, n.host, "default4", "10.94.0.1")
	n.fail(t, "ADD", "b", pod, n.cfg("1.0.0", `,"device":"lthd0"`, ""), 7, "device:", "default route")
	sublinktest.OnlyLinks(t, pod, "lo")
	// CNI_IFNAME taken in the pod.
	other := nstest.New(t)
	sublinktest.Wire(t, pod, "eth1", other, "ltother0")
	n.fail(t, "ADD", "b", pod, n.cfg("1.0.0", `,"device":"ltbr0"`, ""), 4, "CNI_IFNAME")
	// DEL leaves an eth1 it has no record of (and no alias) in the pod.
	n.must(t, "DEL", "b", pod, n.cfg("1.0.0", "", ""))
	sublinktest.OnlyLinks(t, pod, "lo", "eth1")
	if !strings.Contains(n.log.String(), "no record") {
		t.Errorf("DEL did not log the unknown interface:\n%s", n.log)
	}
	if l := sublinktest.Link(t, n.host, "lthd0"); l.Attrs().Alias != "rack 3 uplink" {
		t.Errorf("lthd0 alias %q", l.Attrs().Alias)
	}
	if ents, _ := os.ReadDir(filepath.Join(n.dir, "lthd")); len(ents) != 0 {
		t.Errorf("records left: %v", ents)
	}
}

// The original name was taken on the node meanwhile: DEL fails saying so,
// keeps the record, and gives the device back once the name is free.
func TestNameTakenOnReturn(t *testing.T) {
	n := newNode(t)
	pod := nstest.New(t)
	c := n.cfg("1.0.0", `,"device":"lthd0"`, "")
	n.add(t, "t", pod, c)
	h := nfttest.Handle(t, n.host)
	imp := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lthd0"}, PeerName: "ltimp1"}
	if err := h.LinkAdd(imp); err != nil {
		t.Fatal(err)
	}
	n.fail(t, "DEL", "t", pod, c, 999, "lthd0")
	if _, err := os.Stat(n.statePath("t")); err != nil {
		t.Errorf("record dropped after a failed DEL: %v", err)
	}
	if err := h.LinkDel(sublinktest.Link(t, n.host, "lthd0")); err != nil {
		t.Fatal(err)
	}
	n.must(t, "DEL", "t", pod, c)
	sublinktest.OnlyLinks(t, pod, "lo")
	sublinktest.OnlyLinks(t, n.host, "lo", "lthd0")
	n.home(t, "rack 3 uplink")
}

// Without its record (a reference plugin's ADD, or a lost dataDir) DEL
// and CHECK go by the alias the device carries.
func TestAliasOnly(t *testing.T) {
	n := newNode(t)
	pod := nstest.New(t)
	c := n.cfg("1.0.0", `,"device":"lthd0"`, "")
	r := n.add(t, "a", pod, c)
	if err := os.Remove(n.statePath("a")); err != nil {
		t.Fatal(err)
	}
	n.must(t, "CHECK", "a", pod, sublinktest.WithPrev(t, c, r))
	n.must(t, "DEL", "a", pod, c)
	sublinktest.OnlyLinks(t, pod, "lo")
	// Without a record the original alias is unknown: ADD's is cleared.
	l := sublinktest.Link(t, n.host, "lthd0")
	if l.Attrs().Alias != "" || l.Attrs().HardwareAddr.String() != n.mac {
		t.Errorf("lthd0 alias %q MAC %s", l.Attrs().Alias, l.Attrs().HardwareAddr)
	}
}

// CHECK notices a device that is down, has another MAC or lost its
// address; it needs prevResult.
func TestCheckDetectsDrift(t *testing.T) {
	n := newNode(t)
	pod := nstest.New(t)
	c := n.cfg("1.0.0", `,"device":"lthd0"`, sublinktest.Static("10.94.0.5/24"))
	r := n.add(t, "d", pod, c)
	check := sublinktest.WithPrev(t, c, r)
	n.must(t, "CHECK", "d", pod, check)
	n.fail(t, "CHECK", "d", pod, c, 7, "prevResult")
	h := nfttest.Handle(t, pod)
	link := sublinktest.Link(t, pod, "eth1")
	addr, _ := netlink.ParseAddr("10.94.0.5/24")
	if err := h.AddrDel(link, addr); err != nil {
		t.Fatal(err)
	}
	n.fail(t, "CHECK", "d", pod, check, 999, "10.94.0.5/24")
	if err := h.LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	n.fail(t, "CHECK", "d", pod, check, 999, "down")
	if err := h.LinkSetHardwareAddr(link, []byte{2, 0, 0, 0, 0x94, 5}); err != nil {
		t.Fatal(err)
	}
	n.fail(t, "CHECK", "d", pod, check, 999, "MAC")
	// DEL restores the MAC the pod changed.
	n.must(t, "DEL", "d", pod, c)
	n.home(t, "rack 3 uplink")
}

// GC gives back the devices of attachments the runtime no longer lists,
// from namespaces that still exist, keeps valid ones, and keeps (and
// logs) records it cannot read.
func TestGC(t *testing.T) {
	n := newNode(t)
	pod := nstest.New(t)
	c := n.cfg("1.1.0", `,"device":"lthd0"`, "")
	n.add(t, "gc", pod, c)
	gc := func(valid string) []byte {
		return []byte(strings.TrimSuffix(string(c), "}") + `,"cni.dev/valid-attachments":` + valid + `}`)
	}
	n.must(t, "GC", "", nil, gc(`[{"containerID":"gc","ifname":"eth1"}]`))
	sublinktest.Link(t, pod, "eth1")
	if err := os.WriteFile(filepath.Join(n.dir, "lthd", "other:eth1"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.must(t, "GC", "", nil, gc(`[]`))
	sublinktest.OnlyLinks(t, pod, "lo")
	n.home(t, "rack 3 uplink")
	if _, err := os.Stat(n.statePath("gc")); !os.IsNotExist(err) {
		t.Errorf("record left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "lthd", "other:eth1")); err != nil {
		t.Errorf("unreadable record removed: %v", err)
	}
	if !strings.Contains(n.log.String(), "unreadable state record") {
		t.Errorf("GC did not log the unreadable record:\n%s", n.log)
	}
	// The runtime's DEL after GC has nothing left to do.
	n.must(t, "DEL", "gc", pod, c)
}

// A PCI device bound to a userspace driver: nothing moves; the result
// names the device and carries IPAM's address; CHECK follows the driver
// binding; DEL succeeds.
func TestUserspaceDevice(t *testing.T) {
	n := newNode(t)
	s := newSysfs(t)
	s.pci("0000:00:07.0", "vfio-pci", nil)
	n.p = newPlugin(s.root)
	pod := nstest.New(t)
	c := n.cfg("1.1.0", `,"runtimeConfig":{"deviceID":"0000:00:07.0"}`, sublinktest.Static("10.94.0.7/24"))
	r := n.add(t, "u", pod, c)
	if len(r.Interfaces) != 1 || r.Interfaces[0].PciID != "0000:00:07.0" || r.Interfaces[0].Mac != "" || len(r.IPs) != 1 {
		t.Fatalf("result %+v %v", r.Interfaces, r.IPs)
	}
	sublinktest.OnlyLinks(t, pod, "lo")
	n.must(t, "CHECK", "u", pod, sublinktest.WithPrev(t, c, r))
	drv := filepath.Join(s.root, "devices", "pci0000:00", "0000:00:07.0", "driver")
	if err := os.Remove(drv); err != nil {
		t.Fatal(err)
	}
	n.fail(t, "CHECK", "u", pod, sublinktest.WithPrev(t, c, r), 999, "not to a userspace driver")
	n.must(t, "DEL", "u", pod, c)
	n.home(t, "rack 3 uplink")
}
