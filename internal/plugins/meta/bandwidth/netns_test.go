package bandwidth

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

const both = `"ingressRate": 50000000, "ingressBurst": 1000000, "egressRate": 40000000, "egressBurst": 800000`

// ADD programs both shapers with the computed numbers and adds the IFB to
// the result; CHECK passes and notices a changed rate; DEL removes it all,
// and again.
func TestAddCheckDel(t *testing.T) {
	n := newNode(t)
	requireIFB(t, n)
	p := n.ptpPod(t, 1)
	conf := bwConf(t, "1.1.0", both, p.prev)
	out := n.must(t, "ADD", p, conf)

	var res current.Result
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	name := IFBName("ltbw", p.id, "eth0")
	ifb, err := n.ifb(p)
	if err != nil {
		t.Fatalf("IFB %s: %v", name, err)
	}
	if got := len(res.Interfaces); got != len(p.prev.Interfaces)+1 || res.Interfaces[got-1].Name != name ||
		res.Interfaces[got-1].Mac != ifb.Attrs().HardwareAddr.String() {
		t.Errorf("result interfaces %s: want the previous ones and %s (%s)", out, name, ifb.Attrs().HardwareAddr)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.IP.String() != p.addr {
		t.Errorf("result IPs changed: %s", out)
	}
	veth := n.hostVeth(t, p)
	if ifb.Attrs().MTU != veth.Attrs().MTU || ifb.Attrs().Flags&net.FlagUp == 0 || ifb.Attrs().Alias != ifbAlias("ltbw", p.id, "eth0") {
		t.Errorf("IFB %s: mtu %d (veth %d), flags %v, alias %q", name, ifb.Attrs().MTU, veth.Attrs().MTU, ifb.Attrs().Flags, ifb.Attrs().Alias)
	}
	tick := netlink.TickInUsec()
	for _, c := range []struct {
		link netlink.Link
		want bucket
	}{{veth, newBucket(Shape{50000000, 1000000}, tick)}, {ifb, newBucket(Shape{40000000, 800000}, tick)}} {
		q, err := rootQdisc(n.h, c.link)
		if err != nil {
			t.Fatal(err)
		}
		tbf, ok := q.(*netlink.Tbf)
		if !ok {
			t.Fatalf("root qdisc of %s: %v, want tbf", c.link.Attrs().Name, q)
		}
		if tbf.Rate != c.want.Rate || tbf.Buffer != c.want.Buffer || tbf.Limit != c.want.Limit || tbf.Handle != rootHandle {
			t.Errorf("tbf of %s: %+v, want %+v", c.link.Attrs().Name, tbf, c.want)
		}
	}
	if err := checkRedirect(n.h, veth, ifb); err != nil {
		t.Error(err)
	}
	n.must(t, "CHECK", p, conf)

	// Someone changes the egress rate: CHECK says so.
	tbf := &netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifb.Attrs().Index, Handle: rootHandle, Parent: netlink.HANDLE_ROOT},
		Rate: 1000000, Limit: 100000, Buffer: 100000}
	if err := n.h.QdiscReplace(tbf); err != nil {
		t.Fatal(err)
	}
	if _, err := n.call("CHECK", p, conf); err == nil || !strings.Contains(err.Msg, "egress: tbf of \""+name+"\" has rate 1000000 B/s") {
		t.Errorf("CHECK after a rate change: %v", err)
	}
	// A CHECK with other limits than ADD's fails too.
	other := bwConf(t, "1.1.0", `"ingressRate": 60000000, "ingressBurst": 1000000`, p.prev)
	if _, err := n.call("CHECK", p, other); err == nil || !strings.Contains(err.Msg, "ingress:") {
		t.Errorf("CHECK with another ingress rate: %v", err)
	}

	for i := 0; i < 2; i++ {
		n.must(t, "DEL", p, conf)
		if _, err := n.ifb(p); err == nil {
			t.Fatalf("DEL %d left the IFB", i)
		}
		if q, _ := rootQdisc(n.h, veth); q != nil {
			t.Errorf("DEL %d left %s on the veth", i, q.Type())
		}
		if q, _ := findQdisc(n.h, veth, netlink.HANDLE_INGRESS); q != nil {
			t.Errorf("DEL %d left the ingress qdisc", i)
		}
	}
	if _, err := n.call("CHECK", p, conf); err == nil {
		t.Error("CHECK after DEL succeeded")
	}
}

