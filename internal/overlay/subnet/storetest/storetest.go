package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"linen.dev/linen/internal/overlay/subnet"
)

// Harness is what a Store implementation gives the suite: a fresh, empty
// backing store per call of the factory.
type Harness struct {
	// Open returns a new client of the backing store under a key prefix.
	// The suite closes it.
	Open func(t *testing.T, prefix string) subnet.Store
	// Restart stops the backing server and starts it again on the same
	// data and address; stores opened before must work again afterwards.
	// Nil: the restart case is skipped.
	Restart func(t *testing.T)
	// Compact discards the history before the current revision. Nil: the
	// compaction case is skipped.
	Compact func(t *testing.T)
	// PutRaw writes an arbitrary value at prefix + "/subnets/" + key
	// (no TTL). Nil: the case for foreign keys is skipped.
	PutRaw func(t *testing.T, prefix, key, value string)
	// TTL is the shortest lease TTL the store honours exactly (1 s for
	// etcd with a short election timeout).
	TTL time.Duration
}

// Timeout bounds every wait of the suite.
const Timeout = 30 * time.Second

const prefix = "/linen-test/network"

// Run runs the conformance suite: configuration round trip, create only if
// absent (also under concurrent creators), conditional update and delete,
// reservations, TTL expiry (seen by list and watch), expirations of leases
// written by another client, watch from a revision, live watch, watch
// resumption across a server restart, ErrCompacted after compaction, and
// prefix isolation.
func Run(t *testing.T, newHarness func(t *testing.T) *Harness) {
	cases := []struct {
		name string
		fn   func(t *testing.T, h *Harness)
	}{
		{"Config", testConfig},
		{"CreateOnlyIfAbsent", testCreate},
		{"ConcurrentCreate", testConcurrentCreate},
		{"UpdateLease", testUpdate},
		{"DeleteLease", testDelete},
		{"Reservation", testReservation},
		{"TTLExpiry", testExpiry},
		{"ForeignExpiration", testForeignExpiration},
		{"WatchFromRevision", testWatchFromRevision},
		{"WatchLive", testWatchLive},
		{"WatchResumeAfterRestart", testWatchRestart},
		{"Compaction", testCompaction},
		{"PrefixIsolation", testPrefixIsolation},
		{"ForeignKeys", testForeignKeys},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			if h.TTL <= 0 {
				h.TTL = time.Second
			}
			c.fn(t, h)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, h *Harness, p string) subnet.Store {
	s := h.Open(t, p)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Lease builds a vxlan lease for tests from CIDR strings ("" for a family
// that is off) and the public address (IPv4 or IPv6).
func Lease(v4, v6 string, public string) subnet.Lease {
	l := subnet.Lease{Attrs: subnet.LeaseAttrs{BackendType: "vxlan", BackendData: []byte(`{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`)}}
	if v4 != "" {
		l.Subnet = netip.MustParsePrefix(v4)
	}
	if v6 != "" {
		l.IPv6Subnet = netip.MustParsePrefix(v6)
	}
	if public != "" {
		a := netip.MustParseAddr(public)
		if a.Is4() {
			l.Attrs.PublicIP = a
		} else {
			l.Attrs.PublicIPv6 = a
		}
	}
	return l
}

// ignoreExp compares leases without their expiration.
var ignoreExp = cmpopts.IgnoreFields(subnet.Lease{}, "Expiration")

func list(t *testing.T, s subnet.Store) ([]subnet.Lease, int64) {
	t.Helper()
	ls, rev, err := s.Leases(ctxT(t))
	if err != nil {
		t.Fatalf("Leases: %v", err)
	}
	return ls, rev
}

func create(t *testing.T, s subnet.Store, l subnet.Lease, ttl time.Duration) *subnet.Lease {
	t.Helper()
	n, err := s.CreateLease(ctxT(t), l, ttl)
	if err != nil {
		t.Fatalf("CreateLease(%s): %v", l.Key(), err)
	}
	return n
}

func testConfig(t *testing.T, h *Harness) {
	s := open(t, h, prefix)
	ctx := ctxT(t)
	if _, err := s.Config(ctx); !errors.Is(err, subnet.ErrNotFound) {
		t.Fatalf("Config on an empty store: err = %v, want ErrNotFound", err)
	}
	conf := []byte(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
	if err := s.PutConfig(ctx, conf); err != nil {
		t.Fatal(err)
	}
	got, err := s.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(conf) {
		t.Errorf("Config = %s, want %s", got, conf)
	}
}

func testCreate(t *testing.T, h *Harness) {
	s := open(t, h, prefix)
	ctx := ctxT(t)
	start := time.Now()
	ttl := 30 * time.Second
	a := create(t, s, Lease("10.5.1.0/24", "", "192.0.2.1"), ttl)
	b := create(t, s, Lease("10.5.2.0/24", "fc00:0:0:2::/64", "192.0.2.2"), ttl)
	if a.Revision <= 0 || b.Revision <= a.Revision {
		t.Errorf("revisions %d, %d: want increasing and positive", a.Revision, b.Revision)
	}
	for _, l := range []*subnet.Lease{a, b} {
		if l.Expiration.Before(start.Add(ttl)) || l.Expiration.After(time.Now().Add(ttl+2*time.Second)) {
			t.Errorf("%s: Expiration %v not about now+%v", l.Key(), l.Expiration, ttl)
		}
	}
	if _, err := s.CreateLease(ctx, Lease("10.5.1.0/24", "", "192.0.2.9"), ttl); !errors.Is(err, subnet.ErrExists) {
		t.Errorf("second CreateLease of 10.5.1.0-24: err = %v, want ErrExists", err)
	}
	got, rev := list(t, s)
	if rev < b.Revision {
		t.Errorf("list revision %d < last write %d", rev, b.Revision)
	}
	if diff := cmp.Diff([]subnet.Lease{*a, *b}, got, ignoreExp, cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})); diff != "" {
		t.Errorf("Leases (-want +got):\n%s", diff)
	}
	for i := range got {
		if d := got[i].Expiration.Sub([]*subnet.Lease{a, b}[i].Expiration); d < -2*time.Second || d > 2*time.Second {
			t.Errorf("%s: listed Expiration %v, created %v", got[i].Key(), got[i].Expiration, []*subnet.Lease{a, b}[i].Expiration)
		}
	}
}

func testConcurrentCreate(t *testing.T, h *Harness) {
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		s := open(t, h, prefix)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.CreateLease(ctxT(t), Lease("10.5.7.0/24", "", fmt.Sprintf("192.0.2.%d", i+1)), time.Minute)
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, subnet.ErrExists):
			t.Errorf("creator %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d creators won, want exactly 1", won)
	}
}

