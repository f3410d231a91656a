// Package nstest gives tests throw-away network namespaces.
//
// Every namespace a test package creates is named "<prefix><n>-<pid>", where
// the prefix is unique to the package (Main registers it). Main sweeps
// namespaces left with that prefix by a crashed earlier run before the tests
// start, and after they finish checks that no thread of the test binary was
// left inside a foreign namespace.
package nstest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"linen.dev/linen/internal/netns"
)

var (
	prefix  atomic.Value // string
	counter atomic.Int64
)

// Main runs the tests of a package whose namespaces use the given prefix
// (for example "lt-bridge-"). Use it from TestMain.
func Main(m *testing.M, pfx string) {
	prefix.Store(pfx)
	if os.Geteuid() == 0 {
		Sweep(pfx)
	}
	code := m.Run()
	if os.Geteuid() == 0 {
		Sweep(pfx)
		if err := CheckThreads(); err != nil {
			fmt.Fprintln(os.Stderr, "nstest:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// Prefix is the namespace-name prefix registered by Main.
func Prefix() string {
	p, _ := prefix.Load().(string)
	if p == "" {
		return "lt-misc-"
	}
	return p
}

// Sweep removes every named namespace in /run/netns whose name starts with pfx.
func Sweep(pfx string) { netns.SweepPrefix(netns.DefaultDir, pfx) }

// RequireRoot skips the test, loudly, when it cannot create namespaces.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces (run `sudo make test`)")
	}
}

// Name returns a fresh namespace name with the package prefix.
func Name() string {
	return fmt.Sprintf("%s%d-%d", Prefix(), counter.Add(1), os.Getpid())
}

// New creates a named namespace for the test and removes it when the test
// ends. It skips the test when not root.
func New(t testing.TB) *netns.NS {
	t.Helper()
	RequireRoot(t)
	name := Name()
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
	return ns
}

// CheckThreads reports threads of this process whose network namespace is
// not the one of the process's main thread.
func CheckThreads() error {
	want, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return err
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	var bad []string
	for _, t := range tasks {
		got, err := os.Readlink(filepath.Join("/proc/self/task", t.Name(), "ns/net"))
		if err != nil {
			continue // thread exited
		}
		if got != want {
			bad = append(bad, t.Name()+"="+got)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("threads left in a foreign network namespace: %s", strings.Join(bad, ", "))
	}
	return nil
}
