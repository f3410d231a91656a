package cri

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/runtime"
)

// criNamespace is the containerd namespace the CRI plugin uses.
const criNamespace = "k8s.io"

// containerd is one private containerd with its CRI plugin, running inside
// a host network namespace.
type containerd struct {
	t       *testing.T
	name    string
	dir     string // everything of this containerd lives here
	host    *netns.NS
	sock    string
	binDir  string // the CNI bin_dir
	confDir string // the CNI conf_dir
	log     string
	cmd     *exec.Cmd
	exited  chan struct{}
	conn    *grpc.ClientConn
	rt      criv1.RuntimeServiceClient
	img     criv1.ImageServiceClient
}

type containerdOptions struct {
	// Name is a short name, unique in the package: the directory under
	// stateBase() and the cgroup parent "/lcri-<name>".
	Name string
	// Host is the network namespace containerd (and so every CNI plugin
	// it runs) lives in.
	Host *netns.NS
	// BinDir is the CNI bin_dir; empty means a directory in which `linen
	// install` put linen-cni and its plugin names (loopback included).
	BinDir string
	// Conflist is written to the conf_dir before containerd starts.
	Conflist string
}

func (c *containerd) stateDir() string { return filepath.Join(c.dir, "state") }

// netnsDir is where the CRI plugin bind-mounts the pods' namespaces
// (netns_mounts_under_state_dir).
func (c *containerd) netnsDir() string {
	return filepath.Join(c.stateDir(), "io.containerd.grpc.v1.cri", "netns")
}

// instanceDir is the directory of the containerd named name; what the
// plugins keep for its pods (leases, saved configurations) goes there too,
// so that a crashed run's sweep removes it.
func instanceDir(name string) string { return filepath.Join(stateBase(), name) }

func cgroupParent(name string) string { return "/" + prefix + name }

func (c *containerd) config() string {
	d := func(s string) string { return strconv.Quote(filepath.Join(c.dir, s)) }
	return fmt.Sprintf(`version = 2
root = %s
state = %s
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %s
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %q
    netns_mounts_under_state_dir = true
    restrict_oom_score_adj = true
    disable_apparmor = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %q
      conf_dir = %q
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = %s
`, d("root"), d("state"), c.sock, c.sock+".ttrpc", d("opt"), pauseImage, c.binDir, c.confDir, d("runc"))
}

// startContainerd starts a containerd, imports the pause image and waits
// until CRI reports the network ready; the test's cleanup removes every
// sandbox, stops containerd by its pid and removes its files.
func startContainerd(t *testing.T, o containerdOptions) *containerd {
	t.Helper()
	dir := instanceDir(o.Name)
	sweepContainerd(dir)
	c := &containerd{t: t, name: o.Name, dir: dir, host: o.Host, sock: filepath.Join(dir, "c.sock"),
		binDir: o.BinDir, confDir: filepath.Join(dir, "net.d"), log: filepath.Join(dir, "containerd.log"),
		exited: make(chan struct{})}
	if err := os.MkdirAll(c.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if c.binDir == "" {
		c.binDir = filepath.Join(dir, "cni-bin")
		if _, err := runtime.Install(context.Background(), runtime.InstallOptions{BinDir: c.binDir, From: filepath.Join(binDir, "linen-cni")}); err != nil {
			t.Fatal(err)
		}
	}
	if o.Conflist != "" {
		c.writeConflist(o.Conflist)
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(c.config()), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	c.cmd = exec.Command("containerd", "--config", cfg)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// From a thread inside the host namespace: containerd inherits it.
	if err := o.Host.Do(func() error { return c.cmd.Start() }); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "containerd.pid"), []byte(strconv.Itoa(c.cmd.Process.Pid)), 0o644); err != nil {
		t.Error(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.stop)

	if err := c.connect(); err != nil {
		t.Fatalf("containerd: %v\n%s", err, c.logTail(30))
	}
	c.importPause()
	c.waitNetworkReady()
	return c
}

func (c *containerd) writeConflist(conflist string) {
	c.t.Helper()
	tmp := filepath.Join(c.confDir, ".tmp")
	if err := os.WriteFile(tmp, []byte(conflist), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.confDir, "10-"+prefix+c.name+".conflist")); err != nil {
		c.t.Fatal(err)
	}
}

