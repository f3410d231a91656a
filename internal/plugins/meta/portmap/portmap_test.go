package portmap

import (
	"encoding/json"
	"errors"
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
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

const within = 2 * time.Second

// node is a test network: a host namespace routing between a pod (veth
// hv<n> <-> eth0, 10.88.0.0/24 and fd88::/64) and a client (veth hc0 <->
// eth0, 198.51.100.0/24 and 2001:db8:1::/64, with a second host address
// .3 / ::3 that hostIP-bound mappings must not answer on).
type node struct {
	host, client *netns.NS
	pods         []*pod
	env          *pluginmain.Env
}

type pod struct {
	ns     *netns.NS
	id     string
	hostIf string
	v4, v6 string // addresses with prefix length
}

func newNode(t testing.TB) *node {
	t.Helper()
	n := &node{host: nstest.New(t), client: nstest.New(t)}
	nfttest.Veth(t, n.host, "hc0", n.client, "eth0")
	for _, a := range []string{"198.51.100.1/24", "198.51.100.3/24", "2001:db8:1::1/64", "2001:db8:1::3/64"} {
		nfttest.Addr(t, n.host, "hc0", a)
	}
	nfttest.Addr(t, n.client, "eth0", "198.51.100.2/24")
	nfttest.Addr(t, n.client, "eth0", "2001:db8:1::2/64")
	nfttest.Route(t, n.client, "default4", "198.51.100.1")
	nfttest.Route(t, n.client, "default6", "2001:db8:1::1")
	nfttest.Forwarding(t, n.host)
	n.env = plugintest.Env(pluginmain.NewRegistry(Plugin()))
	return n
}

// addPod creates pod number i (ptp-like: its own /24 and /64 behind host
// veth hv<i>) with TCP and UDP echo servers on port 80 and 53.
func (n *node) addPod(t testing.TB, i int) *pod {
	t.Helper()
	p := &pod{ns: nstest.New(t), id: fmt.Sprintf("pod-%d", i), hostIf: fmt.Sprintf("hv%d", i),
		v4: fmt.Sprintf("10.88.%d.2/24", i), v6: fmt.Sprintf("fd88:0:0:%d::2/64", i)}
	nfttest.Veth(t, n.host, p.hostIf, p.ns, "eth0")
	nfttest.Addr(t, n.host, p.hostIf, fmt.Sprintf("10.88.%d.1/24", i))
	nfttest.Addr(t, n.host, p.hostIf, fmt.Sprintf("fd88:0:0:%d::1/64", i))
	nfttest.Addr(t, p.ns, "eth0", p.v4)
	nfttest.Addr(t, p.ns, "eth0", p.v6)
	nfttest.Route(t, p.ns, "default4", fmt.Sprintf("10.88.%d.1", i))
	nfttest.Route(t, p.ns, "default6", fmt.Sprintf("fd88:0:0:%d::1", i))
	nfttest.EchoTCP(t, p.ns, ":80")
	nfttest.EchoUDP(t, p.ns, ":53")
	n.pods = append(n.pods, p)
	return p
}

func (p *pod) addr4() string { return strings.Split(p.v4, "/")[0] }
func (p *pod) addr6() string { return strings.Split(p.v6, "/")[0] }

// prevResult is what an interface plugin would have returned for p.
func (p *pod) prevResult() *current.Result {
	one := 1
	_, n4, _ := net.ParseCIDR(p.v4)
	_, n6, _ := net.ParseCIDR(p.v6)
	n4.IP, n6.IP = net.ParseIP(p.addr4()), net.ParseIP(p.addr6())
	return &current.Result{
		CNIVersion: "1.1.0",
		Interfaces: []*current.Interface{{Name: p.hostIf}, {Name: "eth0", Sandbox: p.ns.Path()}},
		IPs:        []*current.IPConfig{{Address: *n4, Interface: &one}, {Address: *n6, Interface: &one}},
	}
}

// config builds the plugin's stdin in version v; mappings may be "" (no
// runtimeConfig) and prev nil (no prevResult).
func config(t testing.TB, v, extra, mappings string, prev *current.Result) []byte {
	t.Helper()
	base := map[string]any{"name": "pmnet", "type": "portmap"}
	if mappings != "" {
		var pm any
		if err := json.Unmarshal([]byte(mappings), &pm); err != nil {
			t.Fatal(err)
		}
		base["runtimeConfig"] = map[string]any{"portMappings": pm}
	}
	return plugintest.Conf(t, v, base, extra, prev)
}

func (n *node) call(cmd string, p *pod, conf []byte) ([]byte, *types.Error) {
	c := plugintest.Call{Command: cmd, ContainerID: p.id, NS: p.ns, IfName: "eth0", Conf: conf}
	return plugintest.Invoke(n.host, n.env, Plugin(), c)
}

func (n *node) must(t testing.TB, cmd string, p *pod, conf []byte) []byte {
	t.Helper()
	out, err := n.call(cmd, p, conf)
	if err != nil {
		t.Fatalf("%s %s: %v (code %d)", cmd, p.id, err, err.Code)
	}
	return out
}

// elements lists what linen's tables hold in the host namespace, by nft.
func (n *node) elements(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(nfttest.Nft(t, n.host, "list", "ruleset"), "\n") {
		if strings.Contains(l, "comment \"net=") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

type probe struct {
	name     string
	from     *netns.NS
	proto    string // tcp or udp
	to       string
	answers  bool
	wantFrom string // source the pod sees; "" = do not check
}

func run(t *testing.T, probes []probe) {
	t.Helper()
	for _, p := range probes {
		var ans string
		var err error
		if p.proto == "udp" {
			wait := within
			if !p.answers {
				wait = 300 * time.Millisecond
			}
			ans, err = nfttest.UDP(p.from, "", p.to, wait)
		} else {
			wait := within
			if !p.answers {
				wait = 500 * time.Millisecond
			}
			ans, err = nfttest.TCP(p.from, p.to, wait)
		}
		switch {
		case p.answers && err != nil:
			t.Errorf("%s: %s %s: %v", p.name, p.proto, p.to, err)
		case !p.answers && err == nil:
			t.Errorf("%s: %s %s answered %q, want no answer", p.name, p.proto, p.to, ans)
		case p.answers && p.wantFrom != "" && nfttest.From(ans).String() != p.wantFrom:
			t.Errorf("%s: %s %s: the pod saw %s, want %s", p.name, p.proto, p.to, ans, p.wantFrom)
		}
	}
}

const allMappings = `[
	{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
	{"hostPort": 8053, "containerPort": 53, "protocol": "udp"},
	{"hostPort": 8081, "containerPort": 80, "hostIP": "198.51.100.1"},
	{"hostPort": 8082, "containerPort": 80, "hostIP": "2001:db8:1::1"}
]`

// ADD -> traffic (TCP, UDP, IPv6, hostIP, localhost, hairpin) -> CHECK ->
// DEL -> traffic stops, nothing left -> DEL again.
func TestTraffic(t *testing.T) {
	n := newNode(t)
	p := n.addPod(t, 1)
	conf := config(t, "1.1.0", "", allMappings, p.prevResult())
	out := n.must(t, "ADD", p, conf)
	var res current.Result
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 2 || res.IPs[0].Address.String() != p.v4 {
		t.Errorf("ADD did not return prevResult: %s (%v)", out, err)
	}
	c, h := n.client, n.host
	working := []probe{
		{"tcp", c, "tcp", "198.51.100.1:8080", true, "198.51.100.2"},
		{"tcp on the other host address", c, "tcp", "198.51.100.3:8080", true, "198.51.100.2"},
		{"tcp6", c, "tcp", "[2001:db8:1::1]:8080", true, "2001:db8:1::2"},
		{"udp", c, "udp", "198.51.100.1:8053", true, "198.51.100.2"},
		{"udp6", c, "udp", "[2001:db8:1::1]:8053", true, "2001:db8:1::2"},
		{"hostIP", c, "tcp", "198.51.100.1:8081", true, ""},
		{"hostIP, other address", c, "tcp", "198.51.100.3:8081", false, ""},
		{"hostIP6", c, "tcp", "[2001:db8:1::1]:8082", true, ""},
		{"hostIP6, other address", c, "tcp", "[2001:db8:1::3]:8082", false, ""},
		{"hostIP6 mapping, IPv4", c, "tcp", "198.51.100.1:8082", false, ""},
		{"localhost", h, "tcp", "127.0.0.1:8080", true, "10.88.1.1"},
		{"host address from the host", h, "tcp", "198.51.100.1:8080", true, "198.51.100.1"},
		{"hairpin", p.ns, "tcp", "198.51.100.1:8080", true, "10.88.1.1"},
		{"hairpin6", p.ns, "tcp", "[2001:db8:1::1]:8080", true, "fd88:0:0:1::1"},
		{"hairpin udp", p.ns, "udp", "198.51.100.1:8053", true, "10.88.1.1"},
	}
	run(t, working)
	if out, err := n.call("CHECK", p, conf); err != nil {
		t.Errorf("CHECK: %v %s", err, out)
	}
	if got := len(n.elements(t)); got == 0 {
		t.Errorf("no elements after ADD")
	}

	n.must(t, "DEL", p, conf)
	var stopped []probe
	for _, pr := range working {
		if pr.answers {
			pr.answers = false
			stopped = append(stopped, pr)
		}
	}
	run(t, stopped)
	if left := n.elements(t); len(left) != 0 {
		t.Errorf("DEL left elements:\n%s", strings.Join(left, "\n"))
	}
	if rs := nfttest.Nft(t, n.host, "list", "ruleset"); strings.Contains(rs, "elements") {
		t.Errorf("DEL left elements in the ruleset:\n%s", rs)
	}
	if _, err := n.call("CHECK", p, conf); err == nil {
		t.Errorf("CHECK after DEL succeeded")
	}
	n.must(t, "DEL", p, conf)
}

// DEL cleans up however little the runtime still knows.
func TestDelWithoutRuntimeConfig(t *testing.T) {
	n := newNode(t)
	p := n.addPod(t, 1)
	full := config(t, "1.1.0", "", allMappings, p.prevResult())
	for _, tc := range []struct {
		name string
		conf []byte
	}{
		{"no runtimeConfig, no prevResult", config(t, "1.1.0", "", "", nil)},
		{"no prevResult", config(t, "1.1.0", "", allMappings, nil)},
		{"invalid mappings", config(t, "1.1.0", "", `[{"hostPort": 0}]`, p.prevResult())},
		{"unsupported option", config(t, "1.1.0", `"conditionsV4": ["x"]`, "", nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n.must(t, "ADD", p, full)
			n.must(t, "DEL", p, tc.conf)
			if left := n.elements(t); len(left) != 0 {
				t.Errorf("DEL left elements:\n%s", strings.Join(left, "\n"))
			}
			run(t, []probe{{"tcp", n.client, "tcp", "198.51.100.1:8080", false, ""}})
		})
	}
	// The runtime says there were no mappings: nothing to do, and the
	// elements of an earlier ADD stay (as the runtime asked).
	n.must(t, "ADD", p, full)
	n.must(t, "DEL", p, config(t, "1.1.0", "", `[]`, p.prevResult()))
	if len(n.elements(t)) == 0 {
		t.Errorf("DEL with an empty portMappings removed elements")
	}
}

func TestConflict(t *testing.T) {
	n := newNode(t)
	a, b := n.addPod(t, 1), n.addPod(t, 2)
	n.must(t, "ADD", a, config(t, "1.1.0", "", `[{"hostPort": 8080, "containerPort": 80}]`, a.prevResult()))
	before := n.elements(t)
	_, err := n.call("ADD", b, config(t, "1.1.0", "", `[{"hostPort": 9090, "containerPort": 80}, {"hostPort": 8080, "containerPort": 80}]`, b.prevResult()))
	want := `runtimeConfig.portMappings[1]: host port 8080/tcp is already mapped to 10.88.1.2:80 by container "pod-1" (interface "eth0", network "pmnet")`
	if err == nil || err.Code != pluginmain.CodeInvalidConfig || err.Msg != want {
		t.Fatalf("conflicting ADD: %v, want code 7 %q", err, want)
	}
	if after := n.elements(t); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("the failed ADD changed the elements:\n%s", strings.Join(after, "\n"))
	}
	run(t, []probe{
		{"first pod keeps the port", n.client, "tcp", "198.51.100.1:8080", true, ""},
		{"nothing of the second pod", n.client, "tcp", "198.51.100.1:9090", false, ""},
	})
	// A neighbour's host port (both pods behind the host) works.
	run(t, []probe{{"pod to another pod's host port", b.ns, "tcp", "198.51.100.1:8080", true, ""}})
}

func TestGC(t *testing.T) {
	n := newNode(t)
	a, b := n.addPod(t, 1), n.addPod(t, 2)
	n.must(t, "ADD", a, config(t, "1.1.0", "", `[{"hostPort": 8081, "containerPort": 80}]`, a.prevResult()))
	n.must(t, "ADD", b, config(t, "1.1.0", "", `[{"hostPort": 8082, "containerPort": 80}]`, b.prevResult()))
	gc := config(t, "1.1.0", `"cni.dev/valid-attachments": [{"containerID": "pod-2", "ifname": "eth0"}]`, "", nil)
	if _, err := plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: "GC", Conf: gc}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	run(t, []probe{
		{"collected", n.client, "tcp", "198.51.100.1:8081", false, ""},
		{"valid", n.client, "tcp", "198.51.100.1:8082", true, ""},
	})
	for _, e := range n.elements(t) {
		if strings.Contains(e, "pod-1") {
			t.Errorf("GC left %s", e)
		}
	}
	noList := config(t, "1.1.0", "", "", nil)
	if _, err := plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: "GC", Conf: noList}); err == nil {
		t.Errorf("GC without cni.dev/valid-attachments succeeded")
	}
	// libcni writes a runtime's empty list as null: nothing is valid.
	none := config(t, "1.1.0", `"cni.dev/valid-attachments": null, "cni.dev/attachments": null`, "", nil)
	if _, err := plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: "GC", Conf: none}); err != nil {
		t.Fatalf("GC with a null list: %v", err)
	}
	if els := n.elements(t); len(els) != 0 {
		t.Errorf("GC with a null list left %v", els)
	}
}

