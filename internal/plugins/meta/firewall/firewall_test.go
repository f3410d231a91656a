package firewall

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/ipam/hostlocal"
	"linen.dev/linen/internal/plugins/main/bridge"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
	"linen.dev/linen/internal/sysctl"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-firewall-") }

const within = 2 * time.Second

// node is a test host whose forward policy drops (iptables' FORWARD, as
// iptables-nft keeps it: `table ip filter` and `table ip6 filter`), with a
// peer outside (veth ltfwup <-> eth0, 192.0.2.0/24 and 2001:db8:2::/64) and
// pods on two bridges made by the bridge plugin: ltfwbr1 (10.91.1.0/24 and
// fd91:1::/64) and ltfwbr2 (10.91.2.0/24). Every pod and the peer answer
// TCP on port 80.
type node struct {
	host, outside *netns.NS
	env           *pluginmain.Env
	dir           string
}

type pod struct {
	ns   *netns.NS
	id   string
	net  string
	res  *current.Result
	ip4  string
	ip6  string
	conf []byte // the bridge plugin's configuration
}

func newNode(t *testing.T) *node {
	t.Helper()
	n := &node{host: nstest.New(t), outside: nstest.New(t), dir: t.TempDir()}
	nfttest.Veth(t, n.host, "ltfwup", n.outside, "eth0")
	nfttest.Addr(t, n.host, "ltfwup", "192.0.2.1/24")
	nfttest.Addr(t, n.host, "ltfwup", "2001:db8:2::1/64")
	nfttest.Addr(t, n.outside, "eth0", "192.0.2.2/24")
	nfttest.Addr(t, n.outside, "eth0", "2001:db8:2::2/64")
	nfttest.Route(t, n.outside, "10.91.0.0/16", "192.0.2.1")
	nfttest.Route(t, n.outside, "fd91::/16", "2001:db8:2::1")
	nfttest.Forwarding(t, n.host)
	nfttest.EchoTCP(t, n.outside, ":80")
	for _, fam := range []string{"ip", "ip6"} {
		nfttest.Nft(t, n.host, "add", "table", fam, "filter")
		nfttest.Nft(t, n.host, "add", "chain", fam, "filter", "FORWARD", "{", "type", "filter", "hook", "forward", "priority", "filter;", "policy", "drop;", "}")
	}
	n.env = plugintest.Env(pluginmain.NewRegistry(hostlocal.Plugin()))
	return n
}

// addPod runs the bridge plugin for a pod on bridge 1 or 2.
func (n *node) addPod(t *testing.T, br int, id string) *pod {
	t.Helper()
	ranges := fmt.Sprintf(`[[{"subnet":"10.91.%d.0/24"}]]`, br)
	if br == 1 {
		ranges = `[[{"subnet":"10.91.1.0/24"}],[{"subnet":"fd91:1::/64"}]]`
	}
	p := &pod{ns: nstest.New(t), id: id, net: fmt.Sprintf("fwnet%d", br)}
	p.conf = []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"bridge","bridge":"ltfwbr%d","isGateway":true,`+
		`"ipam":{"type":"host-local","dataDir":%q,"ranges":%s,"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]}}`, p.net, br, n.dir, ranges))
	p.res = plugintest.Add(t, n.host, n.env, bridge.Plugin(), plugintest.Call{ContainerID: id, NS: p.ns, IfName: "eth0", Conf: p.conf})
	for _, ip := range p.res.IPs {
		if ip.Address.IP.To4() != nil {
			p.ip4 = ip.Address.IP.String()
		} else {
			p.ip6 = ip.Address.IP.String()
		}
	}
	nfttest.EchoTCP(t, p.ns, ":80")
	t.Cleanup(func() {
		plugintest.Invoke(n.host, n.env, bridge.Plugin(), plugintest.Call{Command: "DEL", ContainerID: id, NS: p.ns, IfName: "eth0", Conf: p.conf})
	})
	return p
}

// fwConf is the firewall's stdin for p in version v; extra holds further
// keys ("" for none), prev false leaves prevResult out.
func fwConf(t testing.TB, p *pod, v, extra string, prev bool) []byte {
	t.Helper()
	var res *current.Result
	if prev {
		res = p.res
	}
	return plugintest.Conf(t, v, map[string]any{"name": p.net, "type": "firewall"}, extra, res)
}

func (n *node) call(cmd string, p *pod, conf []byte) ([]byte, *types.Error) {
	return plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: cmd, ContainerID: p.id, NS: p.ns, IfName: "eth0", Conf: conf})
}

