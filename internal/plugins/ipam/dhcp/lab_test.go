package dhcp_test

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/ipam/dhcp"
	"linen.dev/linen/internal/plugins/main/bridge"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-dhcp-") }

// tlog adapts t.Log to slog; it stops forwarding once the test is over.
type tlog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tlog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	w := &tlog{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// server is a dnsmasq DHCP server running in a test namespace.
type server struct {
	dir   string
	cmd   *exec.Cmd
	waitc chan error
}

func requireDnsmasq(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("dnsmasq")
	if err != nil {
		t.Skip("skipped: dnsmasq is not installed (apt-get install dnsmasq-base, or `make deps`)")
	}
	return p
}

// startDnsmasq serves 10.<net>.0.<lo>-<hi>/24 on ifName in ns, with a 2 min
// lease (dnsmasq's minimum), T1 10 s and T2 15 s, a router, DNS, a domain
// and search list, and classless routes (default via the router, one via
// another router, one on the link). It is stopped by its pid when the test
// ends.
func startDnsmasq(t *testing.T, ns *netns.NS, ifName string, net, lo, hi int) *server {
	t.Helper()
	bin := requireDnsmasq(t)
	dir := t.TempDir()
	p := func(f string, a ...any) string { return fmt.Sprintf(f, a...) }
	args := []string{
		"--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
		"--interface=" + ifName, "--bind-interfaces",
		"--user=root", "--group=root",
		"--dhcp-authoritative", "--no-ping",
		p("--dhcp-range=10.%d.0.%d,10.%d.0.%d,255.255.255.0,2m", net, lo, net, hi),
		"--dhcp-leasefile=" + filepath.Join(dir, "leases"),
		"--pid-file=" + filepath.Join(dir, "pid"),
		"--log-facility=" + filepath.Join(dir, "log"),
		"--log-dhcp",
		p("--dhcp-option=option:router,10.%d.0.1", net),
		p("--dhcp-option=option:dns-server,10.%d.0.53,10.%d.0.54", net, net),
		"--dhcp-option=option:domain-name,pods.test",
		"--dhcp-option=option:domain-search,pods.test,svc.test",
		"--dhcp-option=option:T1,10",
		"--dhcp-option=option:T2,15",
		p("--dhcp-option=option:classless-static-route,0.0.0.0/0,10.%d.0.1,192.168.77.0/24,10.%d.0.2,10.%d.128.0/17,0.0.0.0", net, net, net),
	}
	s := &server{dir: dir, waitc: make(chan error, 1)}
	err := ns.Do(func() error {
		s.cmd = exec.Command(bin, args...)
		out, err := os.Create(filepath.Join(dir, "stderr"))
		if err != nil {
			return err
		}
		defer out.Close()
		s.cmd.Stdout, s.cmd.Stderr = out, out
		return s.cmd.Start() // forked from this thread: inside ns
	})
	if err != nil {
		t.Fatalf("start dnsmasq: %v", err)
	}
	go func() { s.waitc <- s.cmd.Wait() }()
	t.Cleanup(s.stop)
	// Ready once it has logged its DHCP range.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.log(), "DHCP, IP range") {
		select {
		case err := <-s.waitc:
			b, _ := os.ReadFile(filepath.Join(dir, "stderr"))
			t.Fatalf("dnsmasq exited: %v\n%s%s", err, b, s.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dnsmasq not ready after 10 s:\n%s", s.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// stop ends dnsmasq by its pid: SIGTERM, then SIGKILL after 5 s.
func (s *server) stop() {
	if s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.waitc:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.waitc
	}
	s.cmd.Process = nil
}

func (s *server) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "log"))
	return string(b)
}

// leases maps the addresses in dnsmasq's lease file to their host names.
func (s *server) leases() map[string]string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "leases"))
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 {
			out[f[2]] = f[3]
		}
	}
	return out
}

// acks counts the server's DHCPACKs for addr.
func (s *server) acks(addr string) int {
	n := 0
	for _, l := range strings.Split(s.log(), "\n") {
		if strings.Contains(l, "DHCPACK(") && strings.Contains(l, " "+addr+" ") {
			n++
		}
	}
	return n
}

// waitFor polls cond every 100 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// daemon runs a dhcp daemon in this process on a socket under dir.
type daemon struct {
	d      *dhcp.Daemon
	socket string
	served chan error
}

func startDaemon(t *testing.T, socket, stateDir string) *daemon {
	t.Helper()
	d, err := dhcp.NewDaemon(dhcp.DaemonConfig{StateDir: stateDir, Timeout: 15 * time.Second, FirstResend: time.Second, ResendMax: 4 * time.Second, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := dhcp.Listen(socket)
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	dm := &daemon{d: d, socket: socket, served: make(chan error, 1)}
	go func() { dm.served <- d.Serve(ln) }()
	t.Cleanup(dm.stop)
	return dm
}

func (dm *daemon) stop() {
	if dm.d == nil {
		return
	}
	dm.d.Close()
	<-dm.served
	dm.d = nil
}

// cniPath is a CNI_PATH in which the delegated types exist (the test
// environment then runs them in process).
func cniPath(t *testing.T, types ...string) string {
	dir := t.TempDir()
	for _, ty := range types {
		if err := os.WriteFile(filepath.Join(dir, ty), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// lab is a node ("host" namespace) with a bridge, a DHCP server namespace
// attached to it by a veth, and a daemon.
type lab struct {
	host, srvNS *netns.NS
	srv         *server
	dm          *daemon
	env         *pluginmain.Env
	path        string
	sockDir     string
}

func newBridgeLab(t *testing.T, br string, net int) *lab {
	host, srvNS := nstest.New(t), nstest.New(t)
	nfttest.Bridge(t, host, br)
	nfttest.Veth(t, host, br+"s", srvNS, "ltsrv0")
	nfttest.Enslave(t, host, br+"s", br)
	nfttest.Addr(t, srvNS, "ltsrv0", fmt.Sprintf("10.%d.0.1/24", net))
	srv := startDnsmasq(t, srvNS, "ltsrv0", net, 50, 150)
	sockDir := t.TempDir()
	dm := startDaemon(t, filepath.Join(sockDir, "dhcp.sock"), filepath.Join(sockDir, "leases"))
	env := plugintest.Env(pluginmain.NewRegistry(dhcp.Plugin(), bridge.Plugin()))
	env.Log = testLogger(t)
	return &lab{host: host, srvNS: srvNS, srv: srv, dm: dm, env: env, path: cniPath(t, "dhcp"), sockDir: sockDir}
}

func call(l *lab, p *pluginmain.Plugin, cmd, id string, pod *netns.NS, args string, conf []byte) ([]byte, error) {
	out, cerr := plugintest.Invoke(l.host, l.env, p, plugintest.Call{Command: cmd, ContainerID: id, NS: pod, IfName: "eth0", Args: args, Path: l.path, Conf: conf})
	if cerr != nil {
		return out, cerr
	}
	return out, nil
}
