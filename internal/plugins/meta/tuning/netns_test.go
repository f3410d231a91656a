package tuning

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
	"linen.dev/linen/internal/sysctl"
)

// node is a host namespace and a pod namespace joined by a veth pair
// (tv0 in the host, eth0 in the pod), and a tuning plugin with its own
// allow-list path and state directory.
type node struct {
	host, pod *netns.NS
	h         *netlink.Handle // bound to the pod
	env       *pluginmain.Env
	plugin    *pluginmain.Plugin
	allowlist string
	dataDir   string
	id        string
}

func newNode(t *testing.T) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{host: nstest.New(t), pod: nstest.New(t), allowlist: filepath.Join(dir, "allowlist.conf"),
		dataDir: filepath.Join(dir, "state"), id: "ctr-1"}
	nfttest.Veth(t, n.host, "tv0", n.pod, "eth0")
	n.h = nfttest.Handle(t, n.pod)
	n.plugin = New(Options{AllowlistPath: n.allowlist})
	n.env = plugintest.Env(pluginmain.NewRegistry(n.plugin))
	return n
}

func (n *node) prev() *current.Result {
	zero := 1
	return &current.Result{
		CNIVersion: "1.1.0",
		Interfaces: []*current.Interface{{Name: "tv0", Mac: "02:00:00:00:00:01"}, {Name: "eth0", Mac: n.link(nil).Attrs().HardwareAddr.String(), Sandbox: n.pod.Path()}},
		IPs:        []*current.IPConfig{{Address: mustCIDR("10.81.0.2/24"), Interface: &zero}},
	}
}

// conf builds the plugin's stdin in version v with extra top-level keys
// and the state directory; prev may be nil.
func (n *node) conf(t testing.TB, v, extra string, prev *current.Result) []byte {
	t.Helper()
	return plugintest.Conf(t, v, map[string]any{"name": "lttun", "type": "tuning", "dataDir": n.dataDir}, extra, prev)
}

func (n *node) call(cmd string, conf []byte, cniArgs string) ([]byte, *types.Error) {
	c := plugintest.Call{Command: cmd, ContainerID: n.id, NS: n.pod, IfName: "eth0", Args: cniArgs, Conf: conf}
	return plugintest.Invoke(n.host, n.env, n.plugin, c)
}

func (n *node) must(t *testing.T, cmd string, conf []byte, cniArgs string) []byte {
	t.Helper()
	out, err := n.call(cmd, conf, cniArgs)
	if err != nil {
		t.Fatalf("%s: %v (code %d)", cmd, err, err.Code)
	}
	return out
}

func (n *node) link(t *testing.T) netlink.Link {
	l, err := n.h.LinkByName("eth0")
	if err != nil {
		if t == nil {
			panic(err)
		}
		t.Fatal(err)
	}
	return l
}

// The sysctls the tests change: per interface, and per namespace but not
// under net.ipv4 / net.ipv6.
var watched = []string{"net/ipv4/conf/eth0/arp_notify", "net/ipv6/conf/eth0/accept_ra", "net/core/somaxconn", "net/ipv4/ping_group_range"}

// snapshot describes everything the plugin may change in the pod.
func (n *node) snapshot(t *testing.T) string {
	t.Helper()
	v := valuesOf(n.link(t))
	parts := []string{fmt.Sprintf("mac=%s mtu=%d promisc=%v allmulti=%v txqlen=%d", v.MAC, v.MTU, v.Promisc, v.Allmulti, v.TxQLen)}
	n.pod.Do(func() error {
		for _, k := range watched {
			val, err := sysctl.Get(k)
			if err != nil {
				val = "error: " + err.Error()
			}
			parts = append(parts, k+"="+normValue(val))
		}
		return nil
	})
	return strings.Join(parts, " ")
}

func (n *node) sysctl(t *testing.T, key string) string {
	t.Helper()
	var v string
	if err := n.pod.Do(func() (err error) { v, err = sysctl.Get(key); return err }); err != nil {
		t.Fatal(err)
	}
	return normValue(v)
}

func (n *node) stateFile() string { return statePath(n.dataDir, n.id, "eth0") }