func (n *node) must(t testing.TB, cmd string, p *pod, conf []byte) []byte {
	t.Helper()
	out, err := n.call(cmd, p, conf)
	if err != nil {
		t.Fatalf("%s %s: %v (code %d)", cmd, p.id, err, err.Code)
	}
	return out
}

// elements lists the firewall's elements in the host namespace.
func (n *node) elements(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(nfttest.Nft(t, n.host, "list", "table", "inet", nft.FirewallTable), "\n") {
		if strings.Contains(l, `comment "net=`) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

type probe struct {
	name    string
	from    *netns.NS
	to      string // address (port 80 is added)
	answers bool
}

func run(t *testing.T, probes []probe) {
	t.Helper()
	for _, p := range probes {
		wait := within
		if !p.answers {
			wait = 400 * time.Millisecond
		}
		ans, err := nfttest.TCP(p.from, net.JoinHostPort(p.to, "80"), wait)
		switch {
		case p.answers && err != nil:
			t.Errorf("%s: tcp %s: %v", p.name, p.to, err)
		case !p.answers && err == nil:
			t.Errorf("%s: tcp %s answered %q, want no connection", p.name, p.to, ans)
		}
	}
}

func bridgeNetfilter(t *testing.T, ns *netns.NS) bool {
	t.Helper()
	var v string
	ns.Do(func() (err error) { v, err = sysctl.Get("net.bridge.bridge-nf-call-iptables"); return err })
	return v == "1"
}

// The forward policy drops until the firewall is in the chain; then each
// ingress policy lets exactly its connections reach the pods, in IPv4 and
// IPv6; DEL closes the path again.
func TestIngressPolicies(t *testing.T) {
	n := newNode(t)
	a1, a2, b1 := n.addPod(t, 1, "a1"), n.addPod(t, 1, "a2"), n.addPod(t, 2, "b1")
	brnf := bridgeNetfilter(t, n.host)
	without := []probe{
		{"pod to outside", a1.ns, "192.0.2.2", false},
		{"outside to pod", n.outside, a1.ip4, false},
		{"pod to pod across bridges", b1.ns, a1.ip4, false},
		{"pod to outside, IPv6", a1.ns, "2001:db8:2::2", false},
	}
	if brnf {
		// Bridged traffic passes the IP hooks, and their drop policy.
		without = append(without, probe{"pod to pod on one bridge", a2.ns, a1.ip4, false})
	}
	run(t, without)

	for _, tc := range []struct {
		policy string
		probes []probe
	}{
		{"open", []probe{
			{"pod to outside", a1.ns, "192.0.2.2", true},
			{"outside to pod", n.outside, a1.ip4, true},
			{"pod to pod on one bridge", a2.ns, a1.ip4, true},
			{"pod to pod across bridges", b1.ns, a1.ip4, true},
			{"and back", a1.ns, b1.ip4, true},
			{"pod to outside, IPv6", a1.ns, "2001:db8:2::2", true},
			{"outside to pod, IPv6", n.outside, a1.ip6, true},
			{"pod to pod, IPv6", a2.ns, a1.ip6, true},
		}},
		{"same-bridge", []probe{
			{"pod to outside", a1.ns, "192.0.2.2", true},
			{"outside to pod", n.outside, a1.ip4, true},
			{"pod to pod on one bridge", a2.ns, a1.ip4, true},
			{"pod to pod across bridges", b1.ns, a1.ip4, false},
			{"and back", a1.ns, b1.ip4, false},
			{"outside to pod, IPv6", n.outside, a1.ip6, true},
			{"pod to pod on one bridge, IPv6", a2.ns, a1.ip6, true},
		}},
		{"isolated", []probe{
			{"pod to outside", a1.ns, "192.0.2.2", true},
			{"outside to pod", n.outside, a1.ip4, true},
			{"pod to pod on one bridge", a2.ns, a1.ip4, false},
			{"and back", a1.ns, a2.ip4, false},
			{"pod to pod across bridges", b1.ns, a1.ip4, false},
			{"outside to pod, IPv6", n.outside, a1.ip6, true},
			{"pod to pod on one bridge, IPv6", a2.ns, a1.ip6, false},
		}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			if tc.policy == "isolated" && !brnf {
				t.Skip("skipped: net.bridge.bridge-nf-call-iptables is not 1 in a new namespace on this kernel; isolation needs it (ADD refuses, see TestIsolatedNeedsBridgeNetfilter)")
			}
			extra := fmt.Sprintf(`"ingressPolicy": %q`, tc.policy)
			for _, p := range []*pod{a1, a2, b1} {
				n.must(t, "ADD", p, fwConf(t, p, "1.1.0", extra, true))
			}
			run(t, tc.probes)
			for _, p := range []*pod{a1, a2, b1} {
				n.must(t, "CHECK", p, fwConf(t, p, "1.1.0", extra, true))
				n.must(t, "DEL", p, fwConf(t, p, "1.1.0", extra, true))
			}
			if left := n.elements(t); len(left) != 0 {
				t.Errorf("DEL left elements:\n%s", strings.Join(left, "\n"))
			}
			run(t, without[:2])
		})
	}
}

// Isolation is about new connections: an isolated pod still reaches an open
// neighbour (the answers are replies), the neighbour cannot reach it.
func TestIsolatedPodOpensConnections(t *testing.T) {
	n := newNode(t)
	if !bridgeNetfilter(t, n.host) {
		t.Skip("skipped: net.bridge.bridge-nf-call-iptables is not 1 in a new namespace on this kernel")
	}
	a1, a2 := n.addPod(t, 1, "a1"), n.addPod(t, 1, "a2")
	n.must(t, "ADD", a1, fwConf(t, a1, "1.1.0", `"ingressPolicy": "isolated"`, true))
	n.must(t, "ADD", a2, fwConf(t, a2, "1.1.0", "", true))
	run(t, []probe{
		{"isolated to open", a1.ns, a2.ip4, true},
		{"open to isolated", a2.ns, a1.ip4, false},
		{"isolated to open, IPv6", a1.ns, a2.ip6, true},
		{"open to isolated, IPv6", a2.ns, a1.ip6, false},
	})
}

// The admin chain runs first and is never flushed; a configured name gets
// its own chain.
func TestAdminChain(t *testing.T) {
	n := newNode(t)
	a1, a2 := n.addPod(t, 1, "a1"), n.addPod(t, 1, "a2")
	n.must(t, "ADD", a1, fwConf(t, a1, "1.1.0", "", true))
	nfttest.Nft(t, n.host, "add", "rule", "inet", nft.FirewallTable, nft.DefaultAdminChain, "ip", "daddr", "192.0.2.2", "tcp", "dport", "80", "drop")
	n.must(t, "ADD", a2, fwConf(t, a2, "1.1.0", `"iptablesAdminChainName": "MY-ADMIN"`, true))
	run(t, []probe{
		{"blocked by the admin", a1.ns, "192.0.2.2", false},
		{"also for the other chain's pod", a2.ns, "192.0.2.2", false},
		{"the rest passes", n.outside, a1.ip4, true},
	})
	table := nfttest.Nft(t, n.host, "list", "table", "inet", nft.FirewallTable)
	for _, want := range []string{"jump CNI-ADMIN", "jump MY-ADMIN", "chain MY-ADMIN {", "ip daddr 192.0.2.2 tcp dport 80 drop"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	n.must(t, "DEL", a1, fwConf(t, a1, "1.1.0", "", true))
	n.must(t, "ADD", a1, fwConf(t, a1, "1.1.0", "", true))
	if table := nfttest.Nft(t, n.host, "list", "chain", "inet", nft.FirewallTable, nft.DefaultAdminChain); !strings.Contains(table, "tcp dport 80 drop") {
		t.Errorf("the admin chain was flushed:\n%s", table)
	}
}

// DEL cleans up however little the runtime still knows; CHECK notices a
// missing element.
func TestDelAndCheck(t *testing.T) {
	n := newNode(t)
	a1 := n.addPod(t, 1, "a1")
	full := fwConf(t, a1, "1.1.0", `"ingressPolicy": "same-bridge"`, true)
	for _, tc := range []struct {
		name string
		conf []byte
		ns   *netns.NS
	}{
		{"with prevResult", full, a1.ns},
		{"without prevResult", fwConf(t, a1, "1.1.0", "", false), a1.ns},
		{"invalid configuration", fwConf(t, a1, "1.1.0", `"ingressPolicy": "nope"`, false), a1.ns},
		{"namespace gone", full, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n.must(t, "ADD", a1, full)
			c := plugintest.Call{Command: "DEL", ContainerID: a1.id, NS: tc.ns, IfName: "eth0", Conf: tc.conf}
			if tc.ns == nil {
				c.NetnsPath = "/run/netns/lt-firewall-gone"
			}
			for i := 0; i < 2; i++ {
				if _, err := plugintest.Invoke(n.host, n.env, Plugin(), c); err != nil {
					t.Fatalf("DEL %d: %v", i, err)
				}
			}
			if left := n.elements(t); len(left) != 0 {
				t.Errorf("DEL left elements:\n%s", strings.Join(left, "\n"))
			}
			run(t, []probe{{"closed again", a1.ns, "192.0.2.2", false}})
		})
	}
	n.must(t, "ADD", a1, full)
	n.must(t, "CHECK", a1, full)
	nfttest.Nft(t, n.host, "delete", "element", "inet", nft.FirewallTable, "samebr4", "{", a1.ip4, ".", `"ltfwbr1"`, "}")
	if _, err := n.call("CHECK", a1, full); err == nil || !strings.Contains(err.Msg, "samebr4: missing") {
		t.Errorf("CHECK with a missing element: %v", err)
	}
	// The iptables FORWARD chain flushed (iptables-restore): CHECK says so.
	nfttest.Nft(t, n.host, "flush", "chain", "ip", "filter", "FORWARD")
	n.must(t, "ADD", a1, full)
	n.must(t, "CHECK", a1, full)
	if _, err := n.call("CHECK", a1, fwConf(t, a1, "1.1.0", "", false)); err == nil || !strings.Contains(err.Msg, "prevResult") {
		t.Errorf("CHECK without prevResult: %v", err)
	}
}

func TestGC(t *testing.T) {
	n := newNode(t)
	a1, a2 := n.addPod(t, 1, "a1"), n.addPod(t, 1, "a2")
	n.must(t, "ADD", a1, fwConf(t, a1, "1.1.0", "", true))
	n.must(t, "ADD", a2, fwConf(t, a2, "1.1.0", "", true))
	gc := []byte(`{"cniVersion":"1.1.0","name":"fwnet1","type":"firewall","cni.dev/valid-attachments":[{"containerID":"a2","ifname":"eth0"}]}`)
	if _, err := plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: "GC", Conf: gc}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	run(t, []probe{
		{"collected", a1.ns, "192.0.2.2", false},
		{"valid", a2.ns, "192.0.2.2", true},
	})
	for _, e := range n.elements(t) {
		if strings.Contains(e, "id=a1") {
			t.Errorf("GC left %s", e)
		}
	}
	noList := []byte(`{"cniVersion":"1.1.0","name":"fwnet1","type":"firewall"}`)
	if _, err := plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: "GC", Conf: noList}); err == nil || err.Code != pluginmain.CodeInvalidConfig {
		t.Errorf("GC without cni.dev/valid-attachments: %v", err)
	}
}