// DEL finds the IFB by its name alone: without the pod's namespace (gone,
// or CNI_NETNS empty) and without prevResult or limits.
func TestDelWithoutNetnsOrPrevResult(t *testing.T) {
	n := newNode(t)
	requireIFB(t, n)
	p := n.ptpPod(t, 1)
	for _, tc := range []struct {
		name  string
		netns string
		conf  []byte
	}{
		{"netns gone", "/run/netns/lt-bandwidth-gone", bwConf(t, "1.1.0", both, p.prev)},
		{"no netns, no prevResult, no limits", "", bwConf(t, "1.1.0", "", nil)},
		{"invalid configuration", "", bwConf(t, "1.1.0", `"ingressRate": -1`, nil)},
		{"old version", "", bwConf(t, "0.3.1", "", nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n.must(t, "ADD", p, bwConf(t, "1.1.0", both, p.prev))
			c := plugintest.Call{Command: "DEL", ContainerID: p.id, NetnsPath: tc.netns, IfName: "eth0", Path: n.path, Conf: tc.conf}
			if _, err := plugintest.Invoke(n.host, n.env, Plugin(), c); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if _, err := n.ifb(p); err == nil {
				t.Error("the IFB is still there")
			}
		})
	}
	// What DEL could not reach stays: the shapers on the veth (which the
	// interface plugin deletes next); a full DEL removes them.
	n.must(t, "DEL", p, bwConf(t, "1.1.0", "", nil))
	if q, _ := rootQdisc(n.h, n.hostVeth(t, p)); q != nil {
		t.Errorf("DEL with the namespace left %s on the veth", q.Type())
	}
}

// On a bridge pod prevResult lists the bridge, the host veth and the pod
// interface; the shaper goes on the veth.
func TestBridgePod(t *testing.T) {
	n := newNode(t)
	requireIFB(t, n)
	p := n.bridgePod(t, 1)
	conf := bwConf(t, "1.0.0", both, p.prev)
	n.must(t, "ADD", p, conf)
	veth := n.hostVeth(t, p)
	if veth.Attrs().MasterIndex == 0 {
		t.Fatalf("%s is not a bridge port", veth.Attrs().Name)
	}
	if q, _ := rootQdisc(n.h, veth); q == nil || q.Type() != "tbf" {
		t.Errorf("veth root qdisc %v, want tbf", q)
	}
	br, err := n.h.LinkByName("lbwbr0")
	if err != nil {
		t.Fatal(err)
	}
	if q, _ := rootQdisc(n.h, br); q != nil {
		t.Errorf("the bridge got a %s qdisc", q.Type())
	}
	n.must(t, "CHECK", p, conf)
	n.must(t, "DEL", p, conf)
}

// Each version: ADD returns prevResult (plus the IFB where the version
// has interfaces), CHECK where the version has it, DEL.
func TestVersions(t *testing.T) {
	n := newNode(t)
	requireIFB(t, n)
	p := n.ptpPod(t, 1)
	for _, v := range Plugin().SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			conf := bwConf(t, v, both, p.prev)
			out := n.must(t, "ADD", p, conf)
			var head struct {
				CNIVersion string            `json:"cniVersion"`
				Interfaces []json.RawMessage `json:"interfaces"`
				IP4        json.RawMessage   `json:"ip4"`
				IPs        []json.RawMessage `json:"ips"`
			}
			if err := json.Unmarshal(out, &head); err != nil || head.CNIVersion != v {
				t.Fatalf("ADD result %s", out)
			}
			old := v == "0.1.0" || v == "0.2.0"
			if old && head.IP4 == nil || !old && (len(head.Interfaces) != len(p.prev.Interfaces)+1 || len(head.IPs) != 1) {
				t.Errorf("ADD result %s", out)
			}
			if _, err := n.ifb(p); err != nil {
				t.Errorf("no IFB: %v", err)
			}
			if v >= "0.4.0" {
				n.must(t, "CHECK", p, conf)
			}
			n.must(t, "DEL", p, conf)
			if _, err := n.ifb(p); err == nil {
				t.Error("DEL left the IFB")
			}
		})
	}
}