func (n *node) stateExists() bool {
	_, err := os.Stat(n.stateFile())
	return err == nil
}

func mustCIDR(s string) (ipn net.IPNet) {
	ip, p, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	p.IP = ip
	return *p
}

const allKnobs = `"mac": "c2:11:22:33:44:55", "mtu": 1400, "promisc": true, "allmulti": true, "txQLen": 321,
	"sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1", "net/core/somaxconn": "1234", "net.ipv6.conf.IFNAME.accept_ra": "0",
	"net.ipv4.ping_group_range": "0 2147483647"}`

// ADD sets every knob and returns the new MAC; CHECK passes and notices a
// change; DEL restores everything and removes the state; DEL again.
func TestAllKnobs(t *testing.T) {
	n := newNode(t)
	before := n.snapshot(t)
	conf := n.conf(t, "1.1.0", allKnobs, n.prev())
	out := n.must(t, "ADD", conf, "")

	v := valuesOf(n.link(t))
	if v.MAC.String() != "c2:11:22:33:44:55" || v.MTU != 1400 || !v.Promisc || !v.Allmulti || v.TxQLen != 321 {
		t.Errorf("interface after ADD: %+v", v)
	}
	for k, want := range map[string]string{"net/ipv4/conf/eth0/arp_notify": "1", "net/core/somaxconn": "1234",
		"net/ipv6/conf/eth0/accept_ra": "0", "net/ipv4/ping_group_range": "0 2147483647"} {
		if got := n.sysctl(t, k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	var res current.Result
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Interfaces) != 2 || res.Interfaces[1].Mac != "c2:11:22:33:44:55" || res.Interfaces[0].Mac != "02:00:00:00:00:01" || len(res.IPs) != 1 {
		t.Errorf("result %s: want prevResult with the pod interface's new MAC", out)
	}
	if !n.stateExists() {
		t.Error("no saved state")
	}
	n.must(t, "CHECK", conf, "")

	// Changes behind the plugin's back: CHECK names each.
	if err := n.h.LinkSetMTU(n.link(t), 1300); err != nil {
		t.Fatal(err)
	}
	nfttest.Sysctl(t, n.pod, "net/core/somaxconn", "999")
	_, err := n.call("CHECK", conf, "")
	for _, w := range []string{`mtu: "eth0" has MTU 1300, want 1400`, `sysctl["net/core/somaxconn"]: /proc/sys/net/core/somaxconn is "999", want "1234"`} {
		if err == nil || !strings.Contains(err.Msg, w) {
			t.Errorf("CHECK: %v, want %q", err, w)
		}
	}

	for i := 0; i < 2; i++ {
		n.must(t, "DEL", conf, "")
		if after := n.snapshot(t); after != before {
			t.Errorf("DEL %d: before ADD\n  %s\nafter DEL\n  %s", i, before, after)
		}
		if n.stateExists() {
			t.Errorf("DEL %d left the saved state", i)
		}
	}
}

// Each knob on its own is set and restored.
func TestEachKnob(t *testing.T) {
	n := newNode(t)
	for _, tc := range []struct {
		extra string
		check func(v linkValues) bool
	}{
		{`"mac": "c2:00:00:00:00:07"`, func(v linkValues) bool { return v.MAC.String() == "c2:00:00:00:00:07" }},
		{`"mtu": 9000`, func(v linkValues) bool { return v.MTU == 9000 }},
		{`"promisc": true`, func(v linkValues) bool { return v.Promisc }},
		{`"allmulti": true`, func(v linkValues) bool { return v.Allmulti }},
		{`"txQLen": 777`, func(v linkValues) bool { return v.TxQLen == 777 }},
		{`"sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"}`, nil},
		{`"sysctl": {"net.core.somaxconn": "77"}`, nil},
	} {
		t.Run(tc.extra, func(t *testing.T) {
			before := n.snapshot(t)
			conf := n.conf(t, "1.1.0", tc.extra, n.prev())
			n.must(t, "ADD", conf, "")
			if tc.check != nil && !tc.check(valuesOf(n.link(t))) {
				t.Errorf("not applied: %+v", valuesOf(n.link(t)))
			}
			if n.snapshot(t) == before {
				t.Error("ADD changed nothing")
			}
			n.must(t, "CHECK", conf, "")
			n.must(t, "DEL", conf, "")
			if after := n.snapshot(t); after != before {
				t.Errorf("DEL did not restore:\n  %s\n  %s", before, after)
			}
		})
	}
	// Promiscuous mode explicitly off on an interface that has it on.
	if err := n.h.SetPromiscOn(n.link(t)); err != nil {
		t.Fatal(err)
	}
	conf := n.conf(t, "1.1.0", `"promisc": false`, n.prev())
	n.must(t, "ADD", conf, "")
	if valuesOf(n.link(t)).Promisc {
		t.Error("promisc: false left it on")
	}
	n.must(t, "DEL", conf, "")
	if !valuesOf(n.link(t)).Promisc {
		t.Error("DEL did not turn promiscuous mode back on")
	}
}

// MAC precedence through a real ADD: runtimeConfig > args > CNI_ARGS >
// configuration.
func TestMACPrecedence(t *testing.T) {
	n := newNode(t)
	for _, tc := range []struct {
		extra, cniArgs, want string
	}{
		{`"mac": "c2:00:00:00:00:01"`, "", "c2:00:00:00:00:01"},
		{`"mac": "c2:00:00:00:00:01"`, "IgnoreUnknown=1;MAC=c2:00:00:00:00:02", "c2:00:00:00:00:02"},
		{`"mac": "c2:00:00:00:00:01", "args": {"cni": {"mac": "c2:00:00:00:00:03"}}`, "MAC=c2:00:00:00:00:02", "c2:00:00:00:00:03"},
		{`"args": {"cni": {"mac": "c2:00:00:00:00:03"}}, "runtimeConfig": {"mac": "c2:00:00:00:00:04"}`, "MAC=c2:00:00:00:00:02", "c2:00:00:00:00:04"},
	} {
		conf := n.conf(t, "1.1.0", tc.extra, n.prev())
		out := n.must(t, "ADD", conf, tc.cniArgs)
		if got := n.link(t).Attrs().HardwareAddr.String(); got != tc.want || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s %s: MAC %s, result %s; want %s", tc.extra, tc.cniArgs, got, out, tc.want)
		}
		n.must(t, "CHECK", conf, tc.cniArgs)
		n.must(t, "DEL", conf, tc.cniArgs)
	}
}