// Every supported version: ADD returns prevResult in that version and opens
// the path; CHECK where the version has it; DEL closes it.
func TestVersions(t *testing.T) {
	n := newNode(t)
	a1 := n.addPod(t, 2, "a1")
	for _, v := range Plugin().SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			conf := fwConf(t, a1, v, "", true)
			out := n.must(t, "ADD", a1, conf)
			var head map[string]any
			if err := json.Unmarshal(out, &head); err != nil || head["cniVersion"] != v || !strings.Contains(string(out), a1.ip4) {
				t.Errorf("ADD result %s", out)
			}
			run(t, []probe{{"open", a1.ns, "192.0.2.2", true}})
			if v >= "0.4.0" {
				n.must(t, "CHECK", a1, conf)
			}
			n.must(t, "DEL", a1, conf)
			run(t, []probe{{"closed", a1.ns, "192.0.2.2", false}})
		})
	}
}

// Bad input: the right code, a message naming the field, nothing changed.
func TestErrors(t *testing.T) {
	n := newNode(t)
	a1 := n.addPod(t, 1, "a1")
	before := nfttest.Nft(t, n.host, "list", "ruleset")
	// A ptp-like result: no bridge among the host interfaces.
	ptp := *a1
	ptp.res = &current.Result{CNIVersion: "1.1.0", Interfaces: []*current.Interface{{Name: "ltfwup"}, {Name: "eth0", Sandbox: a1.ns.Path()}},
		IPs: a1.res.IPs}
	for _, tc := range []struct {
		name string
		conf []byte
		code uint
		want string
	}{
		{"firewalld", fwConf(t, a1, "1.1.0", `"backend": "firewalld"`, true), 2, `backend: "firewalld" is not supported`},
		{"several problems", fwConf(t, a1, "1.1.0", `"backend": "ebpf", "ingressPolicy": "closed", "iptablesAdminChainName": "bad name"`, true), 7,
			`backend: "ebpf" is not a backend (want "nftables" or "iptables", both meaning nftables here); ` +
				`iptablesAdminChainName: "bad name" may hold only letters, digits, '-', '_' and '.'; ` +
				`ingressPolicy: "closed" is not an ingress policy (want "open", "same-bridge" or "isolated")`},
		{"wrong type", fwConf(t, a1, "1.1.0", `"ingressPolicy": 1`, true), 6, "ingressPolicy"},
		{"no prevResult", fwConf(t, a1, "1.1.0", "", false), 7, "prevResult: missing"},
		{"no bridge", fwConf(t, &ptp, "1.1.0", `"ingressPolicy": "same-bridge"`, true), 7,
			`ingressPolicy: same-bridge: no host interface of prevResult.interfaces is a bridge: "ltfwup" (veth)`},
		{"version", fwConf(t, a1, "1.1.0", `"cniVersion": "9.9.9"`, false), 1, "cniVersion"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.call("ADD", a1, tc.conf)
			if err == nil || err.Code != tc.code || !strings.Contains(err.Msg, tc.want) {
				t.Errorf("ADD: %v, want code %d with %q", err, tc.code, tc.want)
			}
		})
	}
	if after := nfttest.Nft(t, n.host, "list", "ruleset"); after != before {
		t.Errorf("a failed ADD changed the ruleset:\n%s", after)
	}
}

