package dhcp_test

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/ipam/dhcp"
	"linen.dev/linen/internal/plugins/main/bridge"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
	"linen.dev/linen/internal/plugins/registry"
)

func bridgeConf(version, br, socket string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"ltdhcp","type":"bridge","bridge":%q,
		"ipam":{"type":"dhcp","daemonSocketPath":%q,"provide":[{"option":"host-name","fromArg":"K8S_POD_NAME"}]}}`, version, br, socket))
}

func withPrev(t *testing.T, conf []byte, prev *current.Result) []byte {
	t.Helper()
	b, err := json.Marshal(prev)
	if err != nil {
		t.Fatal(err)
	}
	s := string(conf)
	return []byte(s[:strings.LastIndex(s, "}")] + `,"prevResult":` + string(b) + `}`)
}

func addBridge(t *testing.T, l *lab, conf []byte, id string, pod *netns.NS, podName string) *current.Result {
	t.Helper()
	return plugintest.Add(t, l.host, l.env, bridge.Plugin(), plugintest.Call{ContainerID: id, NS: pod, IfName: "eth0", Args: "K8S_POD_NAME=" + podName, Path: l.path, Conf: conf})
}

func podRoutes(t *testing.T, pod *netns.NS) map[string]string {
	t.Helper()
	h := nfttest.Handle(t, pod)
	rs, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rs {
		dst := "default"
		if r.Dst != nil && r.Dst.String() != "0.0.0.0/0" {
			dst = r.Dst.String()
		}
		gw := "link"
		if r.Gw != nil {
			gw = r.Gw.String()
		}
		out[dst] = gw
	}
	return out
}

// A bridge network whose addresses come from a real DHCP server: two pods
// get distinct leases carrying their pod names; the result carries the
// classless routes (which replace the router option), the gateway and
// DNS; the kernel has them; traffic flows; the daemon renews at T1; CHECK
// passes; a restarted daemon resumes the leases from its state directory;
// GC releases the attachment not listed as valid; DEL releases with
// DHCPRELEASE (the server's lease file loses the entry) and is
// idempotent, also without a namespace.
func TestBridgeWithDnsmasq(t *testing.T) {
	t.Parallel()
	l := newBridgeLab(t, "ltdbr0", 91)
	conf := bridgeConf("1.1.0", "ltdbr0", l.dm.socket)
	p1, p2 := nstest.New(t), nstest.New(t)

	r1 := addBridge(t, l, conf, "pod1", p1, "web-1")
	r2 := addBridge(t, l, conf, "pod2", p2, "web-2")
	ip1, ip2 := r1.IPs[0].Address.IP.String(), r2.IPs[0].Address.IP.String()
	if ip1 == ip2 {
		t.Fatalf("both pods got %s", ip1)
	}
	for _, r := range []*current.Result{r1, r2} {
		ip := r.IPs[0]
		if ones, _ := ip.Address.Mask.Size(); !strings.HasPrefix(ip.Address.IP.String(), "10.91.0.") || ones != 24 || ip.Gateway.String() != "10.91.0.1" {
			t.Errorf("IP config %s gw %s", ip.Address.String(), ip.Gateway)
		}
	}
	var routes []string
	for _, r := range r1.Routes {
		routes = append(routes, fmt.Sprintf("%s via %s", r.Dst.String(), r.GW))
	}
	want := []string{"0.0.0.0/0 via 10.91.0.1", "192.168.77.0/24 via 10.91.0.2", "10.91.128.0/17 via 0.0.0.0"}
	if diff := cmp.Diff(want, routes); diff != "" {
		t.Errorf("result routes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"10.91.0.53", "10.91.0.54"}, r1.DNS.Nameservers); diff != "" || r1.DNS.Domain != "pods.test" || strings.Join(r1.DNS.Search, ",") != "pods.test,svc.test" {
		t.Errorf("DNS %+v", r1.DNS)
	}
	wantKernel := map[string]string{"default": "10.91.0.1", "192.168.77.0/24": "10.91.0.2", "10.91.128.0/17": "link", "10.91.0.0/24": "link"}
	if diff := cmp.Diff(wantKernel, podRoutes(t, p1)); diff != "" {
		t.Errorf("pod routes (-want +got):\n%s", diff)
	}
	if err := plugintest.Ping(p1, "10.91.0.1"); err != nil {
		t.Errorf("pod1 -> server: %v", err)
	}
	if err := plugintest.Ping(p2, ip1); err != nil {
		t.Errorf("pod2 -> pod1: %v", err)
	}
	if got := l.srv.leases(); got[ip1] != "web-1" || got[ip2] != "web-2" {
		t.Errorf("server leases %v, want %s=web-1 %s=web-2", got, ip1, ip2)
	}

	// CHECK of the IPAM plugin, and of the bridge (which checks the
	// kernel's routes, the on-link one included), against ADD's result.
	if _, err := call(l, dhcp.Plugin(), "CHECK", "pod1", p1, "", withPrev(t, conf, r1)); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if _, err := call(l, bridge.Plugin(), "CHECK", "pod1", p1, "", withPrev(t, conf, r1)); err != nil {
		t.Errorf("bridge CHECK: %v", err)
	}
	if _, err := call(l, dhcp.Plugin(), "CHECK", "pod1", p1, "", withPrev(t, conf, r2)); err == nil {
		t.Error("CHECK with another pod's result passed")
	}

	// A repeated ADD for the same attachment returns the lease held.
	if out, err := call(l, dhcp.Plugin(), "ADD", "pod1", p1, "K8S_POD_NAME=web-1", conf); err != nil || !strings.Contains(string(out), `"`+ip1+`/24"`) {
		t.Errorf("repeated ADD: %s %v, want %s", out, err, ip1)
	}
	if n := len(l.dm.d.Leases()); n != 2 {
		t.Errorf("daemon holds %d leases, want 2", n)
	}

	// Renewal at T1 (10 s): the server acknowledges a second time.
	renewed := func(id string) bool {
		ls := l.dm.d.Leases()[dhcp.Key{ContainerID: id, Network: "ltdhcp", IfName: "eth0"}]
		return ls.Renewed >= 1 && ls.State == dhcp.StateBound
	}
	if !waitFor(30*time.Second, func() bool {
		return l.srv.acks(ip1) >= 2 && l.srv.acks(ip2) >= 2 && renewed("pod1") && renewed("pod2")
	}) {
		t.Fatalf("no renewal seen in 30 s: leases %+v; server log:\n%s", l.dm.d.Leases(), l.srv.log())
	}
	if !strings.Contains(l.srv.log(), "DHCPREQUEST(ltsrv0) "+ip1+" ") {
		t.Errorf("no renewal DHCPREQUEST for %s in the server log", ip1)
	}

	// A new daemon on the same state directory resumes both leases.
	l.dm.stop()
	l.dm = startDaemon(t, l.dm.socket, filepath.Join(l.sockDir, "leases"))
	if got := l.dm.d.Leases(); len(got) != 2 {
		t.Fatalf("restarted daemon holds %d leases, want 2: %v", len(got), got)
	}
	if _, err := call(l, dhcp.Plugin(), "CHECK", "pod2", p2, "", withPrev(t, conf, r2)); err != nil {
		t.Errorf("CHECK after daemon restart: %v", err)
	}

	// GC keeping only pod1 releases pod2's lease at the server.
	gc := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ltdhcp","type":"bridge","ipam":{"type":"dhcp","daemonSocketPath":%q},
		"cni.dev/valid-attachments":[{"containerID":"pod1","ifname":"eth0"}]}`, l.dm.socket))
	if _, err := call(l, dhcp.Plugin(), "GC", "", nil, "", gc); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if !waitFor(5*time.Second, func() bool { _, ok := l.srv.leases()[ip2]; return !ok }) {
		t.Errorf("server still leases %s after GC: %v", ip2, l.srv.leases())
	}
	if _, ok := l.srv.leases()[ip1]; !ok {
		t.Errorf("GC released the valid attachment's %s", ip1)
	}

	// DEL through the bridge releases pod1's lease; repeated DELs, also
	// without a namespace, succeed.
	plugintest.Must(t, l.host, l.env, bridge.Plugin(), "DEL", plugintest.Call{ContainerID: "pod1", NS: p1, IfName: "eth0", Path: l.path, Conf: conf})
	if !waitFor(5*time.Second, func() bool { _, ok := l.srv.leases()[ip1]; return !ok }) {
		t.Errorf("server still leases %s after DEL: %v", ip1, l.srv.leases())
	}
	if !strings.Contains(l.srv.log(), "DHCPRELEASE(ltsrv0) "+ip1) {
		t.Errorf("no DHCPRELEASE for %s in the server log", ip1)
	}
	plugintest.Must(t, l.host, l.env, bridge.Plugin(), "DEL", plugintest.Call{ContainerID: "pod1", NS: p1, IfName: "eth0", Path: l.path, Conf: conf})
	plugintest.Must(t, l.host, l.env, bridge.Plugin(), "DEL", plugintest.Call{ContainerID: "pod1", IfName: "eth0", Path: l.path, Conf: conf})
	plugintest.Must(t, l.host, l.env, bridge.Plugin(), "DEL", plugintest.Call{ContainerID: "pod2", NS: p2, IfName: "eth0", Path: l.path, Conf: conf})
	if n := len(l.dm.d.Leases()); n != 0 {
		t.Errorf("daemon still holds %d leases", n)
	}
	if _, err := call(l, dhcp.Plugin(), "CHECK", "pod1", p1, "", withPrev(t, conf, r1)); err == nil {
		t.Error("CHECK after DEL passed")
	}
}