// Bad input: the right code, the field named, nothing changed, no state.
func TestBadInput(t *testing.T) {
	n := newNode(t)
	before := n.snapshot(t)
	tests := []struct {
		name    string
		conf    []byte
		cniArgs string
		code    uint
		want    string
	}{
		{"outside net", n.conf(t, "1.1.0", `"sysctl": {"kernel.hostname": "x"}`, n.prev()), "", 7, `sysctl["kernel.hostname"]: is not under net.`},
		{"traversal", n.conf(t, "1.1.0", `"sysctl": {"net/ipv4/../../kernel/hostname": "x"}`, n.prev()), "", 7, `must not have empty, "." or ".." components`},
		{"traversal in a component", n.conf(t, "1.1.0", `"sysctl": {"net.ipv4.conf.IFNAME/../../../kernel.hostname": "x"}`, n.prev()), "", 7, `".." components`},
		{"missing key", n.conf(t, "1.1.0", `"mtu": 1300, "sysctl": {"net.ipv4.conf.IFNAME.no_such_knob": "1"}`, n.prev()), "", 7,
			`sysctl["net.ipv4.conf.IFNAME.no_such_knob"]: /proc/sys/net/ipv4/conf/eth0/no_such_knob does not exist in the pod's network namespace`},
		{"conflict", n.conf(t, "1.1.0", `"sysctl": {"net.ipv4.conf.eth0.arp_notify": "0", "net.ipv4.conf.IFNAME.arp_notify": "1"}`, n.prev()), "", 7,
			`as sysctl["net.ipv4.conf.IFNAME.arp_notify"] does, to a different value`},
		{"kernel refuses a value", n.conf(t, "1.1.0", `"mac": "c2:00:00:00:00:09", "sysctl": {"net.core.somaxconn": "55", "net.ipv4.conf.IFNAME.arp_notify": "abc"}`, n.prev()), "", 7,
			`sysctl["net.ipv4.conf.IFNAME.arp_notify"]: the kernel refused "abc"`},
		{"MAC", n.conf(t, "1.1.0", `"runtimeConfig": {"mac": "ff:ff:ff:ff:ff:ff"}`, n.prev()), "", 7, `runtimeConfig.mac: "ff:ff:ff:ff:ff:ff" is a multicast address`},
		{"CNI_ARGS MAC", n.conf(t, "1.1.0", "", n.prev()), "MAC=nope", 7, `CNI_ARGS MAC: "nope" is not an Ethernet MAC address`},
		{"numbers", n.conf(t, "1.1.0", `"mtu": 20, "txQLen": -3`, n.prev()), "", 7, "mtu: 20 is outside 68..65535; txQLen: -3 is outside"},
		{"type", n.conf(t, "1.1.0", `"promisc": "yes"`, n.prev()), "", 6, "promisc"},
		{"no prevResult", n.conf(t, "1.1.0", `"mtu": 1300`, nil), "", 7, "prevResult: missing"},
		{"relative dataDir", n.conf(t, "1.1.0", `"dataDir": "state"`, n.prev()), "", 7, `dataDir: "state" is not an absolute path`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.call("ADD", tc.conf, tc.cniArgs)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			if err.Code != tc.code || !strings.Contains(err.Msg, tc.want) {
				t.Errorf("got code %d %q, want code %d with %q", err.Code, err.Msg, tc.code, tc.want)
			}
			if after := n.snapshot(t); after != before {
				t.Errorf("changed:\n  %s\n  %s", before, after)
			}
			if n.stateExists() {
				t.Error("saved state left behind")
			}
		})
	}
	c := plugintest.Call{Command: "ADD", ContainerID: n.id, NS: n.pod, IfName: "eth9", Conf: n.conf(t, "1.1.0", `"mtu": 1300`, n.prev())}
	if _, err := plugintest.Invoke(n.host, n.env, n.plugin, c); err == nil || err.Code != 4 || !strings.Contains(err.Msg, `CNI_IFNAME: no interface "eth9"`) {
		t.Errorf("missing interface: %v", err)
	}
}