// An isolated pod needs bridged traffic to pass the IP hooks; ADD refuses
// rather than pretend, and leaves nothing behind.
func TestIsolatedNeedsBridgeNetfilter(t *testing.T) {
	n := newNode(t)
	a1 := n.addPod(t, 1, "a1")
	key := "net.bridge.bridge-nf-call-iptables"
	if !kernelAtLeast(5, 3) {
		t.Skip("skipped: before Linux 5.3 the bridge-nf sysctls are global; changing one here would change the node's")
	}
	var v string
	if err := n.host.Do(func() (err error) { v, err = sysctl.Get(key); return err }); err != nil {
		t.Skipf("skipped: %s is not available here (%v): br_netfilter is not in this kernel", key, err)
	}
	nfttest.Sysctl(t, n.host, key, "0")
	t.Cleanup(func() { n.host.Do(func() error { return sysctl.Set(key, v) }) })
	_, err := n.call("ADD", a1, fwConf(t, a1, "1.1.0", `"ingressPolicy": "isolated"`, true))
	if err == nil || err.Code != pluginmain.CodeInvalidConfig || !strings.Contains(err.Msg, "ingressPolicy: isolated: net.bridge.bridge-nf-call-iptables is 0, not 1") {
		t.Errorf("ADD: %v", err)
	}
	if out := nfttest.Nft(t, n.host, "list", "tables"); strings.Contains(out, nft.FirewallTable) {
		t.Errorf("the failed ADD created the table:\n%s", out)
	}
}