func (c *containerd) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// connect waits until the CRI API answers.
func (c *containerd) connect() error {
	conn, err := grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	c.conn = conn
	c.rt, c.img = criv1.NewRuntimeServiceClient(conn), criv1.NewImageServiceClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v, err := c.rt.Version(ctx, &criv1.VersionRequest{})
		cancel()
		if err == nil {
			c.t.Logf("containerd %s (pid %d, CRI %s) in %s", v.RuntimeVersion, c.cmd.Process.Pid, v.RuntimeApiVersion, c.host.Path())
			return nil
		}
		if !c.alive() {
			return errors.New("exited during start-up")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CRI did not answer within 30 s: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// importPause imports the sandbox image and waits until CRI knows it (its
// image cache is filled asynchronously from containerd's events; before
// that, RunPodSandbox would try to pull it).
func (c *containerd) importPause() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", "--address", c.sock, "--namespace", criNamespace, "images", "import", pauseTar).CombinedOutput()
	if err != nil {
		c.t.Fatalf("ctr images import: %v\n%s\n%s", err, out, c.logTail(20))
	}
	c.waitFor("CRI to know "+pauseImage, 20*time.Second, func() bool {
		r, err := c.img.ImageStatus(ctx, &criv1.ImageStatusRequest{Image: &criv1.ImageSpec{Image: pauseImage}})
		return err == nil && r.Image != nil
	})
}

// waitNetworkReady waits for CRI's NetworkReady condition: the conflist is
// loaded.
func (c *containerd) waitNetworkReady() {
	c.t.Helper()
	c.waitFor("NetworkReady", 20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := c.rt.Status(ctx, &criv1.StatusRequest{})
		if err != nil {
			return false
		}
		for _, cond := range r.Status.GetConditions() {
			if cond.Type == criv1.NetworkReady {
				return cond.Status
			}
		}
		return false
	})
}

func (c *containerd) waitFor(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if !c.alive() {
			c.t.Fatalf("containerd exited while waiting for %s:\n%s", what, c.logTail(30))
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for %s:\n%s", timeout, what, c.logTail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *containerd) logTail(n int) string {
	b, err := os.ReadFile(c.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "containerd log (" + c.log + "):\n" + strings.Join(lines, "\n")
}

// stop removes every sandbox through CRI (so that the plugins release what
// they hold and the shims exit), stops containerd by its pid and removes
// its directory, mounts and cgroups.
func (c *containerd) stop() {
	if c.rt != nil && c.alive() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if r, err := c.rt.ListPodSandbox(ctx, &criv1.ListPodSandboxRequest{}); err == nil {
			for _, s := range r.Items {
				if _, err := c.rt.StopPodSandbox(ctx, &criv1.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
					c.t.Errorf("cleanup: stop sandbox %s: %v", s.Id, err)
				}
				if _, err := c.rt.RemovePodSandbox(ctx, &criv1.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
					c.t.Errorf("cleanup: remove sandbox %s: %v", s.Id, err)
				}
			}
		}
		cancel()
	}
	if c.conn != nil {
		c.conn.Close()
	}
	if c.alive() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			select {
			case <-c.exited:
			case <-time.After(10 * time.Second):
				c.t.Errorf("containerd (pid %d) did not exit after SIGKILL", c.cmd.Process.Pid)
			}
		}
	}
	if c.t.Failed() {
		c.t.Log(c.logTail(40))
	}
	sweepContainerd(c.dir)
}