// A failure after sysctls were set (the kernel refuses an MTU above what
// a macvlan's parent allows) puts them back.
func TestUndo(t *testing.T) {
	n := newNode(t)
	parent := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ltpar0"}, PeerName: "ltpar1"}
	host := nfttest.Handle(t, n.host)
	if err := host.LinkAdd(parent); err != nil {
		t.Fatal(err)
	}
	pl, _ := host.LinkByName("ltpar0")
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "mv0", ParentIndex: pl.Attrs().Index, Namespace: netlink.NsFd(n.pod.Fd())}, Mode: netlink.MACVLAN_MODE_BRIDGE}
	if err := host.LinkAdd(mv); err != nil {
		t.Skipf("skipped: cannot create a macvlan interface (%v)", err)
	}
	somax := n.sysctl(t, "net/core/somaxconn")
	prev := &current.Result{CNIVersion: "1.1.0", Interfaces: []*current.Interface{{Name: "mv0", Sandbox: n.pod.Path()}}}
	conf := n.conf(t, "1.1.0", `"mtu": 9000, "sysctl": {"net.core.somaxconn": "4321", "net.ipv4.conf.IFNAME.arp_notify": "1"}`, prev)
	c := plugintest.Call{Command: "ADD", ContainerID: n.id, NS: n.pod, IfName: "mv0", Conf: conf}
	_, err := plugintest.Invoke(n.host, n.env, n.plugin, c)
	if err == nil || err.Code != 7 || !strings.Contains(err.Msg, `mtu: set MTU of "mv0" to 9000`) {
		t.Fatalf("ADD: %v", err)
	}
	if got := n.sysctl(t, "net/core/somaxconn"); got != somax {
		t.Errorf("somaxconn %s after the failed ADD, want %s", got, somax)
	}
	if got := n.sysctl(t, "net/ipv4/conf/mv0/arp_notify"); got != "0" {
		t.Errorf("arp_notify of mv0 %s after the failed ADD, want 0", got)
	}
	if _, err := os.Stat(statePath(n.dataDir, n.id, "mv0")); err == nil {
		t.Error("saved state left behind")
	}
}