// Every spec version gets a result it can read (0.1.0 and 0.2.0 the ip4
// form), straight from the IPAM plugin on an interface of its own.
func TestEveryVersion(t *testing.T) {
	t.Parallel()
	l := newBridgeLab(t, "ltdbr1", 93)
	for i, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			pod := nstest.New(t)
			veth := fmt.Sprintf("ltv%d", i)
			nfttest.Veth(t, l.host, veth, pod, "eth0")
			nfttest.Enslave(t, l.host, veth, "ltdbr1")
			conf := []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"ltver","type":"bridge","ipam":{"type":"dhcp","daemonSocketPath":%q}}`, v, l.dm.socket))
			out, err := call(l, dhcp.Plugin(), "ADD", "v"+v, pod, "", conf)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			var m map[string]any
			if err := json.Unmarshal(out, &m); err != nil {
				t.Fatal(err)
			}
			if m["cniVersion"] != v {
				t.Errorf("cniVersion %v", m["cniVersion"])
			}
			if old := v == "0.1.0" || v == "0.2.0"; old {
				if ip4, _ := m["ip4"].(map[string]any); ip4 == nil || !strings.HasPrefix(fmt.Sprint(ip4["ip"]), "10.93.0.") {
					t.Errorf("result %s", out)
				}
			} else if ips, _ := m["ips"].([]any); len(ips) != 1 {
				t.Errorf("result %s", out)
			}
			if _, err := call(l, dhcp.Plugin(), "DEL", "v"+v, pod, "", conf); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		})
	}
	if !waitFor(5*time.Second, func() bool { return len(l.srv.leases()) == 0 }) {
		t.Errorf("server leases left: %v", l.srv.leases())
	}
}

// A pod whose namespace disappears: DEL then succeeds and the daemon drops
// the lease (no DHCPRELEASE can be sent, so the server keeps it until it
// expires); without any DEL, the daemon forgets the lease at T1, when it
// finds the namespace gone.
func TestNamespaceGone(t *testing.T) {
	t.Parallel()
	l := newBridgeLab(t, "ltdbr3", 95)
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ltgone","type":"bridge","ipam":{"type":"dhcp","daemonSocketPath":%q}}`, l.dm.socket))
	var ips []string
	for i, id := range []string{"g1", "g2"} {
		pod := nstest.New(t)
		nfttest.Veth(t, l.host, fmt.Sprintf("ltg%d", i), pod, "eth0")
		nfttest.Enslave(t, l.host, fmt.Sprintf("ltg%d", i), "ltdbr3")
		out, err := call(l, dhcp.Plugin(), "ADD", id, pod, "", conf)
		if err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
		var r current.Result
		if err := json.Unmarshal(out, &r); err != nil || len(r.IPs) != 1 {
			t.Fatalf("result %s: %v", out, err)
		}
		ips = append(ips, r.IPs[0].Address.IP.String())
		if err := netns.DeleteNamed(pod.Path()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := call(l, dhcp.Plugin(), "DEL", "g1", nil, "", conf); err != nil {
		t.Errorf("DEL with the namespace gone: %v", err)
	}
	if _, held := l.dm.d.Leases()[dhcp.Key{ContainerID: "g1", Network: "ltgone", IfName: "eth0"}]; held {
		t.Error("lease of g1 still held after DEL")
	}
	if _, ok := l.srv.leases()[ips[0]]; !ok {
		t.Errorf("server lost %s although no DHCPRELEASE could be sent", ips[0])
	}
	if !waitFor(20*time.Second, func() bool {
		_, held := l.dm.d.Leases()[dhcp.Key{ContainerID: "g2", Network: "ltgone", IfName: "eth0"}]
		return !held
	}) {
		t.Error("lease of a vanished namespace still held after T1")
	}
}

// macvlan + dhcp: two pods on macvlan links of one master reach the
// server behind it and get distinct leases; DEL releases them. The macvlan
// plugin is taken from the registry.
func TestMacvlanWithDnsmasq(t *testing.T) {
	macvlanScenario(t, registry.New())
}

func macvlanScenario(t *testing.T, reg *pluginmain.Registry) {
	mv := reg.Lookup("macvlan")
	if mv == nil {
		t.Skip("skipped: the macvlan plugin is not in the registry of this build")
	}
	requireDnsmasq(t)
	host, srvNS := nstest.New(t), nstest.New(t)
	nfttest.Veth(t, host, "ltmv0", srvNS, "ltsrv1")
	nfttest.Addr(t, srvNS, "ltsrv1", "10.92.0.1/24")
	srv := startDnsmasq(t, srvNS, "ltsrv1", 92, 50, 150)
	sockDir := t.TempDir()
	dm := startDaemon(t, filepath.Join(sockDir, "dhcp.sock"), "")
	env := plugintest.Env(reg)
	env.Log = testLogger(t)
	l := &lab{host: host, srvNS: srvNS, srv: srv, dm: dm, env: env, path: cniPath(t, "dhcp", "macvlan"), sockDir: sockDir}
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ltmv","type":"macvlan","master":"ltmv0","mode":"bridge",
		"ipam":{"type":"dhcp","daemonSocketPath":%q}}`, dm.socket))
	var ips []string
	pods := []*netns.NS{nstest.New(t), nstest.New(t)}
	for i, pod := range pods {
		out, err := call(l, mv, "ADD", fmt.Sprintf("mv%d", i), pod, "", conf)
		if err != nil {
			if strings.Contains(err.Error(), "not supported") {
				t.Skipf("skipped: macvlan links cannot be created here: %v", err)
			}
			t.Fatalf("ADD: %v", err)
		}
		var r current.Result
		if err := json.Unmarshal(out, &r); err != nil || len(r.IPs) != 1 {
			t.Fatalf("result %s: %v", out, err)
		}
		ips = append(ips, r.IPs[0].Address.IP.String())
	}
	if ips[0] == ips[1] || !strings.HasPrefix(ips[0], "10.92.0.") {
		t.Fatalf("addresses %v", ips)
	}
	if err := plugintest.Ping(pods[0], "10.92.0.1"); err != nil {
		t.Errorf("pod -> server: %v", err)
	}
	if got := srv.leases(); len(got) != 2 {
		t.Errorf("server leases %v", got)
	}
	for i, pod := range pods {
		if _, err := call(l, mv, "DEL", fmt.Sprintf("mv%d", i), pod, "", conf); err != nil {
			t.Errorf("DEL: %v", err)
		}
	}
	if !waitFor(5*time.Second, func() bool { return len(srv.leases()) == 0 }) {
		t.Errorf("server leases left after DEL: %v", srv.leases())
	}
}

// Without a daemon: STATUS fails with code 50 and ADD with code 11, both
// naming the socket; DEL succeeds (no daemon holds a lease); nothing is
// left in the pod.
func TestNoDaemon(t *testing.T) {
	nstest.RequireRoot(t)
	host, pod := nstest.New(t), nstest.New(t)
	nfttest.Veth(t, host, "ltnd0", pod, "eth0")
	sock := filepath.Join(t.TempDir(), "none.sock")
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ltnd","ipam":{"type":"dhcp","daemonSocketPath":%q}}`, sock))
	env := plugintest.Env(pluginmain.NewRegistry())
	p := dhcp.Plugin()
	for _, c := range []struct {
		cmd  string
		code uint
	}{{"STATUS", 50}, {"ADD", 11}, {"CHECK", 11}, {"GC", 11}} {
		c0 := plugintest.Call{Command: c.cmd, ContainerID: "nd", NS: pod, IfName: "eth0", Conf: conf}
		if c.cmd == "GC" || c.cmd == "STATUS" {
			c0.NS = nil
		}
		if c.cmd == "GC" {
			c0.Conf = []byte(strings.TrimSuffix(string(conf), "}") + `,"cni.dev/valid-attachments":[]}`)
		}
		_, cerr := plugintest.Invoke(host, env, p, c0)
		if cerr == nil || cerr.Code != c.code || !strings.Contains(cerr.Msg, sock) {
			t.Errorf("%s without daemon: %v, want code %d naming %s", c.cmd, cerr, c.code, sock)
		}
	}
	plugintest.Must(t, host, env, p, "DEL", plugintest.Call{ContainerID: "nd", NS: pod, IfName: "eth0", Conf: conf})
	h := nfttest.Handle(t, pod)
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if addrs, _ := h.AddrList(link, netlink.FAMILY_V4); len(addrs) != 0 {
		t.Errorf("addresses left: %v", addrs)
	}
}