// Datagrams sent before the mapping existed left an untranslated conntrack
// entry; ADD removes it, so the same flow reaches the pod.
func TestStaleUDPConntrack(t *testing.T) {
	n := newNode(t)
	other, p := n.addPod(t, 1), n.addPod(t, 2)
	// Any mapping turns conntrack on in the host namespace.
	n.must(t, "ADD", other, config(t, "1.1.0", "", `[{"hostPort": 9999, "containerPort": 80}]`, other.prevResult()))
	if _, err := nfttest.UDP(n.client, "198.51.100.2:40053", "198.51.100.1:8053", 100*time.Millisecond); err == nil {
		t.Fatal("something answered before the mapping")
	}
	n.must(t, "ADD", p, config(t, "1.1.0", "", `[{"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]`, p.prevResult()))
	run(t, []probe{{"same flow after ADD", n.client, "udp", "198.51.100.1:8053", true, "198.51.100.2"}})
	ans, err := nfttest.UDP(n.client, "198.51.100.2:40053", "198.51.100.1:8053", within)
	if err != nil {
		t.Errorf("the flow that started before the mapping: %v", err)
	} else if got := nfttest.From(ans).String(); got != "198.51.100.2" {
		t.Errorf("pod saw %s", ans)
	}
}

func TestMasqAllAndNoSNAT(t *testing.T) {
	n := newNode(t)
	p := n.addPod(t, 1)
	m := `[{"hostPort": 8080, "containerPort": 80}]`
	conf := config(t, "1.1.0", `"masqAll": true`, m, p.prevResult())
	n.must(t, "ADD", p, conf)
	run(t, []probe{{"masqAll", n.client, "tcp", "198.51.100.1:8080", true, "10.88.1.1"}})
	n.must(t, "DEL", p, conf)

	conf = config(t, "1.1.0", `"snat": false`, m, p.prevResult())
	n.must(t, "ADD", p, conf)
	run(t, []probe{
		{"client", n.client, "tcp", "198.51.100.1:8080", true, "198.51.100.2"},
		{"no hairpin without snat", p.ns, "tcp", "198.51.100.1:8080", false, ""},
	})
	if out, err := n.call("CHECK", p, conf); err != nil {
		t.Errorf("CHECK: %v %s", err, out)
	}
	n.must(t, "DEL", p, conf)
}