// sweepContainerd removes a containerd directory and everything that
// belongs to it: the containerd recorded in its pid file, the shims and
// pause processes recorded in its task bundles (the pause pid file, the
// shim's socket; each pid is checked to be ours, by command line or
// cgroup, before it is signalled), the shims' sockets, libcni's cache of
// the loopback network, every mount under the directory (pod namespaces,
// rootfs, shm) and the cgroups of its parent.
func sweepContainerd(dir string) {
	if pid := readPid(filepath.Join(dir, "containerd.pid")); pid > 0 && cmdlineHas(pid, dir) {
		killWait(pid)
	}
	sock := filepath.Join(dir, "c.sock")
	cg := cgroupParent(filepath.Base(dir))
	bundles, _ := filepath.Glob(filepath.Join(dir, "state", "io.containerd.runtime.v2.task", "*", "*"))
	for _, b := range bundles {
		// The pause process's pid file is in the bundle; its parent is the
		// shim.
		if pid := readPid(filepath.Join(b, "init.pid")); pid > 0 && inCgroup(pid, cg) {
			if shim := parentPid(pid); shim > 1 && cmdlineHas(shim, "-address "+sock) {
				killWait(shim)
			}
			killWait(pid)
		}
		if addr := shimAddress(b); strings.HasPrefix(addr, "/run/containerd/s/") {
			os.Remove(addr)
		}
	}
	// A shim whose pause process is gone (or was never started) is found
	// by the private socket address on its command line, which no process
	// but this containerd's shims has.
	for _, pid := range pidsWithArgs("-address", sock) {
		killWait(pid)
	}
	// libcni's cache of containerd's loopback network, by sandbox id.
	sandboxes, _ := os.ReadDir(filepath.Join(dir, "root", "io.containerd.grpc.v1.cri", "sandboxes"))
	for _, s := range sandboxes {
		os.Remove(filepath.Join(cniCacheDir, "cni-loopback-"+s.Name()+"-lo"))
	}
	// Left only if empty: containerd creates them for shim sockets.
	os.Remove("/run/containerd/s")
	os.Remove("/run/containerd")
	unmountUnder(dir)
	os.RemoveAll(dir)
	removeCgroups(cg)
}

// shimAddress is the socket path a task bundle records for its shim.
func shimAddress(bundle string) string {
	b, err := os.ReadFile(filepath.Join(bundle, "address"))
	if err != nil {
		return ""
	}
	return strings.TrimPrefix(strings.TrimSpace(string(b)), "unix://")
}

// parentPid is the parent of pid (0 when unknown).
func parentPid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	rest := string(b)
	if k := strings.LastIndexByte(rest, ')'); k >= 0 {
		rest = rest[k+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// pidsWithArgs lists the processes whose command line has flag followed
// by exactly value.
func pidsWithArgs(flag, value string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == flag && args[i+1] == value {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

func cmdlineHas(pid int, s string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s)
}

func inCgroup(pid int, cg string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	return err == nil && strings.Contains(string(b), cg+"/")
}

// killWait sends SIGKILL and waits (bounded) until the pid is gone or a
// zombie.
func killWait(pid int) {
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 200; i++ {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if f := strings.Fields(string(stat)); len(f) > 2 && f[2] == "Z" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMount(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	f.Close()
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		_ = unix.Unmount(p, unix.MNT_DETACH)
	}
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes the cgroup directory cg (and what is below it) in
// every hierarchy: cgroup v2, and each v1 controller of a hybrid setup.
func removeCgroups(cg string) {
	roots := []string{"/sys/fs/cgroup"}
	if ents, err := os.ReadDir("/sys/fs/cgroup"); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
			}
		}
	}
	for _, r := range roots {
		top := filepath.Join(r, cg)
		if _, err := os.Lstat(top); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}

// cniCacheDir is libcni's default cache directory, which containerd 1.6
// does not let us move.
const cniCacheDir = "/var/lib/cni/results"

// sweepCNICache removes libcni's cached results of this package's networks.
func sweepCNICache() {
	files, _ := filepath.Glob(filepath.Join(cniCacheDir, prefix+"*"))
	for _, f := range files {
		os.Remove(f)
	}
}
