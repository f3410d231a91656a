package sbr

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/ipam/static"
	"linen.dev/linen/internal/plugins/main/ptp"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-sbr-") }

// topo is a pod with two ptp interfaces into one host: eth0 (10.81.0.2/24
// via 10.81.0.1, fd81::2/64 via fd81::1, the pod's default routes) and net1
// (10.82.0.2/24 via 10.82.0.1, fd82::2/64 via fd82::1, no default route).
// A client (192.0.2.2, 2001:db8:3::2) sits behind the host, which filters
// by strict reverse path: a reply that leaves the pod through the other
// interface than its source address's is dropped.
type topo struct {
	host, pod, client *netns.NS
	env               *pluginmain.Env
	eth0, net1        *current.Result
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	tp := &topo{host: nstest.New(t), pod: nstest.New(t), client: nstest.New(t)}
	nfttest.Veth(t, tp.host, "ltsbrc", tp.client, "eth0")
	nfttest.Addr(t, tp.host, "ltsbrc", "192.0.2.1/24")
	nfttest.Addr(t, tp.host, "ltsbrc", "2001:db8:3::1/64")
	nfttest.Addr(t, tp.client, "eth0", "192.0.2.2/24")
	nfttest.Addr(t, tp.client, "eth0", "2001:db8:3::2/64")
	nfttest.Route(t, tp.client, "default4", "192.0.2.1")
	nfttest.Route(t, tp.client, "default6", "2001:db8:3::1")
	nfttest.Nft(t, tp.host, "add", "table", "inet", "rpf")
	nfttest.Nft(t, tp.host, "add", "chain", "inet", "rpf", "pre", "{", "type", "filter", "hook", "prerouting", "priority", "-100;", "}")
	nfttest.Nft(t, tp.host, "add", "rule", "inet", "rpf", "pre", "fib", "saddr", ".", "iif", "oif", "missing", "drop")
	tp.env = plugintest.Env(pluginmain.NewRegistry(static.Plugin()))
	tp.eth0 = tp.addIf(t, "eth0", 81, `,"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]`)
	tp.net1 = tp.addIf(t, "net1", 82, "")
	nfttest.Forwarding(t, tp.host)
	return tp
}