// Every supported version: ADD returns prevResult in that version, the
// mappings are in place, DEL removes them; CHECK where the version has it.
func TestVersions(t *testing.T) {
	n := newNode(t)
	p := n.addPod(t, 1)
	for _, v := range Plugin().Versions {
		t.Run(v, func(t *testing.T) {
			conf := config(t, v, "", `[{"hostPort": 8080, "containerPort": 80}]`, p.prevResult())
			out := n.must(t, "ADD", p, conf)
			var head struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []any  `json:"ips"`
			}
			if err := json.Unmarshal(out, &head); err != nil || head.CNIVersion != v || len(head.IPs) != 2 {
				t.Errorf("ADD result %s", out)
			}
			run(t, []probe{{"tcp", n.client, "tcp", "198.51.100.1:8080", true, ""}})
			if v >= "0.4.0" {
				n.must(t, "CHECK", p, conf)
			}
			n.must(t, "DEL", p, conf)
			if left := n.elements(t); len(left) != 0 {
				t.Errorf("DEL left %v", left)
			}
		})
	}
	// No mappings: prevResult unchanged, nothing touched.
	out := n.must(t, "ADD", p, config(t, "1.1.0", "", "", p.prevResult()))
	if !strings.Contains(string(out), p.addr4()) {
		t.Errorf("ADD without mappings returned %s", out)
	}
	if _, err := n.call("ADD", p, config(t, "1.1.0", "", `[{"hostPort": 1, "containerPort": 1}]`, nil)); err == nil ||
		!strings.Contains(err.Msg, "prevResult: missing") {
		t.Errorf("ADD without prevResult: %v", err)
	}
}

