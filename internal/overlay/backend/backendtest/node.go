package backendtest

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

// Backend is what the tests need of a backend (package backend's interface
// plus the introspection the backends offer).
type Backend interface {
	Prepare(ctx context.Context) (subnet.LeaseAttrs, error)
	Configure(own subnet.Lease) error
	Sync(all []subnet.Lease) error
	MTU() int
	Stats() map[string]uint64
	Close() error
	Desired() (dataplane.State, []error)
	Observe() (dataplane.State, error)
	Writes() uint64
}

// NewFunc builds a backend (vxlan.New, hostgw.New wrapped).
type NewFunc func(cfg *subnet.Config, ext dataplane.ExternalInterface, o dataplane.Options) (Backend, error)

// Node is a backend running on a host.
type Node struct {
	Host  *Host
	B     Backend
	Attrs subnet.LeaseAttrs
	Lease subnet.Lease
}

// Start runs New, Prepare and Configure inside the host's namespace, as the
// daemon does, and closes the backend at test end. The backend's periodic
// resync is off unless o sets it.
func Start(t testing.TB, c *Cluster, h *Host, newFn NewFunc, backendType, backendJSON string, o dataplane.Options) *Node {
	t.Helper()
	if o.Log == nil {
		o.Log = Log(t)
	}
	if o.Resync == 0 {
		o.Resync = -1
	}
	n := &Node{Host: h}
	err := h.NS.Do(func() error {
		b, err := newFn(c.NetConfig(backendType, backendJSON), h.Ext, o)
		if err != nil {
			return err
		}
		n.B = b
		n.Attrs, err = b.Prepare(context.Background())
		if err != nil {
			return err
		}
		n.Lease = h.Lease(n.Attrs)
		return b.Configure(n.Lease)
	})
	if n.B != nil {
		t.Cleanup(func() { n.B.Close() })
	}
	if err != nil {
		t.Fatalf("host %d: start backend: %v", h.N, err)
	}
	return n
}

// Sync calls the backend's Sync inside the host's namespace.
func (n *Node) Sync(t testing.TB, leases []subnet.Lease) {
	t.Helper()
	if err := n.TrySync(leases); err != nil {
		t.Fatalf("host %d: Sync: %v", n.Host.N, err)
	}
}

// TrySync is Sync returning the error.
func (n *Node) TrySync(leases []subnet.Lease) error {
	return n.Host.NS.Do(func() error { return n.B.Sync(leases) })
}

// Leases are the nodes' leases.
func Leases(nodes ...*Node) []subnet.Lease {
	var ls []subnet.Lease
	for _, n := range nodes {
		ls = append(ls, n.Lease)
	}
	return ls
}

// SyncAll syncs every node with the lease set.
func SyncAll(t testing.TB, nodes []*Node, leases []subnet.Lease) {
	t.Helper()
	for _, n := range nodes {
		n.Sync(t, leases)
	}
}

// Programmed compares linen's entries in the kernel with the backend's
// desired state.
func (n *Node) Programmed() error {
	want, _ := n.B.Desired()
	got, err := n.B.Observe()
	if err != nil {
		return err
	}
	if diff := cmp.Diff(want.String(), got.String()); diff != "" {
		return &DiffError{"kernel state (-desired +kernel)", diff}
	}
	return nil
}

// DiffError carries a cmp.Diff.
type DiffError struct{ What, Diff string }

func (e *DiffError) Error() string { return e.What + ":\n" + e.Diff }

type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Log is a logger for backends under test: to the test log with -v,
// discarded otherwise. Backends must be closed before the test ends (Start
// does it).
func Log(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// PingPods pings every pod from every other pod (IPv4, and IPv6 when the
// cluster has it) and reports each failure.
func (c *Cluster) PingPods(t testing.TB) {
	t.Helper()
	for _, a := range c.Hosts {
		for _, b := range c.Hosts {
			if a == b || a.Pod == nil || b.Pod == nil {
				continue
			}
			if err := Ping(a.Pod, b.PodIP); err != nil {
				t.Errorf("pod %d -> pod %d (%s): %v", a.N, b.N, b.PodIP, err)
			}
			if c.IPv6 {
				if err := Ping(a.Pod, b.PodIP6); err != nil {
					t.Errorf("pod %d -> pod %d (%s): %v", a.N, b.N, b.PodIP6, err)
				}
			}
		}
	}
}

// PingPod pings b's pod from a's pod (IPv4).
func PingPod(t testing.TB, a, b *Host) {
	t.Helper()
	if err := Ping(a.Pod, b.PodIP); err != nil {
		t.Errorf("pod %d -> pod %d (%s): %v", a.N, b.N, b.PodIP, err)
	}
}
