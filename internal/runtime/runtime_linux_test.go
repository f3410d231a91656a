package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/plugintest"
)

// testNet numbers the networks of this package's tests: bridge ltrt<n>,
// subnet 10.99.<n>.0/24, pod namespaces lt-rt-p<n>-<name>.
var testNet atomic.Int32

// podEnv is a Runtime whose plugins run in a throw-away host namespace.
type podEnv struct {
	t       *testing.T
	host    *netns.NS
	rt      *Runtime
	ipamDir string
	bridge  string
	subnet  netip.Prefix
	events  *eventLog
}

type eventLog struct {
	mu sync.Mutex
	ev []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

func (l *eventLog) steps(op, pod string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.ev {
		if e.Op == op && e.Pod == pod {
			out = append(out, e.Step)
		}
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("plugin stderr: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newPodEnv sets up a host namespace, a bridge + host-local network in a
// temporary NetDir and a Runtime using the plugins in binDirs. extra are
// plugin objects appended to the chain.
func newPodEnv(t *testing.T, binDirs []string, extra ...string) *podEnv {
	t.Helper()
	host := nstest.New(t)
	n := testNet.Add(1)
	e := &podEnv{
		t:       t,
		host:    host,
		ipamDir: t.TempDir(),
		bridge:  fmt.Sprintf("ltrt%d", n),
		subnet:  netip.MustParsePrefix(fmt.Sprintf("10.99.%d.0/24", n)),
		events:  &eventLog{},
	}
	netDir := t.TempDir()
	plugins := []string{fmt.Sprintf(`{
	  "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
	  "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}
	}`, e.bridge, e.ipamDir, e.subnet)}
	plugins = append(plugins, extra...)
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "ltrt-net%d", "plugins": [%s]}`, n, strings.Join(plugins, ","))
	if err := os.WriteFile(filepath.Join(netDir, "10-ltrt.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	e.rt = &Runtime{
		NetDir:       netDir,
		BinDirs:      binDirs,
		CacheDir:     t.TempDir(),
		StateDir:     t.TempDir(),
		NetnsDir:     netns.DefaultDir,
		NetnsPrefix:  fmt.Sprintf("%sp%d-", nstest.Prefix(), n),
		HostNS:       host,
		PluginStderr: testWriter{t},
		Observe:      e.events.add,
	}
	t.Cleanup(func() {
		// Whatever a failed test left: pods first, while the host lives.
		ents, _ := os.ReadDir(netns.DefaultDir)
		for _, d := range ents {
			if name, ok := strings.CutPrefix(d.Name(), e.rt.NetnsPrefix); ok {
				_ = e.rt.DelPod(context.Background(), name)
				_ = netns.DeleteNamed(filepath.Join(netns.DefaultDir, d.Name()))
			}
		}
	})
	return e
}

func (e *podEnv) add(spec PodSpec) *Pod {
	e.t.Helper()
	p, err := e.rt.AddPod(context.Background(), spec)
	if err != nil {
		e.t.Fatalf("AddPod(%s): %v", spec.Name, err)
	}
	return p
}

func (e *podEnv) del(name string) {
	e.t.Helper()
	if err := e.rt.DelPod(context.Background(), name); err != nil {
		e.t.Fatalf("DelPod(%s): %v", name, err)
	}
}

func podIP(t *testing.T, p *Pod) netip.Addr {
	t.Helper()
	ips := p.IPs()
	if len(ips) != 1 {
		t.Fatalf("pod %s: IPs %v, want one", p.Name, ips)
	}
	return ips[0].Addr()
}

// checkPodNetns checks eth0 with ip, a default route and lo up in the pod's
// namespace.
func checkPodNetns(t *testing.T, p *Pod, ip netip.Addr) {
	t.Helper()
	ns, err := netns.Open(p.Netns)
	if err != nil {
		t.Fatalf("pod %s: %v", p.Name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatalf("pod %s: eth0: %v", p.Name, err)
	}
	addrs, err := h.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range addrs {
		if got, _ := netip.AddrFromSlice(a.IP); got.Unmap() == ip {
			found = true
		}
	}
	if !found {
		t.Errorf("pod %s: eth0 has %v, want %s", p.Name, addrs, ip)
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	def := false
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			def = true
		}
	}
	if !def {
		t.Errorf("pod %s: no default route in %v", p.Name, routes)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("pod %s: lo is down", p.Name)
	}
}

// tcpConnect listens on to's address inside to's namespace and connects
// from from's namespace.
func tcpConnect(t *testing.T, from, to *Pod, toIP netip.Addr) {
	t.Helper()
	var ln net.Listener
	if err := netns.DoPath(to.Netns, func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(toIP, 0).String())
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", to.Name, err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	if err := netns.DoPath(from.Netns, func() error {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("connect %s -> %s: %v", from.Name, ln.Addr(), err)
	}
	select {
	case err := <-accepted:
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("accept: no connection within 10s")
	}
}

// checkClean asserts that nothing of the Runtime is left: no veth in the
// host namespace, no lease, no cache entry, no namespace, no record.
func (e *podEnv) checkClean() {
	t := e.t
	t.Helper()
	h, err := netlink.NewHandleAt(e.host.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// A namespace removed by hand (the "gone" cases) is destroyed by the
	// kernel asynchronously, taking the host end of its veth with it a
	// little later: wait for that, within a bound.
	var veths []string
	for try := 0; try < 100; try++ {
		links, err := h.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		veths = veths[:0]
		for _, l := range links {
			if l.Type() == "veth" {
				veths = append(veths, l.Attrs().Name)
			}
		}
		if len(veths) == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, v := range veths {
		t.Errorf("veth %s left in the host namespace", v)
	}
	filepath.WalkDir(e.ipamDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if _, perr := netip.ParseAddr(d.Name()); perr == nil {
				t.Errorf("lease file %s left", p)
			}
		}
		return nil
	})
	if ents, _ := os.ReadDir(filepath.Join(e.rt.CacheDir, "results")); len(ents) > 0 {
		t.Errorf("%d libcni cache files left: %v", len(ents), ents)
	}
	ents, _ := os.ReadDir(netns.DefaultDir)
	for _, d := range ents {
		if strings.HasPrefix(d.Name(), e.rt.NetnsPrefix) {
			t.Errorf("namespace %s left", d.Name())
		}
	}
	names, err := e.rt.recordNames()
	if err != nil || len(names) > 0 {
		t.Errorf("records left: %v %v", names, err)
	}
}

func refBinDirs(t *testing.T) []string {
	plugintest.RequireRef(t, "bridge", "host-local")
	return []string{plugintest.RefPluginDir}
}

// linenBinDirs installs linen-cni with its plugin links into a temporary
// directory: the binary named by $LINEN_CNI, or one built from
// ./cmd/linen-cni.
func linenBinDirs(t *testing.T) []string {
	t.Helper()
	nstest.RequireRoot(t)
	bin := os.Getenv("LINEN_CNI")
	if bin == "" {
		if testing.Short() {
			t.Skip("skipped in -short mode: builds linen-cni (set LINEN_CNI to use a built one)")
		}
		bin = filepath.Join(t.TempDir(), MultiCallName)
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "linen.dev/linen/cmd/linen-cni")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build linen-cni: %v\n%s", err, out)
		}
	}
	dir := t.TempDir()
	if _, err := Install(context.Background(), InstallOptions{BinDir: dir, From: bin}); err != nil {
		t.Fatalf("install linen-cni: %v", err)
	}
	return []string{dir}
}

func TestPodLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		binDirs func(*testing.T) []string
	}{
		{"reference", refBinDirs},
		{"linen", linenBinDirs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nstest.RequireRoot(t)
			testPodLifecycle(t, tc.binDirs(t))
		})
	}
}

func testPodLifecycle(t *testing.T, binDirs []string) {
	ctx := context.Background()
	e := newPodEnv(t, binDirs)
	rt := e.rt

	a := e.add(PodSpec{Name: "a", Namespace: "team1", UID: "uid-a"})
	b := e.add(PodSpec{Name: "b"})
	ipA, ipB := podIP(t, a), podIP(t, b)
	if ipA == ipB || !e.subnet.Contains(ipA) || !e.subnet.Contains(ipB) {
		t.Fatalf("pod IPs %s, %s: want two distinct addresses in %s", ipA, ipB, e.subnet)
	}
	if len(a.ContainerID) != 64 || a.ContainerID == b.ContainerID {
		t.Errorf("container ids %q, %q", a.ContainerID, b.ContainerID)
	}
	if a.Netns != filepath.Join(netns.DefaultDir, rt.NetnsPrefix+"a") || a.IfName != "eth0" || a.Namespace != "team1" || a.UID != "uid-a" {
		t.Errorf("pod a = %+v", a)
	}
	if b.Namespace != "default" || ValidateUID(b.UID) != nil {
		t.Errorf("pod b defaults: namespace %q, uid %q", b.Namespace, b.UID)
	}
	if diff := cmp.Diff([]string{"config", "netns", "record", "cni", "total"}, e.events.steps("add", "a")); diff != "" {
		t.Errorf("observed add steps (-want +got):\n%s", diff)
	}
	if _, err := rt.AddPod(ctx, PodSpec{Name: "a"}); !errors.Is(err, ErrPodExists) {
		t.Errorf("second AddPod(a) = %v, want ErrPodExists", err)
	}

	checkPodNetns(t, a, ipA)
	checkPodNetns(t, b, ipB)
	if _, err := exec.LookPath("ping"); err == nil {
		ns, err := netns.Open(a.Netns)
		if err != nil {
			t.Fatal(err)
		}
		if err := plugintest.Ping(ns, ipB.String()); err != nil {
			t.Errorf("ping a -> b: %v", err)
		}
		ns.Close()
	} else {
		t.Log("no ping binary: checking with TCP only")
	}
	tcpConnect(t, a, b, ipB)
	tcpConnect(t, b, a, ipA)

	for _, n := range []string{"a", "b"} {
		if err := rt.CheckPod(ctx, n); err != nil {
			t.Errorf("CheckPod(%s): %v", n, err)
		}
	}
	if err := rt.CheckPod(ctx, "nope"); !errors.Is(err, ErrPodNotFound) {
		t.Errorf("CheckPod(nope) = %v, want ErrPodNotFound", err)
	}

	pods, err := rt.ListPods()
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Name, Namespace, Netns, Network string
		IPs                             []netip.Prefix
	}
	var got []row
	for _, p := range pods {
		got = append(got, row{p.Name, p.Namespace, p.Netns, p.Network, p.IPs()})
	}
	want := []row{
		{"a", "team1", a.Netns, a.Network, a.IPs()},
		{"b", "default", b.Netns, b.Network, b.IPs()},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
		t.Errorf("ListPods (-want +got):\n%s", diff)
	}
	if n, err := rt.Status(ctx); err != nil || n.Name != a.Network {
		t.Errorf("Status = %v, %v", n, err)
	}

	// DEL twice.
	e.del("a")
	e.del("a")
	if _, err := rt.GetPod("a"); !errors.Is(err, ErrPodNotFound) {
		t.Errorf("GetPod(a) after DelPod = %v, want ErrPodNotFound", err)
	}
	if _, err := os.Stat(a.Netns); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace of a after DelPod: %v", err)
	}

	// DEL after the namespace was removed by hand.
	if err := netns.DeleteNamed(b.Netns); err != nil {
		t.Fatal(err)
	}
	if err := rt.CheckPod(ctx, "b"); err == nil {
		t.Error("CheckPod(b) without its namespace succeeded")
	}
	e.del("b")
	e.del("b")

	// The address of a deleted pod can be handed out again.
	c := e.add(PodSpec{Name: "c"})
	checkPodNetns(t, c, podIP(t, c))
	e.del("c")
	e.checkClean()
}

func TestAddPodFailureLeavesNothing(t *testing.T) {
	bin := refBinDirs(t)
	// bridge and host-local succeed, then the chain fails on a plugin that
	// does not exist: AddPod must undo the first plugin.
	e := newPodEnv(t, bin, `{"type": "no-such-plugin"}`)
	_, err := e.rt.AddPod(context.Background(), PodSpec{Name: "x"})
	if err == nil {
		t.Fatal("AddPod succeeded with a missing plugin")
	}
	if !strings.Contains(err.Error(), "no-such-plugin") || strings.Contains(err.Error(), "undo failed") {
		t.Errorf("AddPod error %q: want the failing plugin named and a clean undo", err)
	}
	if diff := cmp.Diff([]string{"config", "netns", "record", "cni", "cleanup", "total"}, e.events.steps("add", "x")); diff != "" {
		t.Errorf("observed add steps (-want +got):\n%s", diff)
	}
	e.checkClean()
	// The name is free again.
	if _, err := e.rt.AddPod(context.Background(), PodSpec{Name: "x", Capabilities: Capabilities{MAC: "zz"}}); err == nil || !strings.Contains(err.Error(), "mac") {
		t.Errorf("AddPod with a bad MAC = %v, want a validation error", err)
	}
	e.checkClean()
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	e := newPodEnv(t, refBinDirs(t))
	rt := e.rt
	live := e.add(PodSpec{Name: "live"})
	dropped := e.add(PodSpec{Name: "dropped"})
	stale := e.add(PodSpec{Name: "stale"})

	// "dropped" loses its record (its namespace and attachment stay),
	// "stale" loses its namespace (as after a reboot).
	if err := os.Remove(rt.recordPath("dropped")); err != nil {
		t.Fatal(err)
	}
	if err := netns.DeleteNamed(stale.Netns); err != nil {
		t.Fatal(err)
	}
	// An attachment that is not linen's (another runtime sharing the
	// cache) must survive: fake one by copying live's cache entry under
	// another container id with a foreign netns path.
	foreign := writeForeignCacheEntry(t, rt, live)

	res, err := rt.GC(ctx)
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	var deleted []string
	for _, a := range res.Deleted {
		deleted = append(deleted, a.ContainerID)
	}
	wantDeleted := []string{dropped.ContainerID, stale.ContainerID}
	less := func(a, b string) bool { return a < b }
	if diff := cmp.Diff(wantDeleted, deleted, cmpSort(less)); diff != "" {
		t.Errorf("GC deleted (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"stale"}, res.StaleRecords); diff != "" {
		t.Errorf("stale records (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{dropped.Netns}, res.OrphanNetns); diff != "" {
		t.Errorf("orphan namespaces (-want +got):\n%s", diff)
	}
	var valid []string
	for _, a := range res.Valid {
		valid = append(valid, a.ContainerID)
	}
	if diff := cmp.Diff([]string{live.ContainerID, foreign}, valid, cmpSort(less)); diff != "" {
		t.Errorf("valid attachments (-want +got):\n%s", diff)
	}

	// The live pod is untouched.
	if err := rt.CheckPod(ctx, "live"); err != nil {
		t.Errorf("CheckPod(live) after GC: %v", err)
	}
	pods, err := rt.ListPods()
	if err != nil || len(pods) != 1 || pods[0].Name != "live" {
		t.Errorf("ListPods after GC = %v, %v; want only live", pods, err)
	}
	// GC again finds nothing to do.
	res, err = rt.GC(ctx)
	if err != nil || len(res.Deleted)+len(res.StaleRecords)+len(res.OrphanNetns) != 0 {
		t.Errorf("second GC = %+v, %v; want nothing removed", res, err)
	}
	e.del("live")
	if err := os.Remove(filepath.Join(rt.CacheDir, "results", fmt.Sprintf("%s-%s-eth0", live.Network, foreign))); err != nil {
		t.Errorf("foreign cache entry: %v", err)
	}
	e.checkClean()
}

// GC of a 1.1.0 network whose chain has portmap, on a node whose last pod
// is gone: libcni writes the empty list of valid attachments as null,
// which every plugin must take for "none is valid", not for a missing list.
func TestGCNoPodsLeft(t *testing.T) {
	ctx := context.Background()
	bins := linenBinDirs(t)
	host := nstest.New(t)
	n := testNet.Add(1)
	netDir := t.TempDir()
	conf := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "ltrt-gc%d", "plugins": [
	  {"type": "bridge", "bridge": "ltrtg%d", "isGateway": true, "ipMasq": true,
	   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.98.%d.0/24"}]]}},
	  {"type": "portmap", "capabilities": {"portMappings": true}}]}`, n, n, t.TempDir(), n)
	if err := os.WriteFile(filepath.Join(netDir, "10-gc.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	rt := &Runtime{
		NetDir: netDir, BinDirs: bins, CacheDir: t.TempDir(), StateDir: t.TempDir(),
		NetnsDir: netns.DefaultDir, NetnsPrefix: fmt.Sprintf("%sg%d-", nstest.Prefix(), n),
		HostNS: host, PluginStderr: testWriter{t},
	}
	spec := PodSpec{Name: "web", Capabilities: Capabilities{PortMappings: []PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}}}
	if _, err := rt.AddPod(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if res, err := rt.GC(ctx); err != nil || len(res.Valid) != 1 {
		t.Fatalf("GC with one pod: %+v, %v", res, err)
	}
	if err := rt.DelPod(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if res, err := rt.GC(ctx); err != nil || len(res.Valid) != 0 {
		t.Errorf("GC with no pod left: %+v, %v", res, err)
	}
}

func TestDamagedRecord(t *testing.T) {
	ctx := context.Background()
	e := newPodEnv(t, refBinDirs(t))
	rt := e.rt
	e.add(PodSpec{Name: "ok"})
	broken := e.add(PodSpec{Name: "broken"})
	if err := os.WriteFile(rt.recordPath("broken"), []byte(`{"version": 1, "name": "bro`), 0o600); err != nil {
		t.Fatal(err)
	}

	// GC does not guess: a live pod could be behind the damaged record.
	if _, err := rt.GC(ctx); err == nil || !strings.Contains(err.Error(), "linen pod del broken") {
		t.Errorf("GC with a damaged record = %v, want a refusal naming the pod", err)
	}
	if err := rt.CheckPod(ctx, "broken"); err == nil {
		t.Error("CheckPod(broken) succeeded")
	}
	pods, err := rt.ListPods()
	if err == nil || len(pods) != 1 || pods[0].Name != "ok" {
		t.Errorf("ListPods = %v, %v; want pod ok and an error", pods, err)
	}
	if _, err := os.Stat(broken.Netns); err != nil {
		t.Fatalf("namespace of broken: %v", err)
	}

	// DelPod finds the attachment through the cache by its netns path.
	e.del("broken")
	e.del("ok")
	e.checkClean()
}

func cmpSort(less func(a, b string) bool) cmp.Option {
	return cmp.Transformer("sort", func(in []string) []string {
		out := append([]string(nil), in...)
		for i := 1; i < len(out); i++ {
			for j := i; j > 0 && less(out[j], out[j-1]); j-- {
				out[j], out[j-1] = out[j-1], out[j]
			}
		}
		return out
	})
}

// writeForeignCacheEntry copies p's libcni cache entry to a new container
// id whose netns is not one of the Runtime's, and returns that id.
func writeForeignCacheEntry(t *testing.T, rt *Runtime, p *Pod) string {
	t.Helper()
	src := filepath.Join(rt.CacheDir, "results", fmt.Sprintf("%s-%s-%s", p.Network, p.ContainerID, p.IfName))
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	id := NewContainerID()
	s := strings.ReplaceAll(string(b), p.ContainerID, id)
	s = strings.ReplaceAll(s, p.Netns, "/var/run/netns/cni-foreign")
	if err := os.WriteFile(filepath.Join(rt.CacheDir, "results", fmt.Sprintf("%s-%s-%s", p.Network, id, p.IfName)), []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestConcurrentPods drives pods through one Runtime from many goroutines,
// as `linen bench` does.
func TestConcurrentPods(t *testing.T) {
	e := newPodEnv(t, refBinDirs(t))
	const n = 12
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	ips := make(chan netip.Addr, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := e.rt.AddPod(context.Background(), PodSpec{Name: fmt.Sprintf("p%d", i)})
			if err != nil {
				errs <- err
				return
			}
			if ps := p.IPs(); len(ps) == 1 {
				ips <- ps[0].Addr()
			}
		}()
	}
	wg.Wait()
	close(ips)
	seen := map[netip.Addr]bool{}
	for ip := range ips {
		if seen[ip] {
			t.Errorf("address %s given twice", ip)
		}
		seen[ip] = true
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.rt.DelPod(context.Background(), fmt.Sprintf("p%d", i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != n {
		t.Errorf("%d pods got an address, want %d", len(seen), n)
	}
	e.checkClean()
}