func TestStatus(t *testing.T) {
	n := newNode(t)
	if _, err := plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: "STATUS", Conf: config(t, "1.1.0", "", "", nil)}); err != nil {
		t.Errorf("STATUS: %v", err)
	}
}

// SCTP needs the kernel's SCTP sockets for a real association.
func TestSCTP(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		t.Skipf("skipped: this kernel has no SCTP sockets (%v); SCTP mappings are covered by element tests in internal/nft", err)
	}
	unix.Close(fd)
	n := newNode(t)
	p := n.addPod(t, 1)
	n.must(t, "ADD", p, config(t, "1.1.0", "", `[{"hostPort": 8132, "containerPort": 132, "protocol": "sctp"}]`, p.prevResult()))
	srv := sctpListen(t, p.ns, 132)
	if err := sctpHello(n.client, "198.51.100.1", 8132); err != nil {
		t.Errorf("sctp through the mapping: %v", err)
	}
	unix.Close(srv)
}

func sctpListen(t *testing.T, ns *netns.NS, port int) int {
	t.Helper()
	var fd int
	if err := ns.Do(func() (err error) {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
			return err
		}
		return unix.Listen(fd, 4)
	}); err != nil {
		t.Fatalf("sctp listen: %v", err)
	}
	go func() {
		c, _, err := unix.Accept(fd)
		if err != nil {
			return
		}
		unix.Write(c, []byte("hello"))
		unix.Close(c)
	}()
	return fd
}

func sctpHello(ns *netns.NS, addr string, port int) error {
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval(within.Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		sa := &unix.SockaddrInet4{Port: port}
		copy(sa.Addr[:], net.ParseIP(addr).To4())
		if err := unix.Connect(fd, sa); err != nil {
			return err
		}
		buf := make([]byte, 16)
		k, err := unix.Read(fd, buf)
		if err != nil {
			return err
		}
		if string(buf[:k]) != "hello" {
			return errors.New("unexpected answer " + string(buf[:k]))
		}
		return nil
	})
}