// kernelAtLeast reports whether the running kernel is major.minor or later.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// An attachment without addresses (layer 2 only) has nothing to open.
func TestNoAddresses(t *testing.T) {
	n := newNode(t)
	a1 := n.addPod(t, 2, "a1")
	l2 := *a1
	l2.res = &current.Result{CNIVersion: "1.1.0", Interfaces: a1.res.Interfaces}
	out := n.must(t, "ADD", &l2, fwConf(t, &l2, "1.1.0", `"ingressPolicy": "isolated"`, true))
	if !strings.Contains(string(out), "ltfwbr2") {
		t.Errorf("ADD did not return prevResult: %s", out)
	}
	if o := nfttest.Nft(t, n.host, "list", "tables"); strings.Contains(o, nft.FirewallTable) {
		t.Errorf("ADD without addresses touched nftables:\n%s", o)
	}
}

func TestStatus(t *testing.T) {
	n := newNode(t)
	conf := []byte(`{"cniVersion":"1.1.0","name":"fwnet1","type":"firewall"}`)
	if _, err := plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: "STATUS", Conf: conf}); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	nfttest.Nft(t, n.host, "add", "table", "inet", nft.FirewallTable, "{", "comment", `"linen schema=99"`, ";", "}")
	_, err := plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: "STATUS", Conf: conf})
	if err == nil || err.Code != pluginmain.CodeNotAvailable || !strings.Contains(err.Msg, "schema=99") {
		t.Errorf("STATUS with a foreign table layout: %v", err)
	}
}