func testUpdate(t *testing.T, h *Harness) {
	s := open(t, h, prefix)
	ctx := ctxT(t)
	a := create(t, s, Lease("10.5.1.0/24", "", "192.0.2.1"), time.Minute)
	n := *a
	n.Attrs.BackendData = []byte(`{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}`)
	u, err := s.UpdateLease(ctx, n, 2*time.Minute)
	if err != nil {
		t.Fatalf("UpdateLease: %v", err)
	}
	if u.Revision <= a.Revision || !u.Expiration.After(a.Expiration) {
		t.Errorf("updated lease: revision %d (was %d), expiration %v (was %v): want both later", u.Revision, a.Revision, u.Expiration, a.Expiration)
	}
	got, _ := list(t, s)
	if diff := cmp.Diff([]subnet.Lease{*u}, got, ignoreExp, cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})); diff != "" {
		t.Errorf("Leases after update (-want +got):\n%s", diff)
	}
	// The old revision no longer matches.
	if _, err := s.UpdateLease(ctx, *a, time.Minute); !errors.Is(err, subnet.ErrConflict) {
		t.Errorf("UpdateLease with a stale revision: err = %v, want ErrConflict", err)
	}
	if err := s.DeleteLease(ctx, *u); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateLease(ctx, *u, time.Minute); !errors.Is(err, subnet.ErrNotFound) {
		t.Errorf("UpdateLease of a deleted key: err = %v, want ErrNotFound", err)
	}
}

func testDelete(t *testing.T, h *Harness) {
	s := open(t, h, prefix)
	ctx := ctxT(t)
	a := create(t, s, Lease("10.5.1.0/24", "", "192.0.2.1"), time.Minute)
	b := create(t, s, Lease("10.5.2.0/24", "", "192.0.2.2"), time.Minute)
	stale := *a
	stale.Revision = b.Revision // a revision, but not this key's
	if err := s.DeleteLease(ctx, stale); !errors.Is(err, subnet.ErrConflict) {
		t.Errorf("DeleteLease with a stale revision: err = %v, want ErrConflict", err)
	}
	if err := s.DeleteLease(ctx, *a); err != nil {
		t.Errorf("DeleteLease: %v", err)
	}
	if err := s.DeleteLease(ctx, *a); err != nil {
		t.Errorf("DeleteLease of a missing key: %v, want nil", err)
	}
	anyRev := *b
	anyRev.Revision = 0
	if err := s.DeleteLease(ctx, anyRev); err != nil {
		t.Errorf("unconditional DeleteLease: %v", err)
	}
	if got, _ := list(t, s); len(got) != 0 {
		t.Errorf("Leases after deleting all: %v", got)
	}
}