// The node's allow-list decides which keys may be set; a broken list
// fails ADD of sysctls and STATUS, not ADD without sysctls.
func TestAllowlist(t *testing.T) {
	n := newNode(t)
	if err := os.WriteFile(n.allowlist, []byte("# pods may tune their interface\n^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]+$\nnet\\.core\\.somaxconn\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := n.conf(t, "1.1.0", `"sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1", "net/core/somaxconn": "300"}`, n.prev())
	n.must(t, "ADD", ok, "")
	n.must(t, "DEL", ok, "")
	before := n.snapshot(t)
	bad := n.conf(t, "1.1.0", `"mtu": 1300, "sysctl": {"net.ipv4.ping_group_range": "0 0", "net.ipv4.conf.IFNAME.arp_notify": "1"}`, n.prev())
	_, err := n.call("ADD", bad, "")
	if err == nil || err.Code != 7 || err.Msg != fmt.Sprintf(`sysctl["net.ipv4.ping_group_range"]: is not allowed by the node's sysctl allow-list %s`, n.allowlist) {
		t.Errorf("ADD of a key not on the list: %v", err)
	}
	if after := n.snapshot(t); after != before || n.stateExists() {
		t.Errorf("changed:\n  %s\n  %s", before, after)
	}
	status := plugintest.Call{Command: "STATUS", Conf: n.conf(t, "1.1.0", "", nil)}
	if _, err := plugintest.Invoke(n.host, n.env, n.plugin, status); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	if err := os.WriteFile(n.allowlist, []byte("net\\.core\\.somaxconn\n[unclosed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := n.call("ADD", ok, ""); err == nil || err.Code != 7 || !strings.Contains(err.Msg, "line 2") {
		t.Errorf("ADD with a broken allow-list: %v", err)
	}
	if _, err := plugintest.Invoke(n.host, n.env, n.plugin, status); err == nil || err.Code != 50 {
		t.Errorf("STATUS with a broken allow-list: %v", err)
	}
	mtuOnly := n.conf(t, "1.1.0", `"mtu": 1300`, n.prev())
	n.must(t, "ADD", mtuOnly, "")
	n.must(t, "DEL", mtuOnly, "")
}

// A second ADD of the same attachment keeps the first ADD's originals, so
// DEL restores the state before both.
func TestRepeatedAdd(t *testing.T) {
	n := newNode(t)
	before := n.snapshot(t)
	n.must(t, "ADD", n.conf(t, "1.1.0", `"mtu": 1400, "sysctl": {"net.core.somaxconn": "100"}`, n.prev()), "")
	n.must(t, "ADD", n.conf(t, "1.1.0", `"mtu": 1300, "promisc": true, "sysctl": {"net.core.somaxconn": "200", "net.ipv4.conf.IFNAME.arp_notify": "1"}`, n.prev()), "")
	if v := valuesOf(n.link(t)); v.MTU != 1300 || !v.Promisc || n.sysctl(t, "net/core/somaxconn") != "200" {
		t.Errorf("second ADD not applied: %+v", v)
	}
	n.must(t, "DEL", n.conf(t, "1.1.0", "", nil), "")
	if after := n.snapshot(t); after != before {
		t.Errorf("DEL after two ADDs:\n  %s\n  %s", before, after)
	}
}

// DEL without the namespace, without state, with an invalid
// configuration; and restoring from a reference-format backup file.
func TestDel(t *testing.T) {
	n := newNode(t)
	conf := n.conf(t, "1.1.0", `"mtu": 1400`, n.prev())
	for _, tc := range []struct {
		name  string
		netns string
		conf  []byte
	}{
		{"CNI_NETNS empty", "", conf},
		{"namespace gone", "/run/netns/lt-tuning-gone", conf},
		{"invalid configuration", "", n.conf(t, "1.1.0", `"mtu": 5, "sysctl": {"kernel.x": "1"}`, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n.must(t, "ADD", conf, "")
			c := plugintest.Call{Command: "DEL", ContainerID: n.id, NetnsPath: tc.netns, IfName: "eth0", Conf: tc.conf}
			if _, err := plugintest.Invoke(n.host, n.env, n.plugin, c); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if n.stateExists() {
				t.Error("state left")
			}
			// Nothing was restored (the namespace was unknown): put it back.
			n.h.LinkSetMTU(n.link(t), 1500)
		})
	}
	// No state at all.
	n.must(t, "DEL", conf, "")
	// An unreadable state file is dropped, not an error.
	os.MkdirAll(n.dataDir, 0o700)
	os.WriteFile(n.stateFile(), []byte("{"), 0o600)
	n.must(t, "DEL", conf, "")
	if n.stateExists() {
		t.Error("unreadable state kept")
	}
	// A backup written by the reference plugin is restored.
	orig := valuesOf(n.link(t))
	backup := fmt.Sprintf(`{"mac":%q,"mtu":%d,"promisc":false}`, orig.MAC, orig.MTU)
	if err := n.h.LinkSetMTU(n.link(t), 1280); err != nil {
		t.Fatal(err)
	}
	n.h.LinkSetHardwareAddr(n.link(t), mustMAC("c2:00:00:00:00:aa"))
	n.h.SetPromiscOn(n.link(t))
	os.WriteFile(n.stateFile(), []byte(backup), 0o600)
	n.must(t, "DEL", n.conf(t, "1.1.0", "", nil), "")
	if v := valuesOf(n.link(t)); v.MTU != orig.MTU || v.MAC.String() != orig.MAC.String() || v.Promisc {
		t.Errorf("after DEL with a reference backup: %+v, want %+v", v, orig)
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// Every version: ADD returns prevResult in that version (with the new
// MAC where it has interfaces), CHECK where the version has it, DEL.
func TestVersions(t *testing.T) {
	n := newNode(t)
	before := n.snapshot(t)
	for _, v := range n.plugin.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			conf := n.conf(t, v, `"mac": "c2:00:00:00:00:42", "sysctl": {"net.core.somaxconn": "42"}`, n.prev())
			out := n.must(t, "ADD", conf, "")
			var head struct {
				CNIVersion string `json:"cniVersion"`
			}
			json.Unmarshal(out, &head)
			hasIfs := v != "0.1.0" && v != "0.2.0"
			if head.CNIVersion != v || hasIfs != strings.Contains(string(out), "c2:00:00:00:00:42") {
				t.Errorf("ADD result %s", out)
			}
			if v >= "0.4.0" {
				n.must(t, "CHECK", conf, "")
			}
			n.must(t, "DEL", conf, "")
			if after := n.snapshot(t); after != before {
				t.Errorf("DEL:\n  %s\n  %s", before, after)
			}
		})
	}
}

// GC removes this network's state of attachments that are gone, and
// nothing else.
func TestGC(t *testing.T) {
	n := newNode(t)
	os.MkdirAll(n.dataDir, 0o700)
	files := map[string]*state{
		statePath(n.dataDir, "gone", "eth0"):  {Network: "lttun", ContainerID: "gone", IfName: "eth0", Mtu: 1500},
		statePath(n.dataDir, "alive", "eth0"): {Network: "lttun", ContainerID: "alive", IfName: "eth0", Mtu: 1500},
		statePath(n.dataDir, "gone", "net1"):  {Network: "other", ContainerID: "gone", IfName: "net1", Mtu: 1500},
		statePath(n.dataDir, "ref", "eth0"):   {Mtu: 1500},
	}
	for p, st := range files {
		if err := writeState(p, st); err != nil {
			t.Fatal(err)
		}
	}
	gc := n.conf(t, "1.1.0", `"cni.dev/valid-attachments": [{"containerID": "alive", "ifname": "eth0"}]`, nil)
	if _, err := plugintest.Invoke(n.host, n.env, n.plugin, plugintest.Call{Command: "GC", Conf: gc}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	for p, st := range files {
		_, err := os.Stat(p)
		if gone := st.ContainerID == "gone" && st.Network == "lttun"; gone != (err != nil) {
			t.Errorf("%s: exists=%v after GC", filepath.Base(p), err == nil)
		}
	}
}