func ptpConf(n int, routes string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"sbrnet%d","type":"ptp","ipam":{"type":"static","addresses":[`+
		`{"address":"10.%d.0.2/24","gateway":"10.%d.0.1"},{"address":"fd%d::2/64","gateway":"fd%d::1"}]%s}}`, n, n, n, n, n, routes))
}

func (tp *topo) addIf(t *testing.T, ifName string, n int, routes string) *current.Result {
	t.Helper()
	return plugintest.Add(t, tp.host, tp.env, ptp.Plugin(), plugintest.Call{ContainerID: "pod1", NS: tp.pod, IfName: ifName, Conf: ptpConf(n, routes)})
}

// conf is the sbr configuration for version v with prevResult prev (nil:
// none) and extra keys.
func conf(t testing.TB, v, extra string, prev *current.Result) []byte {
	t.Helper()
	return plugintest.Conf(t, v, map[string]any{"name": "sbrnet", "type": "sbr"}, extra, prev)
}

func (tp *topo) call(cmd, ifName string, c []byte) ([]byte, *types.Error) {
	return plugintest.Invoke(tp.host, tp.env, Plugin(), plugintest.Call{Command: cmd, ContainerID: "pod1", NS: tp.pod, IfName: ifName, Conf: c})
}

func (tp *topo) must(t *testing.T, cmd, ifName string, c []byte) []byte {
	t.Helper()
	out, err := tp.call(cmd, ifName, c)
	if err != nil {
		t.Fatalf("%s %s: %v (code %d)", cmd, ifName, err, err.Code)
	}
	return out
}

// rules lists the plugin's rules in the pod as "from <src> lookup <table>".
func rules(t *testing.T, ns *netns.NS) []string {
	t.Helper()
	h := nfttest.Handle(t, ns)
	rs, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Protocol == Protocol {
			out = append(out, fmt.Sprintf("from %s lookup %d", r.Src, r.Table))
		}
	}
	sort.Strings(out)
	return out
}

// tableRoutes lists a table's routes as "<dst> [via <gw>] dev <ifname>".
func tableRoutesText(t *testing.T, ns *netns.NS, table int) []string {
	t.Helper()
	h := nfttest.Handle(t, ns)
	rs, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		l, _ := h.LinkByIndex(r.LinkIndex)
		name := "?"
		if l != nil {
			name = l.Attrs().Name
		}
		s := routeText(&r) + " dev " + name
		if r.Protocol != Protocol {
			s += fmt.Sprintf(" proto %d", r.Protocol)
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// via returns the interface the pod's kernel picks for dst from src.
func via(t *testing.T, ns *netns.NS, dst, src string) string {
	t.Helper()
	h := nfttest.Handle(t, ns)
	rs, err := h.RouteGetWithOptions(net.ParseIP(dst), &netlink.RouteGetOptions{SrcAddr: net.ParseIP(src)})
	if err != nil || len(rs) == 0 {
		t.Fatalf("route get %s from %s: %v", dst, src, err)
	}
	l, err := h.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Name
}

func ping(t *testing.T, from *netns.NS, addr string, want bool) {
	t.Helper()
	err := plugintest.Ping(from, addr)
	if want && err != nil {
		t.Errorf("ping %s: %v", addr, err)
	}
	if !want && err == nil {
		t.Errorf("ping %s answered, want no answer", addr)
	}
}

func eq(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// Replies follow the source address's table: without sbr a reply from
// net1's address leaves through eth0 (the default route) and the host's
// reverse-path filter drops it; with sbr it leaves through net1.
func TestReplyFollowsSource(t *testing.T) {
	tp := newTopo(t)
	ping(t, tp.client, "10.81.0.2", true)
	ping(t, tp.client, "10.82.0.2", false)
	if got := via(t, tp.pod, "192.0.2.2", "10.82.0.2"); got != "eth0" {
		t.Fatalf("before sbr, from 10.82.0.2 via %s, want eth0 (the test needs the asymmetry)", got)
	}

	c1 := conf(t, "1.1.0", "", tp.net1)
	out := tp.must(t, "ADD", "net1", c1)
	if !strings.Contains(string(out), "10.82.0.2/24") {
		t.Errorf("ADD did not return prevResult: %s", out)
	}
	ping(t, tp.client, "10.82.0.2", true)
	ping(t, tp.client, "fd82::2", true)
	ping(t, tp.client, "10.81.0.2", true)
	for _, tc := range [][3]string{
		{"192.0.2.2", "10.82.0.2", "net1"}, {"192.0.2.2", "10.81.0.2", "eth0"},
		{"2001:db8:3::2", "fd82::2", "net1"}, {"2001:db8:3::2", "fd81::2", "eth0"},
	} {
		if got := via(t, tp.pod, tc[0], tc[1]); got != tc[2] {
			t.Errorf("to %s from %s via %s, want %s", tc[0], tc[1], got, tc[2])
		}
	}
	eq(t, "rules", rules(t, tp.pod), []string{"from 10.82.0.2/32 lookup 100", "from fd82::2/128 lookup 100"})
	eq(t, "table 100", tableRoutesText(t, tp.pod, 100), []string{
		"10.82.0.0/24 via 10.82.0.1 dev net1", "10.82.0.1/32 dev net1",
		"default via 10.82.0.1 dev net1", "default via fd82::1 dev net1",
		"fd82::/64 via fd82::1 dev net1", "fd82::1/128 dev net1", "fe80::/64 dev net1",
	})
	// The main table is untouched: the routes are copied, not moved.
	if got := via(t, tp.pod, "10.82.0.9", "10.81.0.2"); got != "net1" {
		t.Errorf("main table lost net1's subnet route (to 10.82.0.9 via %s)", got)
	}
	tp.must(t, "CHECK", "net1", c1)
	tp.must(t, "ADD", "net1", c1) // repeated: same table, no duplicates
	eq(t, "rules after a repeated ADD", rules(t, tp.pod), []string{"from 10.82.0.2/32 lookup 100", "from fd82::2/128 lookup 100"})

	// The second interface gets the next table.
	c0 := conf(t, "1.1.0", "", tp.eth0)
	tp.must(t, "ADD", "eth0", c0)
	eq(t, "rules", rules(t, tp.pod), []string{"from 10.81.0.2/32 lookup 101", "from 10.82.0.2/32 lookup 100", "from fd81::2/128 lookup 101", "from fd82::2/128 lookup 100"})
	tp.must(t, "CHECK", "eth0", c0)

	for i := 0; i < 2; i++ {
		tp.must(t, "DEL", "net1", c1)
	}
	eq(t, "rules after DEL", rules(t, tp.pod), []string{"from 10.81.0.2/32 lookup 101", "from fd81::2/128 lookup 101"})
	eq(t, "table 100 after DEL", tableRoutesText(t, tp.pod, 100), nil)
	ping(t, tp.client, "10.82.0.2", false)
	ping(t, tp.client, "10.81.0.2", true)
	if _, err := tp.call("CHECK", "net1", c1); err == nil || !strings.Contains(err.Msg, "no rule from 10.82.0.2") {
		t.Errorf("CHECK after DEL: %v", err)
	}
	// The namespace gone: nothing to do.
	if _, err := plugintest.Invoke(tp.host, tp.env, Plugin(), plugintest.Call{Command: "DEL", ContainerID: "pod1",
		NetnsPath: "/run/netns/lt-sbr-gone", IfName: "net1", Conf: c1}); err != nil {
		t.Errorf("DEL without the namespace: %v", err)
	}
}

// DEL finds its rules without prevResult (by the interface's addresses),
// and removes rules whose address is gone with its interface.
func TestDelWithoutPrevResult(t *testing.T) {
	tp := newTopo(t)
	tp.must(t, "ADD", "net1", conf(t, "1.1.0", "", tp.net1))
	tp.must(t, "ADD", "eth0", conf(t, "1.1.0", "", tp.eth0))
	tp.must(t, "DEL", "net1", conf(t, "1.1.0", "", nil))
	eq(t, "rules", rules(t, tp.pod), []string{"from 10.81.0.2/32 lookup 101", "from fd81::2/128 lookup 101"})

	tp.must(t, "ADD", "net1", conf(t, "1.1.0", "", tp.net1))
	// The interface disappears first (its ptp DEL ran before ours).
	plugintest.Must(t, tp.host, tp.env, ptp.Plugin(), "DEL", plugintest.Call{ContainerID: "pod1", NS: tp.pod, IfName: "net1", Conf: ptpConf(82, "")})
	tp.must(t, "DEL", "net1", conf(t, "1.1.0", `"table": true`, nil)) // invalid: found by protocol
	eq(t, "rules", rules(t, tp.pod), []string{"from 10.81.0.2/32 lookup 101", "from fd81::2/128 lookup 101"})
	eq(t, "table 100", tableRoutesText(t, tp.pod, 100), nil)
}

// With "table" only the rules are added; the table is the user's.
func TestConfiguredTable(t *testing.T) {
	tp := newTopo(t)
	h := nfttest.Handle(t, tp.pod)
	l, _ := h.LinkByName("net1")
	_, dst, _ := net.ParseCIDR("198.51.100.0/24")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: net.ParseIP("10.82.0.1"), Table: 300}); err != nil {
		t.Fatal(err)
	}
	c := conf(t, "1.1.0", `"table": 300`, tp.net1)
	tp.must(t, "ADD", "net1", c)
	eq(t, "rules", rules(t, tp.pod), []string{"from 10.82.0.2/32 lookup 300", "from fd82::2/128 lookup 300"})
	eq(t, "table 300", tableRoutesText(t, tp.pod, 300), []string{"198.51.100.0/24 via 10.82.0.1 dev net1 proto 3"})
	tp.must(t, "CHECK", "net1", c)
	if _, err := tp.call("CHECK", "net1", conf(t, "1.1.0", `"table": 301`, tp.net1)); err == nil || !strings.Contains(err.Msg, "not the configured 301") {
		t.Errorf("CHECK with another table: %v", err)
	}
	tp.must(t, "DEL", "net1", c)
	eq(t, "rules after DEL", rules(t, tp.pod), nil)
	eq(t, "table 300 after DEL", tableRoutesText(t, tp.pod, 300), []string{"198.51.100.0/24 via 10.82.0.1 dev net1 proto 3"})
}

// Tables in use, by a route or by a rule, are skipped.
func TestFirstFreeTable(t *testing.T) {
	tp := newTopo(t)
	h := nfttest.Handle(t, tp.pod)
	l, _ := h.LinkByName("eth0")
	_, dst, _ := net.ParseCIDR("198.51.100.0/24")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: net.ParseIP("10.81.0.1"), Table: 100}); err != nil {
		t.Fatal(err)
	}
	r := netlink.NewRule()
	r.Mark, r.Table = 7, 101
	if err := h.RuleAdd(r); err != nil {
		t.Fatal(err)
	}
	tp.must(t, "ADD", "net1", conf(t, "1.1.0", "", tp.net1))
	eq(t, "rules", rules(t, tp.pod), []string{"from 10.82.0.2/32 lookup 102", "from fd82::2/128 lookup 102"})
	tp.must(t, "DEL", "net1", conf(t, "1.1.0", "", tp.net1))
	if got := tableRoutesText(t, tp.pod, 100); len(got) != 1 {
		t.Errorf("DEL touched table 100: %v", got)
	}
}

// A configured gateway supplies the default route when the result has
// none; without either the table has no default route.
func TestGateways(t *testing.T) {
	tp := newTopo(t)
	nfttest.Veth(t, tp.host, "ltsbrh2", tp.pod, "net2")
	nfttest.Addr(t, tp.pod, "net2", "10.83.0.2/24")
	nfttest.Addr(t, tp.host, "ltsbrh2", "10.83.0.1/24")
	one := 1
	prev := &current.Result{CNIVersion: "1.1.0",
		Interfaces: []*current.Interface{{Name: "ltsbrh2"}, {Name: "net2", Sandbox: tp.pod.Path()}},
		IPs:        []*current.IPConfig{{Address: net.IPNet{IP: net.ParseIP("10.83.0.2").To4(), Mask: net.CIDRMask(24, 32)}, Interface: &one}}}
	c := conf(t, "1.1.0", "", prev)
	tp.must(t, "ADD", "net2", c)
	eq(t, "table without a gateway", tableRoutesText(t, tp.pod, 100), []string{"10.83.0.0/24 dev net2"})
	tp.must(t, "CHECK", "net2", c)
	tp.must(t, "DEL", "net2", c)

	c = conf(t, "1.1.0", `"gateways": ["10.83.0.1", "fd83::1"]`, prev)
	tp.must(t, "ADD", "net2", c)
	eq(t, "table with a configured gateway", tableRoutesText(t, tp.pod, 100), []string{"10.83.0.0/24 dev net2", "default via 10.83.0.1 dev net2"})
	tp.must(t, "CHECK", "net2", c)
	if got := via(t, tp.pod, "192.0.2.2", "10.83.0.2"); got != "net2" {
		t.Errorf("from 10.83.0.2 via %s, want net2", got)
	}
	tp.must(t, "DEL", "net2", c)
}

// Two interfaces set up at once never share a table.
func TestConcurrentAdd(t *testing.T) {
	tp := newTopo(t)
	var wg sync.WaitGroup
	errs := make([]*types.Error, 2)
	for i, x := range []struct {
		ifName string
		res    *current.Result
	}{{"eth0", tp.eth0}, {"net1", tp.net1}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = tp.call("ADD", x.ifName, conf(t, "1.1.0", "", x.res))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	tables := map[string]bool{}
	for _, r := range rules(t, tp.pod) {
		tables[r[strings.LastIndex(r, " ")+1:]] = true
	}
	if len(tables) != 2 {
		t.Errorf("rules %v: want two tables", rules(t, tp.pod))
	}
}

// Every version: ADD returns prevResult in that version; CHECK where the
// version has it; DEL.
func TestVersions(t *testing.T) {
	tp := newTopo(t)
	v4only := &current.Result{CNIVersion: "1.1.0", Interfaces: tp.net1.Interfaces, IPs: tp.net1.IPs[:1], Routes: tp.net1.Routes}
	for _, v := range Plugin().SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			prev := tp.net1
			if v < "0.3.0" {
				prev = v4only // one address per family before 0.3.0
			}
			c := conf(t, v, "", prev)
			out := tp.must(t, "ADD", "net1", c)
			var head map[string]any
			if err := json.Unmarshal(out, &head); err != nil || head["cniVersion"] != v {
				t.Errorf("ADD result %s", out)
			}
			if len(rules(t, tp.pod)) == 0 {
				t.Error("no rules after ADD")
			}
			if v >= "0.4.0" {
				tp.must(t, "CHECK", "net1", c)
			}
			tp.must(t, "DEL", "net1", c)
			eq(t, "rules after DEL", rules(t, tp.pod), nil)
		})
	}
}

// Bad input: the right code, the field named, nothing changed.
func TestErrors(t *testing.T) {
	tp := newTopo(t)
	for _, tc := range []struct {
		name string
		conf []byte
		code uint
		want string
	}{
		{"vrf", conf(t, "1.1.0", `"vrfname": "blue"`, tp.net1), 2, `vrfname: "blue": source-based routing inside a VRF is not supported`},
		{"table", conf(t, "1.1.0", `"table": 254`, tp.net1), 7, "table: 254 is the kernel's main table"},
		{"several", conf(t, "1.1.0", `"table": -1, "gateways": ["x", "10.0.0.1", "10.0.0.2", "::"]`, tp.net1), 7,
			`table: -1 is not a routing table number (an integer from 1 to 4294967295); gateways[0]: "x" is not an IP address; ` +
				`gateways[2]: a second IPv4 gateway (10.0.0.2 after 10.0.0.1): give at most one per family; gateways[3]: :: cannot be a gateway`},
		{"wrong type", conf(t, "1.1.0", `"gateways": "10.0.0.1"`, tp.net1), 6, "gateways"},
		{"no prevResult", conf(t, "1.1.0", "", nil), 7, "prevResult: missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tp.call("ADD", "net1", tc.conf)
			if err == nil || err.Code != tc.code || !strings.Contains(err.Msg, tc.want) {
				t.Errorf("ADD: %v, want code %d with %q", err, tc.code, tc.want)
			}
		})
	}
	// An interface that is not there: a failed ADD undoes nothing it did
	// not do, and leaves no rule.
	missing := &current.Result{CNIVersion: "1.1.0", Interfaces: []*current.Interface{{Name: "nope", Sandbox: tp.pod.Path()}},
		IPs: []*current.IPConfig{{Address: net.IPNet{IP: net.ParseIP("10.99.0.2").To4(), Mask: net.CIDRMask(24, 32)}, Interface: new(int)}}}
	if _, err := tp.call("ADD", "nope", conf(t, "1.1.0", "", missing)); err == nil || !strings.Contains(err.Msg, `find interface "nope"`) {
		t.Errorf("ADD for a missing interface: %v", err)
	}
	eq(t, "rules", rules(t, tp.pod), nil)
	for _, table := range []int{100, 101} {
		eq(t, fmt.Sprintf("table %d", table), tableRoutesText(t, tp.pod, table), nil)
	}
}

// A failed ADD leaves nothing: a default route via a gateway the
// interface cannot reach fails after the device routes went in, and the
// undo stack takes them out again.
func TestAddUndo(t *testing.T) {
	tp := newTopo(t)
	_, err := tp.call("ADD", "net1", conf(t, "1.1.0", `"gateways": ["203.0.113.1"]`, tp.net1))
	if err == nil || !strings.Contains(err.Msg, "add route default via 203.0.113.1 to table 100") {
		t.Fatalf("ADD with an unreachable gateway: %v", err)
	}
	eq(t, "rules after a failed ADD", rules(t, tp.pod), nil)
	eq(t, "table 100 after a failed ADD", tableRoutesText(t, tp.pod, 100), nil)
}

func TestStatusAndGC(t *testing.T) {
	tp := newTopo(t)
	c := []byte(`{"cniVersion":"1.1.0","name":"sbrnet","type":"sbr","cni.dev/valid-attachments":[]}`)
	for _, cmd := range []string{"STATUS", "GC"} {
		if _, err := plugintest.Invoke(tp.host, tp.env, Plugin(), plugintest.Call{Command: cmd, Conf: c}); err != nil {
			t.Errorf("%s: %v", cmd, err)
		}
	}
	if _, err := plugintest.Invoke(tp.host, tp.env, Plugin(), plugintest.Call{Command: "STATUS", Conf: []byte(`{"cniVersion":"1.1.0","name":"n","type":"sbr","table":0}`)}); err == nil || err.Code != 7 {
		t.Errorf("STATUS with a bad table: %v", err)
	}
}