// Without limits the plugin changes nothing and passes prevResult on.
func TestPassThrough(t *testing.T) {
	n := newNode(t)
	p := n.ptpPod(t, 1)
	before := n.tcState(t, p)
	for _, extra := range []string{"", `"ingressRate": 0, "ingressBurst": 0`, `"runtimeConfig": {"bandwidth": {}}`,
		`"ingressRate": 8000, "ingressBurst": 80000, "runtimeConfig": {"bandwidth": {"ingressRate": 0}}`} {
		out := n.must(t, "ADD", p, bwConf(t, "1.1.0", extra, p.prev))
		want, _ := json.Marshal(p.prev)
		if string(out) != string(want) {
			t.Errorf("%s: result\n%s\nwant\n%s", extra, out, want)
		}
		n.must(t, "CHECK", p, bwConf(t, "1.1.0", extra, p.prev))
	}
	if after := n.tcState(t, p); after != before {
		t.Errorf("tc state changed: %s -> %s", before, after)
	}
	// No prevResult and no limits: an empty result.
	out := n.must(t, "ADD", p, bwConf(t, "1.1.0", "", nil))
	if string(out) != `{"cniVersion":"1.1.0"}` {
		t.Errorf("ADD without prevResult: %s", out)
	}
}

// Bad input: the error object has the right code and names the field, and
// nothing is left behind.
func TestBadInput(t *testing.T) {
	n := newNode(t)
	requireIFB(t, n)
	p := n.ptpPod(t, 1)
	before := n.tcState(t, p)
	tests := []struct {
		name string
		conf []byte
		code uint
		want string
	}{
		{"rate without burst", bwConf(t, "1.1.0", `"ingressRate": 1000000`, p.prev), 7, "ingressBurst: missing or 0"},
		{"negative", bwConf(t, "1.1.0", `"egressRate": -5, "egressBurst": 100`, p.prev), 7, "egressRate: -5 is not a whole number"},
		{"burst overflow", bwConf(t, "1.1.0", `"egressRate": 1000000, "egressBurst": 1e12`, p.prev), 7, "egressBurst: 1000000000000 bits is more than the maximum"},
		{"string", bwConf(t, "1.1.0", `"runtimeConfig": {"bandwidth": {"ingressRate": "1M", "ingressBurst": 1000}}`, p.prev), 7,
			`runtimeConfig.bandwidth.ingressRate: "1M" is a string`},
		{"burst below a frame", bwConf(t, "1.1.0", `"ingressRate": 1000000, "ingressBurst": 8000, "egressRate": 1000000, "egressBurst": 12104`, p.prev), 7,
			`ingressBurst: the bucket holds 1000 bytes, less than one full-size frame on`},
		{"both subnet lists", bwConf(t, "1.1.0", both+`, "shapedSubnets": ["10.0.0.0/8"], "unshapedSubnets": ["fd00::/8"]`, p.prev), 7,
			"shapedSubnets: cannot be combined with unshapedSubnets"},
		{"no prevResult", bwConf(t, "1.1.0", both, nil), 7, "prevResult: missing"},
		{"bad prevResult", []byte(`{"cniVersion":"1.1.0","name":"ltbw","type":"bandwidth","ingressRate":1000000,"ingressBurst":100000,"prevResult":{"ips":[{"address":"x"}]}}`), 6, "prevResult"},
		{"not JSON", []byte(`{"cniVersion":"1.1.0","name":"ltbw",`), 6, "stdin: not valid JSON"},
		{"unsupported version", bwConf(t, "2.0.0", both, nil), 1, "cniVersion"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.call("ADD", p, tc.conf)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			if err.Code != tc.code || !strings.Contains(err.Msg, tc.want) {
				t.Errorf("got code %d %q, want code %d with %q", err.Code, err.Msg, tc.code, tc.want)
			}
			if after := n.tcState(t, p); after != before {
				t.Errorf("tc state changed: %s -> %s", before, after)
			}
		})
	}
	// Both directions' bursts are reported at once.
	_, err := n.call("ADD", p, tests[4].conf)
	if err == nil || !strings.Contains(err.Msg, "egressBurst: the bucket holds 1513 bytes") {
		t.Errorf("second burst problem not reported: %v", err)
	}
	// Interface problems.
	bad := []struct {
		name   string
		ifName string
		code   uint
		want   string
	}{
		{"no such interface", "eth9", 4, `CNI_IFNAME: no interface "eth9"`},
	}
	for _, tc := range bad {
		c := plugintest.Call{Command: "ADD", ContainerID: p.id, NS: p.ns, IfName: tc.ifName, Path: n.path, Conf: bwConf(t, "1.1.0", both, p.prev)}
		_, err := plugintest.Invoke(n.host, n.env, Plugin(), c)
		if err == nil || err.Code != tc.code || !strings.Contains(err.Msg, tc.want) {
			t.Errorf("%s: %v, want code %d with %q", tc.name, err, tc.code, tc.want)
		}
	}
	if after := n.tcState(t, p); after != before {
		t.Errorf("tc state changed: %s -> %s", before, after)
	}
}

