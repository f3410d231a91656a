// Package cri is the acceptance test through a real container runtime:
// containerd (Debian's 1.6 with runc) creates pod sandboxes through the CRI
// v1 gRPC API, the path the kubelet takes, and runs linen's plugins from a
// private CNI bin_dir with a conflist from a private conf_dir.
//
// Each containerd runs with a private config, root, state, sockets, runc
// root and cgroup parent under one directory of os.TempDir()/lcri-state,
// started from a thread inside a host network namespace the test created:
// the CNI plugins it execs build the pod network there, and the pods'
// namespaces (bind-mounted under its state directory) hang off that host.
// Nothing touches the machine's own network namespace. A run that crashed
// is swept at the next start: containerd by the pid file in its directory,
// the pause processes by the pid files in their task bundles, each shim as
// the parent of its pause process or by the private socket address on its
// command line (every pid is checked against its command line or cgroup
// before it is signalled); then mounts under the state directory, cgroups,
// libcni cache entries of our sandboxes and networks, and namespaces with
// the prefix "lcri-".
//
// Scenarios: bridge + host-local + portmap (address, routes, a host port,
// and the release of every resource on Stop and Remove); linen's flannel
// conflist on two simulated hosts (internal/sim) with `linen daemon` and a
// shared etcd, pods reaching each other over vxlan; 50 pods created and
// removed, leaving nothing behind. With LINEN_CRI_BENCH=N, RunPodSandbox
// latency with linen's plugins against the reference plugins, same
// containerd, same run.
package cri

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/sim"
)

// prefix starts every namespace, network and cgroup name of this package.
const prefix = "lcri-"

var (
	// binDir holds linen, linen-cni and linen-etcd.
	binDir string
	// pauseTar is the OCI image archive of the sandbox image.
	pauseTar string
	// setupErr explains why the binaries or the image could not be built;
	// the tests skip or fail with it.
	setupErr error
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		// Every test skips with its reason.
		os.Exit(m.Run())
	}
	work, err := os.MkdirTemp("", "linen-cri-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sweepAll()
	binDir = filepath.Join(work, "bin")
	if setupErr = buildBinaries(binDir); setupErr == nil {
		pauseTar, setupErr = buildPauseImage(filepath.Join(work, "pause"))
	}
	code := m.Run()
	sweepAll()
	os.RemoveAll(work)
	if err := nstest.CheckThreads(); err != nil {
		fmt.Fprintln(os.Stderr, "nstest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// stateBase holds one directory per containerd and the simulated cluster's
// state; everything in it belongs to this package.
func stateBase() string { return filepath.Join(os.TempDir(), "lcri-state") }

// simStateDir is internal/sim's state directory for this package.
func simStateDir() string { return filepath.Join(stateBase(), "sim") }

// sweepAll removes what an earlier, crashed run left.
func sweepAll() {
	ents, _ := os.ReadDir(stateBase())
	for _, e := range ents {
		if e.IsDir() && e.Name() != "sim" {
			sweepContainerd(filepath.Join(stateBase(), e.Name()))
		}
	}
	sim.Sweep(prefix+"sim-", simStateDir())
	sweepCNICache()
	nstest.Sweep(prefix)
	os.Remove(simStateDir())
	os.Remove(stateBase()) // only when empty
}

// buildBinaries puts linen, linen-cni and linen-etcd into dir: copied from
// LINEN_BIN when set (`make integration` builds them), built otherwise.
func buildBinaries(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, b := range []string{"linen", "linen-cni", "linen-etcd"} {
		out := filepath.Join(dir, b)
		if pre := os.Getenv("LINEN_BIN"); pre != "" {
			data, err := os.ReadFile(filepath.Join(pre, b))
			if err != nil {
				return fmt.Errorf("LINEN_BIN: %w", err)
			}
			if err := os.WriteFile(out, data, 0o755); err != nil {
				return err
			}
			continue
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, "linen.dev/linen/cmd/"+b)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", b, err, o)
		}
	}
	return nil
}

// requireSetup skips the test when it cannot run here, saying why, and
// fails it when the harness could not be built.
func requireSetup(t *testing.T) {
	t.Helper()
	nstest.RequireRoot(t)
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("skipped: %s not installed (apt-get install containerd runc, or `make deps`)", b)
		}
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipped: nft not installed (apt-get install nftables, or `make deps`)")
	}
	if !hasOverlayFS() {
		t.Skip("skipped: the kernel has no overlay filesystem, which containerd's snapshotter needs")
	}
	if setupErr != nil {
		t.Fatalf("setup: %v", setupErr)
	}
}

func hasOverlayFS() bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	return containsWord(string(b), "overlay")
}

var nsCounter atomic.Int64

// newNS creates a network namespace named with the package prefix and
// removes it when the test ends.
func newNS(t *testing.T) *netns.NS {
	t.Helper()
	nstest.RequireRoot(t)
	name := fmt.Sprintf("%s%d-%d", prefix, nsCounter.Add(1), os.Getpid())
	ns, err := netns.NewNamed(netns.DefaultDir, name)
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.DeleteNamed(ns.Path()); err != nil {
			t.Errorf("delete netns: %v", err)
		}
	})
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("loopback up in %s: %v", name, err)
	}
	return ns
}

func containsWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}