func testReservation(t *testing.T, h *Harness) {
	s := open(t, h, prefix)
	ctx := ctxT(t)
	r := create(t, s, Lease("10.5.9.0/24", "", "192.0.2.9"), 0)
	if !r.Expiration.IsZero() {
		t.Errorf("reservation Expiration = %v, want zero", r.Expiration)
	}
	u, err := s.UpdateLease(ctx, *r, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := list(t, s)
	if len(got) != 1 || !got[0].Reservation() || got[0].Revision != u.Revision {
		t.Errorf("Leases = %+v, want the reservation at revision %d", got, u.Revision)
	}
}

// waitFor polls cond (every 50 ms, at most Timeout).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// collector gathers watch events from a resume loop like the Manager's.
type collector struct {
	mu     sync.Mutex
	events []subnet.Event
	errs   []error
	next   int64
}

func (c *collector) snapshot() []subnet.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]subnet.Event(nil), c.events...)
}

// watch runs WatchLeases from rev, resuming after breaks from the last
// revision + 1, until ctx ends or the revision is compacted.
func watch(ctx context.Context, s subnet.Store, rev int64) (*collector, <-chan struct{}) {
	c := &collector{next: rev}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			err := s.WatchLeases(ctx, c.next, func(evs []subnet.Event) error {
				c.mu.Lock()
				defer c.mu.Unlock()
				c.events = append(c.events, evs...)
				c.next = evs[len(evs)-1].Revision + 1
				return nil
			})
			c.mu.Lock()
			c.errs = append(c.errs, err)
			c.mu.Unlock()
			if errors.Is(err, subnet.ErrCompacted) {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return c, done
}

func testExpiry(t *testing.T, h *Harness) {
	s := open(t, h, prefix)
	ctx := ctxT(t)
	res := create(t, s, Lease("10.5.9.0/24", "", "192.0.2.9"), 0)
	a := create(t, s, Lease("10.5.1.0/24", "", "192.0.2.1"), h.TTL)
	wctx, cancel := context.WithCancel(ctx)
	c, done := watch(wctx, s, a.Revision+1)
	defer func() { cancel(); <-done }()
	waitFor(t, "the lease to expire", func() bool {
		got, _ := list(t, s)
		return len(got) == 1
	})
	if time.Now().Before(a.Expiration.Add(-time.Second)) {
		t.Errorf("lease gone at %v, before its expiration %v", time.Now(), a.Expiration)
	}
	got, _ := list(t, s)
	if got[0].Key() != res.Key() {
		t.Errorf("left after expiry: %v, want the reservation %s", got, res.Key())
	}
	waitFor(t, "the watch to report the expiry", func() bool { return len(c.snapshot()) >= 1 })
	ev := c.snapshot()[0]
	if ev.Type != subnet.EventDelete || ev.Lease.Key() != a.Key() || ev.Revision <= a.Revision {
		t.Errorf("watch event %+v, want delete of %s after revision %d", ev, a.Key(), a.Revision)
	}
}

func testForeignExpiration(t *testing.T, h *Harness) {
	s1, s2 := open(t, h, prefix), open(t, h, prefix)
	ttl := 20 * time.Second
	before := time.Now()
	a := create(t, s1, Lease("10.5.1.0/24", "", "192.0.2.1"), ttl)
	after := time.Now()
	got, _ := list(t, s2)
	if len(got) != 1 {
		t.Fatalf("Leases = %v", got)
	}
	exp := got[0].Expiration
	if exp.Before(before.Add(ttl-2*time.Second)) || exp.After(after.Add(ttl+time.Second)) {
		t.Errorf("another client sees Expiration %v, want about %v", exp, a.Expiration)
	}
	// A watcher of the second client sees it too.
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	c, done := watch(ctx, s2, a.Revision)
	defer func() { cancel(); <-done }()
	waitFor(t, "the put event", func() bool { return len(c.snapshot()) >= 1 })
	if e := c.snapshot()[0].Lease.Expiration; e.Sub(exp).Abs() > 2*time.Second {
		t.Errorf("watched Expiration %v, listed %v", e, exp)
	}
}

type evSummary struct {
	Type subnet.EventType
	Key  string
	Rev  int64
}

func summarize(evs []subnet.Event) []evSummary {
	out := make([]evSummary, len(evs))
	for i, e := range evs {
		out[i] = evSummary{e.Type, e.Lease.Key(), e.Revision}
	}
	return out
}

func testWatchFromRevision(t *testing.T, h *Harness) {
	s := open(t, h, prefix)
	ctx := ctxT(t)
	a := create(t, s, Lease("10.5.1.0/24", "", "192.0.2.1"), time.Minute)
	b := create(t, s, Lease("10.5.2.0/24", "", "192.0.2.2"), time.Minute)
	if err := s.DeleteLease(ctx, *a); err != nil {
		t.Fatal(err)
	}
	_, rev := list(t, s)
	want := []evSummary{{subnet.EventPut, a.Key(), a.Revision}, {subnet.EventPut, b.Key(), b.Revision}, {subnet.EventDelete, a.Key(), rev}}
	for _, from := range []int64{a.Revision, b.Revision, rev} {
		var got []subnet.Event
		stop := errors.New("stop")
		err := s.WatchLeases(ctx, from, func(evs []subnet.Event) error {
			got = append(got, evs...)
			if got[len(got)-1].Revision >= rev {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) {
			t.Errorf("WatchLeases(%d) = %v, want fn's error", from, err)
		}
		var w []evSummary
		for _, e := range want {
			if e.Rev >= from {
				w = append(w, e)
			}
		}
		if diff := cmp.Diff(w, summarize(got)); diff != "" {
			t.Errorf("WatchLeases(%d) events (-want +got):\n%s", from, diff)
		}
		if from == a.Revision && len(got) > 0 {
			if diff := cmp.Diff(*a, got[0].Lease, ignoreExp, cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})); diff != "" {
				t.Errorf("watched lease (-want +got):\n%s", diff)
			}
		}
	}
	// Ending ctx ends the watch with ctx's error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.WatchLeases(cctx, rev+1, func([]subnet.Event) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("WatchLeases on a canceled ctx = %v, want context.Canceled", err)
	}
}