// A pod interface that is not a veth (macvlan here) cannot be shaped on
// the host; ADD says so and leaves nothing.
func TestNotVeth(t *testing.T) {
	n := newNode(t)
	requireIFB(t, n)
	p := &pod{ns: nstest.New(t), id: "mv"}
	// A macvlan "eth1" on a veth parent in the host, moved into the pod.
	parent := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lbwpar0"}, PeerName: "lbwpar1"}
	if err := n.h.LinkAdd(parent); err != nil {
		t.Fatal(err)
	}
	pl, _ := n.h.LinkByName("lbwpar0")
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "lbwmv0", ParentIndex: pl.Attrs().Index, Namespace: netlink.NsFd(p.ns.Fd())}, Mode: netlink.MACVLAN_MODE_BRIDGE}
	if err := n.h.LinkAdd(mv); err != nil {
		t.Skipf("skipped: cannot create a macvlan interface (%v)", err)
	}
	prev := &current.Result{CNIVersion: "1.1.0", Interfaces: []*current.Interface{{Name: "lbwmv0", Sandbox: p.ns.Path()}}}
	c := plugintest.Call{Command: "ADD", ContainerID: p.id, NS: p.ns, IfName: "lbwmv0", Path: n.path, Conf: bwConf(t, "1.1.0", both, prev)}
	_, err := plugintest.Invoke(n.host, n.env, Plugin(), c)
	if err == nil || err.Code != pluginmain.CodeInvalidConfig || !strings.Contains(err.Msg, `"lbwmv0" is a macvlan interface; bandwidth shapes veth pairs`) {
		t.Errorf("ADD on a macvlan: %v", err)
	}
	if _, err := n.h.LinkByName(IFBName("ltbw", p.id, "lbwmv0")); err == nil {
		t.Error("an IFB was left behind")
	}
}

// A foreign interface holding the IFB's name is neither replaced nor
// deleted: ADD fails, DEL leaves it.
func TestIFBNameTaken(t *testing.T) {
	n := newNode(t)
	requireIFB(t, n)
	p := n.ptpPod(t, 1)
	name := IFBName("ltbw", p.id, "eth0")
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := n.h.LinkAdd(&netlink.Ifb{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}
	before := n.tcState(t, p)
	_, err := n.call("ADD", p, bwConf(t, "1.1.0", both, p.prev))
	if err == nil || !strings.Contains(err.Msg, "the name is taken") {
		t.Errorf("ADD: %v", err)
	}
	if after := n.tcState(t, p); after != before {
		t.Errorf("tc state changed: %s -> %s", before, after)
	}
	n.must(t, "DEL", p, bwConf(t, "1.1.0", both, p.prev))
	if _, err := n.h.LinkByName(name); err != nil {
		t.Errorf("DEL deleted a foreign interface: %v", err)
	}
}

// GC deletes this network's IFBs of attachments that are not valid, and
// nothing else.
func TestGC(t *testing.T) {
	n := newNode(t)
	requireIFB(t, n)
	a, b := n.ptpPod(t, 1), n.ptpPod(t, 2)
	n.must(t, "ADD", a, bwConf(t, "1.1.0", both, a.prev))
	n.must(t, "ADD", b, bwConf(t, "1.1.0", both, b.prev))
	// Another network's IFB for the same container.
	otherNet := []byte(strings.Replace(string(bwConf(t, "1.1.0", both, a.prev)), `"name":"ltbw"`, `"name":"other"`, 1))
	c := plugintest.Call{Command: "ADD", ContainerID: a.id, NS: a.ns, IfName: "eth0", Path: n.path, Conf: otherNet}
	if _, err := plugintest.Invoke(n.host, n.env, Plugin(), c); err != nil {
		t.Fatal(err)
	}
	gc := bwConf(t, "1.1.0", fmt.Sprintf(`"cni.dev/valid-attachments": [{"containerID": %q, "ifname": "eth0"}]`, b.id), nil)
	if _, err := plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: "GC", Path: n.path, Conf: gc}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if _, err := n.ifb(a); err == nil {
		t.Error("GC left the stale IFB")
	}
	if _, err := n.ifb(b); err != nil {
		t.Errorf("GC deleted a valid attachment's IFB: %v", err)
	}
	if _, err := n.h.LinkByName(IFBName("other", a.id, "eth0")); err != nil {
		t.Errorf("GC deleted another network's IFB: %v", err)
	}
	if _, err := plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: "STATUS", Conf: bwConf(t, "1.1.0", "", nil)}); err != nil {
		t.Errorf("STATUS: %v", err)
	}
}

