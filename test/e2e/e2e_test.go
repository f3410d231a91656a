// Package e2e runs the overlay end to end on simulated hosts (internal/sim):
// for every backend, 3 hosts x 2 pods reach each other; a node leaves and
// comes back; daemons restart under traffic without breaking an established
// TCP connection; etcd goes away for 30 s while traffic keeps flowing and
// the daemons recover when it returns.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/sim"
)

const prefix = "le2e-"

var linenBin, linenCNI string

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "linen-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, b := range []struct{ out, pkg string }{{"linen", "./cmd/linen"}, {"linen-cni", "./cmd/linen-cni"}, {"linen-etcd", "./cmd/linen-etcd"}} {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, b.out), "linen.dev/linen/"+strings.TrimPrefix(b.pkg, "./"))
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			cmd.Stderr = os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "build:", err)
				os.RemoveAll(dir)
				os.Exit(1)
			}
		}
		linenBin, linenCNI = filepath.Join(dir, "linen"), filepath.Join(dir, "linen-cni")
		defer os.RemoveAll(dir)
		sim.Sweep(prefix, stateDir())
	}
	nstest.Main(m, prefix)
}

func stateDir() string { return filepath.Join(os.TempDir(), "linen-e2e-state") }

func up(t *testing.T, backend string) *sim.Cluster {
	t.Helper()
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("skipped: ping (iputils-ping) not installed")
	}
	ctx := context.Background()
	cl, err := sim.Up(ctx, sim.Options{Prefix: prefix + strings.ReplaceAll(backend, "-", "") + "-", StateDir: stateDir(),
		Hosts: 3, PodsPerHost: 2, Backend: backend, IPMasq: true, Linen: linenBin, LinenCNI: linenCNI, Out: testWriter{t}})
	if err != nil {
		t.Fatalf("cluster up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range cl.State.Hosts {
				if b, err := os.ReadFile(h.Daemon.Log); err == nil {
					t.Logf("daemon log of %s:\n%s", h.Name, tail(string(b), 40))
				}
			}
		}
		cl.Down(context.Background())
	})
	return cl
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// allReach pings every pod from every other pod; it retries for up to
// wait so that the data plane can converge.
func allReach(t *testing.T, cl *sim.Cluster, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		var bad []string
		for _, r := range sim.PingMatrix(context.Background(), cl.Pods()) {
			if r.Err != nil {
				bad = append(bad, r.Src+"->"+r.Dst)
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pairs unreachable: %v", len(bad), bad)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// routeTo reports whether host i's namespace has a route to prefix.
func routeTo(t *testing.T, cl *sim.Cluster, i int, dst string) bool {
	t.Helper()
	path, _ := cl.Target(fmt.Sprintf("h%d", i))
	ns, err := netns.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == dst {
			return true
		}
	}
	return false
}

// knows reports whether host i forwards to the subnet of host j's pods: a
// kernel route for the backends that program routes per node; for udp,
// whose routes live in the daemon, a ping from host i's first pod to host
// j's first pod.
func knows(t *testing.T, cl *sim.Cluster, i, j int) bool {
	t.Helper()
	if cl.State.Backend != "udp" {
		return routeTo(t, cl, i, podSubnet(cl, j))
	}
	var src sim.Endpoint
	for _, p := range cl.Pods() {
		if strings.HasPrefix(p.Name, fmt.Sprintf("h%d/", i)) {
			src = p
			break
		}
	}
	_, err := sim.Ping(context.Background(), src, cl.State.Host(j).Pods[0].IP, 1)
	return err == nil
}

// podSubnet is the /24 of host i's first pod.
func podSubnet(cl *sim.Cluster, i int) string {
	ip := net.ParseIP(cl.State.Host(i).Pods[0].IP).To4()
	return fmt.Sprintf("%d.%d.%d.0/24", ip[0], ip[1], ip[2])
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leases runs `linen leases` inside the switch namespace (where etcd is).
func leases(t *testing.T, cl *sim.Cluster, args ...string) string {
	t.Helper()
	out, err := sim.Exec(context.Background(), "/run/netns/"+cl.State.Switch, 30*time.Second,
		append(append([]string{linenBin, "leases"}, args...), "--etcd-endpoints", sim.EtcdEndpoint())...)
	if err != nil {
		t.Fatalf("linen leases %v: %v: %s", args, err, out)
	}
	return out
}

func TestBackends(t *testing.T) {
	for _, be := range []string{"vxlan", "host-gw", "udp"} {
		t.Run(be, func(t *testing.T) {
			cl := up(t, be)
			allReach(t, cl, 10*time.Second)
			t.Run("node leaves and comes back", func(t *testing.T) { nodeLeaves(t, cl) })
			t.Run("daemon restart keeps TCP", func(t *testing.T) { restartUnderTraffic(t, cl) })
			t.Run("etcd outage", func(t *testing.T) { etcdOutage(t, cl) })
		})
	}
}

// nodeLeaves: host 3's daemon stops and its lease is deleted; the others
// drop its routes (and, for vxlan, FDB and neighbour entries). It starts
// again, re-leases and everyone reaches its pods again.
func nodeLeaves(t *testing.T, cl *sim.Cluster) {
	sub3 := podSubnet(cl, 3)
	if !knows(t, cl, 1, 3) {
		t.Fatalf("h1 does not forward to %s before the test", sub3)
	}
	if err := cl.StopDaemon(3); err != nil {
		t.Fatal(err)
	}
	leases(t, cl, "delete", sub3)
	waitFor(t, "h1 and h2 to forget "+sub3, 10*time.Second, func() bool {
		return !knows(t, cl, 1, 3) && !knows(t, cl, 2, 3)
	})
	if cl.State.Backend == "vxlan" {
		checkNoVxlanState(t, cl, 1, cl.State.Host(3).Addr)
	}
	if err := cl.StartDaemon(3); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "h1 to learn "+sub3+" again", 20*time.Second, func() bool { return knows(t, cl, 1, 3) })
	allReach(t, cl, 10*time.Second)
}

// checkNoVxlanState: host i's flannel.1 has no FDB entry or neighbour for
// the remote public address.
func checkNoVxlanState(t *testing.T, cl *sim.Cluster, i int, remote string) {
	t.Helper()
	path, _ := cl.Target(fmt.Sprintf("h%d", i))
	out, _ := sim.Exec(context.Background(), path, 10*time.Second, "bridge", "fdb", "show", "dev", "flannel.1")
	if strings.Contains(out, "dst "+remote) {
		t.Errorf("h%d still has an FDB entry to %s:\n%s", i, remote, out)
	}
}

// restartUnderTraffic: an established TCP connection between pods on h1 and
// h2 keeps working while both daemons restart.
func restartUnderTraffic(t *testing.T, cl *sim.Cluster) {
	pods := cl.Pods()
	var src, dst sim.Endpoint
	for _, p := range pods {
		if strings.HasPrefix(p.Name, "h1/") && src.Name == "" {
			src = p
		}
		if strings.HasPrefix(p.Name, "h2/") && dst.Name == "" {
			dst = p
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, err := sim.TCPServer(ctx, dst, 7100)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ns, err := netns.Open(src.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var conn net.Conn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(dst.IP, "7100"), 3*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echo := func(round int) {
		t.Helper()
		msg := []byte(fmt.Sprintf("round %d\n", round))
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(msg); err != nil {
			t.Fatalf("round %d: write: %v", round, err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil {
			t.Fatalf("round %d: read: %v", round, err)
		}
	}
	echo(0)
	for _, i := range []int{1, 2} {
		if err := cl.RestartDaemon(i); err != nil {
			t.Fatal(err)
		}
		echo(i)
	}
	// And while the new daemons settle.
	for r := 3; r < 8; r++ {
		time.Sleep(200 * time.Millisecond)
		echo(r)
	}
}

// etcdOutage: etcd stops for 30 s; pods keep reaching each other; when it
// returns, the daemons' watches resume (a lease deleted afterwards is seen).
func etcdOutage(t *testing.T, cl *sim.Cluster) {
	cl.Etcd().Stop(10 * time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		allReach(t, cl, 5*time.Second)
		time.Sleep(2 * time.Second)
	}
	if err := cl.RestartEtcd(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Recovery: with h3's daemon stopped, its lease is deleted and h1
	// follows; h3 starts again, leases again, and h1 follows that too.
	sub3 := podSubnet(cl, 3)
	if err := cl.StopDaemon(3); err != nil {
		t.Fatal(err)
	}
	leases(t, cl, "delete", sub3)
	waitFor(t, "h1 to forget "+sub3+" after etcd returned", 30*time.Second, func() bool { return !knows(t, cl, 1, 3) })
	if err := cl.StartDaemon(3); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "h3 to re-lease and h1 to learn "+sub3, 60*time.Second, func() bool { return knows(t, cl, 1, 3) })
	allReach(t, cl, 10*time.Second)
}