func testWatchLive(t *testing.T, h *Harness) {
	s1, s2 := open(t, h, prefix), open(t, h, prefix)
	_, rev := list(t, s1)
	ctx, cancel := context.WithCancel(ctxT(t))
	c, done := watch(ctx, s1, rev+1)
	defer func() { cancel(); <-done }()
	var want []evSummary
	for i := 1; i <= 5; i++ {
		l := create(t, s2, Lease(fmt.Sprintf("10.5.%d.0/24", i), "", fmt.Sprintf("192.0.2.%d", i)), time.Minute)
		want = append(want, evSummary{subnet.EventPut, l.Key(), l.Revision})
	}
	waitFor(t, "5 events", func() bool { return len(c.snapshot()) >= len(want) })
	if diff := cmp.Diff(want, summarize(c.snapshot())); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func testWatchRestart(t *testing.T, h *Harness) {
	if h.Restart == nil {
		t.Skip("the store cannot be restarted")
	}
	s1, s2 := open(t, h, prefix), open(t, h, prefix)
	_, rev := list(t, s1)
	ctx, cancel := context.WithCancel(ctxT(t))
	c, done := watch(ctx, s1, rev+1)
	defer func() { cancel(); <-done }()
	a := create(t, s2, Lease("10.5.1.0/24", "", "192.0.2.1"), time.Minute)
	waitFor(t, "the first event", func() bool { return len(c.snapshot()) >= 1 })
	h.Restart(t)
	var b *subnet.Lease
	waitFor(t, "a write after the restart", func() bool {
		l, err := s2.CreateLease(ctxT(t), Lease("10.5.2.0/24", "", "192.0.2.2"), time.Minute)
		if err == nil {
			b = l
		}
		return err == nil
	})
	waitFor(t, "the event after the restart", func() bool { return len(c.snapshot()) >= 2 })
	want := []evSummary{{subnet.EventPut, a.Key(), a.Revision}, {subnet.EventPut, b.Key(), b.Revision}}
	if diff := cmp.Diff(want, summarize(c.snapshot())); diff != "" {
		t.Errorf("events across the restart (-want +got):\n%s", diff)
	}
	// And the first client still lists.
	if got, _ := list(t, s1); len(got) != 2 {
		t.Errorf("Leases after the restart: %v", got)
	}
}

func testCompaction(t *testing.T, h *Harness) {
	if h.Compact == nil {
		t.Skip("the store cannot compact")
	}
	s := open(t, h, prefix)
	ctx := ctxT(t)
	a := create(t, s, Lease("10.5.1.0/24", "", "192.0.2.1"), time.Minute)
	create(t, s, Lease("10.5.2.0/24", "", "192.0.2.2"), time.Minute)
	if err := s.DeleteLease(ctx, *a); err != nil {
		t.Fatal(err)
	}
	h.Compact(t)
	err := s.WatchLeases(ctx, a.Revision, func([]subnet.Event) error { return errors.New("unexpected events") })
	if !errors.Is(err, subnet.ErrCompacted) {
		t.Errorf("WatchLeases from a compacted revision = %v, want ErrCompacted", err)
	}
	got, rev := list(t, s)
	if len(got) != 1 || got[0].Key() != "10.5.2.0-24" {
		t.Errorf("Leases after compaction = %v", got)
	}
	// Watching from the list's revision works again.
	c := create(t, s, Lease("10.5.3.0/24", "", "192.0.2.3"), time.Minute)
	var evs []subnet.Event
	stop := errors.New("stop")
	if err := s.WatchLeases(ctx, rev+1, func(e []subnet.Event) error { evs = append(evs, e...); return stop }); !errors.Is(err, stop) {
		t.Fatalf("WatchLeases after re-list: %v", err)
	}
	if len(evs) != 1 || evs[0].Lease.Key() != c.Key() {
		t.Errorf("events after re-list: %v", summarize(evs))
	}
}

func testPrefixIsolation(t *testing.T, h *Harness) {
	s1 := open(t, h, "/iso/network")
	s2 := open(t, h, "/iso/network2")
	s3 := open(t, h, "/iso")
	ctx := ctxT(t)
	if err := s1.PutConfig(ctx, []byte(`{"Network":"10.1.0.0/16"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Config(ctx); !errors.Is(err, subnet.ErrNotFound) {
		t.Errorf("config of another prefix visible: %v", err)
	}
	_, rev := list(t, s2)
	wctx, cancel := context.WithCancel(ctx)
	c, done := watch(wctx, s2, rev+1)
	defer func() { cancel(); <-done }()
	a := create(t, s1, Lease("10.1.1.0/24", "", "192.0.2.1"), time.Minute)
	// The same key under another prefix is another key.
	b := create(t, s2, Lease("10.1.1.0/24", "", "192.0.2.2"), time.Minute)
	if got, _ := list(t, s1); len(got) != 1 || got[0].Attrs.PublicIP != a.Attrs.PublicIP {
		t.Errorf("prefix 1 lists %v", got)
	}
	if got, _ := list(t, s2); len(got) != 1 || got[0].Attrs.PublicIP != b.Attrs.PublicIP {
		t.Errorf("prefix 2 lists %v", got)
	}
	if got, _ := list(t, s3); len(got) != 0 {
		t.Errorf("the parent prefix lists %v", got)
	}
	waitFor(t, "prefix 2's own event", func() bool { return len(c.snapshot()) >= 1 })
	if got := summarize(c.snapshot()); len(got) != 1 || got[0].Rev != b.Revision {
		t.Errorf("prefix 2's watch saw %v, want only its own put at %d", got, b.Revision)
	}
}

func testForeignKeys(t *testing.T, h *Harness) {
	if h.PutRaw == nil {
		t.Skip("the store cannot write raw keys")
	}
	s := open(t, h, prefix)
	// flannel's bytes for a reservation written with etcdctl.
	h.PutRaw(t, prefix, "10.5.3.0-24", `{"PublicIP":"192.0.2.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`)
	h.PutRaw(t, prefix, "not-a-subnet", `{}`)
	h.PutRaw(t, prefix, "10.5.4.0-24", `not json`)
	got, _ := list(t, s)
	if len(got) != 1 || got[0].Key() != "10.5.3.0-24" || !got[0].Reservation() ||
		got[0].Attrs.PublicIP != netip.MustParseAddr("192.0.2.3") || string(got[0].Attrs.BackendData) != `{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}` {
		t.Errorf("Leases = %+v, want only the reservation 10.5.3.0-24", got)
	}
}