// No answer from any server: ADD fails within the daemon's timeout with
// code 11, naming the interface; the daemon keeps no lease.
func TestNoServer(t *testing.T) {
	nstest.RequireRoot(t)
	host, pod := nstest.New(t), nstest.New(t)
	nfttest.Veth(t, host, "ltns0", pod, "eth0")
	sockDir := t.TempDir()
	d, err := dhcp.NewDaemon(dhcp.DaemonConfig{Timeout: 2 * time.Second, FirstResend: 500 * time.Millisecond, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := dhcp.Listen(filepath.Join(sockDir, "d.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go d.Serve(ln)
	defer d.Close()
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ltns","ipam":{"type":"dhcp","daemonSocketPath":%q}}`, filepath.Join(sockDir, "d.sock")))
	env := plugintest.Env(pluginmain.NewRegistry())
	h := nfttest.Handle(t, pod)
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, cerr := plugintest.Invoke(host, env, dhcp.Plugin(), plugintest.Call{Command: "ADD", ContainerID: "ns", NS: pod, IfName: "eth0", Conf: conf})
	if cerr == nil || cerr.Code != 11 || !strings.Contains(cerr.Msg, "eth0") || !strings.Contains(cerr.Msg, "no answer") {
		t.Errorf("ADD without server: %v", cerr)
	}
	if el := time.Since(start); el > 6*time.Second {
		t.Errorf("ADD took %s with a 2 s timeout", el)
	}
	if n := len(d.Leases()); n != 0 {
		t.Errorf("daemon holds %d leases", n)
	}
	// The daemon set the interface up for the exchange; the failed ADD
	// leaves it down, as it was.
	if l, err := h.LinkByName("eth0"); err != nil || l.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("eth0 left up after a failed ADD (%v)", err)
	}
	// An interface that does not exist is named.
	_, cerr = plugintest.Invoke(host, env, dhcp.Plugin(), plugintest.Call{Command: "ADD", ContainerID: "ns", NS: pod, IfName: "eth9", Conf: conf})
	if cerr == nil || !strings.Contains(cerr.Msg, "eth9") {
		t.Errorf("ADD on a missing interface: %v", cerr)
	}
}

// The daemon survives clients that crash mid-request or send garbage.
func TestDaemonRobustness(t *testing.T) {
	sockDir := t.TempDir()
	sock := filepath.Join(sockDir, "r.sock")
	dm := startDaemon(t, sock, "")
	// A client that connects, writes half a request and dies.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte(`{"version":1,"op":"allo`))
	c.Close()
	for _, tc := range []struct{ in, want string }{
		{`not json`, `"code":6`},
		{`{"version":99,"op":"status"}`, `"code":1`},
		{`{"version":1,"op":"explode"}`, `unknown operation`},
		{`{"version":1,"op":"allocate","containerID":"c","network":"n","ifName":"eth0"}`, `netns is empty`},
		{`{"version":1,"op":"allocate","containerID":"c","network":"n","ifName":"eth0","netns":"/run/netns/lt-dhcp-none"}`, `"code":4`},
		{`{"version":1,"op":"allocate","containerID":"c","network":"n","ifName":"eth0","netns":"/x","provide":[{"code":53,"data":"AQ=="}]}`, `cannot be provided`},
		{`{"version":1,"op":"release","containerID":"c","network":"n","ifName":"eth0"}`, `"version":1}`},
		{`{"version":1,"op":"status"}`, `"version":1}`},
	} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(tc.in + "\n"))
		buf := make([]byte, 4096)
		n, _ := c.Read(buf)
		c.Close()
		if !strings.Contains(string(buf[:n]), tc.want) {
			t.Errorf("%s -> %s, want %s", tc.in, buf[:n], tc.want)
		}
	}
	// A second daemon on the same socket refuses to start.
	if _, err := dhcp.Listen(sock); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Errorf("second Listen: %v", err)
	}
	dm.stop()
	// The socket is gone with the daemon; STATUS says so.
	_, cerr := plugintest.Invoke(nstest.New(t), plugintest.Env(pluginmain.NewRegistry()), dhcp.Plugin(),
		plugintest.Call{Command: "STATUS", Conf: []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"x","ipam":{"type":"dhcp","daemonSocketPath":%q}}`, sock))})
	if cerr == nil || cerr.Code != 50 {
		t.Errorf("STATUS after stop: %v", cerr)
	}
}

// When the server does not answer unicast renewals, the daemon rebinds by
// broadcast at T2; when a server then refuses the address (DHCPNAK), the
// lease ends: the interface goes down and CHECK fails.
func TestRebindAndNak(t *testing.T) {
	t.Parallel()
	l := newBridgeLab(t, "ltdbr2", 94)
	conf := bridgeConf("1.0.0", "ltdbr2", l.dm.socket)
	pod := nstest.New(t)
	r := addBridge(t, l, conf, "rb", pod, "rb")
	ip := r.IPs[0].Address.IP.String()
	key := dhcp.Key{ContainerID: "rb", Network: "ltdhcp", IfName: "eth0"}
	// Drop DHCP addressed to the server itself: renewals (unicast) are
	// lost, rebinding requests (broadcast) are not.
	nfttest.Nft(t, l.srvNS, "add", "table", "ip", "ltf")
	nfttest.Nft(t, l.srvNS, "add", "chain", "ip", "ltf", "in", "{ type filter hook input priority 0 ; }")
	nfttest.Nft(t, l.srvNS, "add", "rule", "ip", "ltf", "in", "ip", "daddr", "10.94.0.1", "udp", "dport", "67", "counter", "drop")
	rebound := func() bool { ls := l.dm.d.Leases()[key]; return ls.Renewed == 1 && ls.State == dhcp.StateBound }
	if !waitFor(25*time.Second, func() bool { return l.srv.acks(ip) >= 2 && rebound() }) {
		t.Fatalf("no rebinding within 25 s: lease %+v; server log:\n%s", l.dm.d.Leases()[key], l.srv.log())
	}
	if out := nfttest.Nft(t, l.srvNS, "list", "table", "ip", "ltf"); strings.Contains(out, "packets 0 ") {
		t.Errorf("no unicast renewal was attempted before rebinding:\n%s", out)
	}

	// A new server that hands out another range refuses the address.
	l.srv.stop()
	nfttest.Nft(t, l.srvNS, "delete", "table", "ip", "ltf")
	srv2 := startDnsmasq(t, l.srvNS, "ltsrv0", 94, 200, 250)
	if !waitFor(20*time.Second, func() bool { return l.dm.d.Leases()[key].State == dhcp.StateExpired }) {
		t.Fatalf("lease not ended after DHCPNAK: %+v; server log:\n%s", l.dm.d.Leases()[key], srv2.log())
	}
	if !strings.Contains(srv2.log(), "DHCPNAK") {
		t.Errorf("the new server sent no DHCPNAK:\n%s", srv2.log())
	}
	// The lease ends first, then the daemon takes the interface down.
	h := nfttest.Handle(t, pod)
	down := func() bool {
		link, err := h.LinkByName("eth0")
		return err == nil && link.Attrs().Flags&net.FlagUp == 0
	}
	if !waitFor(5*time.Second, down) {
		t.Errorf("eth0 still up 5 s after the lease was refused")
	}
	if _, err := call(l, dhcp.Plugin(), "CHECK", "rb", pod, "", withPrev(t, conf, r)); err == nil || !strings.Contains(err.Error(), "expired or was refused") {
		t.Errorf("CHECK of a refused lease: %v", err)
	}
	plugintest.Must(t, l.host, l.env, bridge.Plugin(), "DEL", plugintest.Call{ContainerID: "rb", NS: pod, IfName: "eth0", Path: l.path, Conf: conf})
	if n := len(l.dm.d.Leases()); n != 0 {
		t.Errorf("daemon holds %d leases after DEL", n)
	}
}