// Subnet lists: an HTB root with one shaped class and u32 filters on both
// sides; CHECK reads them back, DEL removes them.
func TestSubnetObjects(t *testing.T) {
	n := newNode(t)
	requireIFB(t, n)
	p := n.ptpPod(t, 1)
	for _, tc := range []struct {
		key     string
		listed  uint32
		defcls  uint32
		subnets string
	}{
		{"unshapedSubnets", rootHandle, 1, `["192.0.2.0/24", "2001:db8::/32"]`},
		{"shapedSubnets", shapedClass, 0, `["198.51.100.0/24", "10.0.0.0/8", "fd00::/8"]`},
	} {
		t.Run(tc.key, func(t *testing.T) {
			conf := bwConf(t, "1.1.0", both+`, "`+tc.key+`": `+tc.subnets, p.prev)
			n.must(t, "ADD", p, conf)
			veth := n.hostVeth(t, p)
			ifb, err := n.ifb(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range []netlink.Link{veth, ifb} {
				q, _ := rootQdisc(n.h, l)
				htb, ok := q.(*netlink.Htb)
				if !ok || htb.Defcls != tc.defcls {
					t.Errorf("%s root: %+v, want htb default %d", l.Attrs().Name, q, tc.defcls)
				}
				fs, err := n.h.FilterList(l, rootHandle)
				if err != nil {
					t.Fatal(err)
				}
				count := 0
				for _, f := range fs {
					if u, ok := f.(*netlink.U32); ok && u.Sel != nil {
						count++
						if u.ClassId != tc.listed {
							t.Errorf("%s filter to %s, want %s", l.Attrs().Name, netlink.HandleStr(u.ClassId), netlink.HandleStr(tc.listed))
						}
						if want := (u.Protocol == unix.ETH_P_IP) == (u.Priority == prioIPv4); !want {
							t.Errorf("filter protocol %#x at priority %d", u.Protocol, u.Priority)
						}
					}
				}
				if want := strings.Count(tc.subnets, ","); count != want+1 {
					t.Errorf("%s has %d subnet filters, want %d", l.Attrs().Name, count, want+1)
				}
			}
			// The shaped class queues as a TBF would: limit = 25 ms of the
			// rate + the burst, in bytes.
			for _, c := range []struct {
				link netlink.Link
				b    bucket
			}{{veth, newBucket(Shape{50000000, 1000000}, netlink.TickInUsec())}, {ifb, newBucket(Shape{40000000, 800000}, netlink.TickInUsec())}} {
				want := fmt.Sprintf("qdisc bfifo 2: parent 1:1 limit %db", c.b.Limit)
				if out := tcShow(t, n, "qdisc", "show", "dev", c.link.Attrs().Name); !strings.Contains(out, want) {
					t.Errorf("%s: want %q in\n%s", c.link.Attrs().Name, want, out)
				}
			}
			n.must(t, "CHECK", p, conf)
			// A missing filter is noticed.
			fs, _ := n.h.FilterList(veth, rootHandle)
			for _, f := range fs {
				if u, ok := f.(*netlink.U32); ok && u.Sel != nil && u.Protocol == unix.ETH_P_IPV6 {
					if err := n.h.FilterDel(f); err != nil {
						t.Fatal(err)
					}
					break
				}
			}
			if _, err := n.call("CHECK", p, conf); err == nil || !strings.Contains(err.Msg, "ingress: filters of") {
				t.Errorf("CHECK with a filter missing: %v", err)
			}
			n.must(t, "DEL", p, conf)
			if q, _ := rootQdisc(n.h, veth); q != nil {
				t.Errorf("DEL left %s", q.Type())
			}
		})
	}
}

// Limits from the runtime (the bandwidth capability) replace the
// configured ones.
func TestRuntimeConfigWins(t *testing.T) {
	n := newNode(t)
	requireIFB(t, n)
	p := n.ptpPod(t, 1)
	conf := bwConf(t, "1.1.0", both+`, "runtimeConfig": {"bandwidth": {"ingressRate": 30000000, "ingressBurst": 600000}}`, p.prev)
	n.must(t, "ADD", p, conf)
	q, _ := rootQdisc(n.h, n.hostVeth(t, p))
	if tbf, ok := q.(*netlink.Tbf); !ok || tbf.Rate != 30000000/8 {
		t.Errorf("veth root %+v, want tbf at 3750000 B/s", q)
	}
	if _, err := n.ifb(p); err == nil {
		t.Error("an IFB exists though the runtime's limits have no egress rate")
	}
	n.must(t, "CHECK", p, conf)
	n.must(t, "DEL", p, conf)
}
