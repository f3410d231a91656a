package subnet_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"linen.dev/linen/internal/overlay/subnet"
	"linen.dev/linen/internal/overlay/subnet/etcdstore/etcdtest"
)

const prefix = "/coreos.com/network"

// timeout bounds every wait in these tests.
const timeout = 30 * time.Second

type env struct {
	srv *etcdtest.Server
}

func newEnv(t *testing.T, conf string) *env {
	t.Helper()
	e := &env{srv: etcdtest.Start(t)}
	if conf != "" {
		if err := e.srv.Store(t, prefix).PutConfig(ctxT(t), []byte(conf)); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) manager(t *testing.T, o subnet.ManagerOptions) *subnet.Manager {
	return subnet.NewManager(e.srv.Store(t, prefix), fast(o))
}

func fast(o subnet.ManagerOptions) subnet.ManagerOptions {
	if o.BackoffMin == 0 {
		o.BackoffMin, o.BackoffMax = 10*time.Millisecond, 200*time.Millisecond
	}
	if o.ConfigRetry == 0 {
		o.ConfigRetry = 50 * time.Millisecond
	}
	if o.RetryInterval == 0 {
		o.RetryInterval = 200 * time.Millisecond
	}
	return o
}

func node(i int) subnet.LeaseAttrs {
	return subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), BackendType: "vxlan",
		BackendData: []byte(fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:00:%02x"}`, i))}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func keys(ls []subnet.Lease) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Key()
	}
	return out
}

func list(t *testing.T, s subnet.Store) []subnet.Lease {
	t.Helper()
	ls, _, err := s.Leases(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

const conf16 = `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`

func TestConfigWaitsForKey(t *testing.T) {
	e := newEnv(t, "")
	m := e.manager(t, subnet.ManagerOptions{})
	done := make(chan error, 1)
	var got *subnet.Config
	go func() {
		var err error
		got, err = m.Config(ctxT(t))
		done <- err
	}()
	s := e.srv.Store(t, prefix)
	time.Sleep(200 * time.Millisecond)                                                // Config is polling a missing key meanwhile
	if err := s.PutConfig(ctxT(t), []byte(`{"Network":"10.5.0.0/33"}`)); err != nil { // invalid: still waiting
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Config returned early: %v", err)
	default:
	}
	if err := s.PutConfig(ctxT(t), []byte(conf16)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got.Network != netip.MustParsePrefix("10.5.0.0/16") || got.BackendType != "vxlan" {
		t.Errorf("Config = %+v", got)
	}
	// A canceled context ends the wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := newEnv(t, "").manager(t, subnet.ManagerOptions{}).Config(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Config with a canceled ctx: %v", err)
	}
}

func TestAcquire(t *testing.T) {
	e := newEnv(t, conf16)
	ctx := ctxT(t)
	cfg, _ := subnet.ParseConfig([]byte(conf16))
	m := e.manager(t, subnet.ManagerOptions{})
	start := time.Now()
	l, err := m.Acquire(ctx, node(1), subnet.Previous{})
	if err != nil {
		t.Fatal(err)
	}
	if !subnet.Fits(cfg, *l) || l.Attrs.PublicIP != node(1).PublicIP || l.Revision == 0 {
		t.Errorf("acquired %+v", l)
	}
	if l.Expiration.Before(start.Add(subnet.DefaultTTL)) || l.Expiration.After(time.Now().Add(subnet.DefaultTTL+time.Second)) {
		t.Errorf("Expiration %v, want now + 24h", l.Expiration)
	}
	s := e.srv.Store(t, prefix)
	if got := keys(list(t, s)); len(got) != 1 || got[0] != l.Key() {
		t.Errorf("store holds %v", got)
	}

	t.Run("own lease reused by public IP", func(t *testing.T) {
		a := node(1)
		a.BackendData = []byte(`{"VNI":1,"VtepMAC":"02:00:00:00:00:ff"}`)
		l2, err := e.manager(t, subnet.ManagerOptions{}).Acquire(ctx, a, subnet.Previous{Subnet: netip.MustParsePrefix("10.5.200.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		if l2.Key() != l.Key() || l2.Revision <= l.Revision || string(l2.Attrs.BackendData) != string(a.BackendData) {
			t.Errorf("re-acquired %+v, want %s renewed with the new attrs", l2, l.Key())
		}
		if got := list(t, s); len(got) != 1 || string(got[0].Attrs.BackendData) != string(a.BackendData) {
			t.Errorf("store holds %+v", got)
		}
	})
	t.Run("previous subnet", func(t *testing.T) {
		prev := netip.MustParsePrefix("10.5.200.0/24")
		l3, err := m.Acquire(ctx, node(2), subnet.Previous{Subnet: prev})
		if err != nil {
			t.Fatal(err)
		}
		if l3.Subnet != prev {
			t.Errorf("acquired %s, want the previous %s", l3.Subnet, prev)
		}
		// Node 3 remembers the same subnet: taken, so it gets another.
		l4, err := m.Acquire(ctx, node(3), subnet.Previous{Subnet: prev})
		if err != nil {
			t.Fatal(err)
		}
		if l4.Subnet == prev || !subnet.Fits(cfg, *l4) {
			t.Errorf("acquired %s with the previous subnet taken", l4.Subnet)
		}
	})
	t.Run("reservation stays a reservation", func(t *testing.T) {
		r, err := s.CreateLease(ctx, subnet.Lease{Subnet: netip.MustParsePrefix("10.5.99.0/24"), Attrs: node(9)}, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.Acquire(ctx, node(9), subnet.Previous{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Key() != r.Key() || !got.Reservation() {
			t.Errorf("acquired %+v, want the reservation %s", got, r.Key())
		}
	})
}

func TestAcquireExhaustion(t *testing.T) {
	e := newEnv(t, `{"Network":"10.5.0.0/28"}`) // 3 usable /30s
	m := e.manager(t, subnet.ManagerOptions{})
	seen := map[string]bool{}
	for i := 1; i <= 3; i++ {
		l, err := m.Acquire(ctxT(t), node(i), subnet.Previous{})
		if err != nil {
			t.Fatal(err)
		}
		seen[l.Key()] = true
	}
	if len(seen) != 3 {
		t.Errorf("3 nodes got %v", seen)
	}
	if _, err := m.Acquire(ctxT(t), node(4), subnet.Previous{}); !errors.Is(err, subnet.ErrNoFreeSubnet) {
		t.Errorf("4th node: err = %v, want ErrNoFreeSubnet", err)
	}
}

// TestAcquireConcurrent: 8 managers with identically seeded random sources
// pick the same subnet each round, so all but one lose every race and try
// again; all end up with distinct subnets.
func TestAcquireConcurrent(t *testing.T) {
	e := newEnv(t, `{"Network":"10.5.0.0/24","SubnetLen":29}`)
	const n = 8
	leases := make([]*subnet.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		m := e.manager(t, subnet.ManagerOptions{Rand: rand.New(rand.NewPCG(7, 7))})
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], errs[i] = m.Acquire(ctxT(t), node(i+1), subnet.Previous{})
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("manager %d: %v", i, errs[i])
		}
		seen[leases[i].Key()]++
	}
	if len(seen) != n {
		t.Errorf("subnets %v: want %d distinct", seen, n)
	}
	if got := list(t, e.srv.Store(t, prefix)); len(got) != n {
		t.Errorf("store holds %d leases, want %d", len(got), n)
	}
}

// flakyStore fails UpdateLease (renewals) while failUpdates is set, and
// breaks WatchLeases while broken is set (a simulated disconnection).
type flakyStore struct {
	subnet.Store
	failUpdates atomic.Bool
	broken      atomic.Bool
	lists       atomic.Int32
	compacted   atomic.Int32

	mu          sync.Mutex
	cancelWatch context.CancelFunc
}

func (f *flakyStore) UpdateLease(ctx context.Context, l subnet.Lease, ttl time.Duration) (*subnet.Lease, error) {
	if f.failUpdates.Load() {
		return nil, errors.New("injected: store unreachable")
	}
	return f.Store.UpdateLease(ctx, l, ttl)
}

func (f *flakyStore) Leases(ctx context.Context) ([]subnet.Lease, int64, error) {
	if f.broken.Load() {
		return nil, 0, errors.New("injected: store unreachable")
	}
	f.lists.Add(1)
	return f.Store.Leases(ctx)
}

func (f *flakyStore) WatchLeases(ctx context.Context, rev int64, fn func([]subnet.Event) error) error {
	if f.broken.Load() {
		return errors.New("injected: store unreachable")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.mu.Lock()
	f.cancelWatch = cancel
	f.mu.Unlock()
	err := f.Store.WatchLeases(ctx, rev, fn)
	if errors.Is(err, subnet.ErrCompacted) {
		f.compacted.Add(1)
	}
	if errors.Is(err, context.Canceled) && f.broken.Load() {
		return errors.New("injected: connection lost")
	}
	return err
}

// disconnect breaks the running watch and makes new ones fail.
func (f *flakyStore) disconnect() {
	f.broken.Store(true)
	f.mu.Lock()
	if f.cancelWatch != nil {
		f.cancelWatch()
	}
	f.mu.Unlock()
}

// keeper runs Keep in the background and records onNew calls.
type keeper struct {
	mu    sync.Mutex
	news  []*subnet.Lease
	done  chan error
	abort context.CancelFunc
}

func keep(t *testing.T, m *subnet.Manager, l *subnet.Lease) *keeper {
	ctx, cancel := context.WithCancel(ctxT(t))
	k := &keeper{done: make(chan error, 1), abort: cancel}
	go func() {
		k.done <- m.Keep(ctx, l, func(n *subnet.Lease) {
			k.mu.Lock()
			k.news = append(k.news, n)
			k.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-k.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Keep returned %v, want context.Canceled", err)
		}
	})
	return k
}

func (k *keeper) newLeases() []*subnet.Lease {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]*subnet.Lease(nil), k.news...)
}

func TestKeepRenews(t *testing.T) {
	e := newEnv(t, conf16)
	m := e.manager(t, subnet.ManagerOptions{TTL: 3 * time.Second, RenewMargin: 2 * time.Second})
	l, err := m.Acquire(ctxT(t), node(1), subnet.Previous{})
	if err != nil {
		t.Fatal(err)
	}
	k := keep(t, m, l)
	s := e.srv.Store(t, prefix)
	// Several TTLs later the lease is still there, renewed in place.
	waitFor(t, "three renewals", func() bool {
		got := list(t, s)
		return len(got) == 1 && got[0].Key() == l.Key() && got[0].Revision >= l.Revision+3
	})
	if n := k.newLeases(); len(n) != 0 {
		t.Errorf("onNew called %d times while renewing", len(n))
	}
}

func TestKeepReacquiresAfterExpiry(t *testing.T) {
	e := newEnv(t, conf16)
	fs := &flakyStore{Store: e.srv.Store(t, prefix)}
	m := subnet.NewManager(fs, fast(subnet.ManagerOptions{TTL: time.Second, RenewMargin: 500 * time.Millisecond}))
	l, err := m.Acquire(ctxT(t), node(1), subnet.Previous{})
	if err != nil {
		t.Fatal(err)
	}
	fs.failUpdates.Store(true) // renewals fail: the lease expires
	k := keep(t, m, l)
	waitFor(t, "a new lease after expiry", func() bool { return len(k.newLeases()) >= 1 })
	n := k.newLeases()[0]
	if n.Key() != l.Key() || n.Revision <= l.Revision {
		t.Errorf("new lease %s@%d, want the same subnet %s again", n.Key(), n.Revision, l.Key())
	}
	fs.failUpdates.Store(false)
	// Renewals work again: the new lease stays.
	s := e.srv.Store(t, prefix)
	waitFor(t, "renewals of the new lease", func() bool {
		got := list(t, s)
		return len(got) == 1 && got[0].Revision >= n.Revision+2
	})
}

func TestKeepReacquiresAfterDeletion(t *testing.T) {
	e := newEnv(t, conf16)
	m := e.manager(t, subnet.ManagerOptions{})
	l, err := m.Acquire(ctxT(t), node(1), subnet.Previous{})
	if err != nil {
		t.Fatal(err)
	}
	k := keep(t, m, l)
	s := e.srv.Store(t, prefix)
	time.Sleep(100 * time.Millisecond) // let Keep's watch start (it catches up from the list anyway)
	if err := s.DeleteLease(ctxT(t), *l); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new lease after deletion", func() bool { return len(k.newLeases()) >= 1 })
	if n := k.newLeases()[0]; n.Key() != l.Key() {
		t.Errorf("new lease %s, want the same subnet %s", n.Key(), l.Key())
	}
	if got := keys(list(t, s)); len(got) != 1 || got[0] != l.Key() {
		t.Errorf("store holds %v", got)
	}

	// Another node takes the key over: a different subnet.
	cur := k.newLeases()[0]
	other := *cur
	other.Attrs = node(2)
	if _, err := s.UpdateLease(ctxT(t), other, time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a second new lease", func() bool { return len(k.newLeases()) >= 2 })
	if n := k.newLeases()[1]; n.Key() == l.Key() || n.Attrs.PublicIP != node(1).PublicIP {
		t.Errorf("after the takeover: %s for %s, want another subnet for node 1", n.Key(), n.Attrs.PublicIP)
	}
}

// watcher runs Watch in the background and records every set it delivers.
type watcher struct {
	mu   sync.Mutex
	sets [][]subnet.Lease
	done chan error
}

func watch(t *testing.T, m *subnet.Manager) *watcher {
	ctx, cancel := context.WithCancel(ctxT(t))
	w := &watcher{done: make(chan error, 1)}
	go func() {
		w.done <- m.Watch(ctx, func(all []subnet.Lease) {
			w.mu.Lock()
			w.sets = append(w.sets, all)
			w.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-w.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v, want context.Canceled", err)
		}
	})
	return w
}

func (w *watcher) last() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.sets) == 0 {
		return nil
	}
	return keys(w.sets[len(w.sets)-1])
}

func (w *watcher) waitSet(t *testing.T, want ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("lease set %v", want), func() bool {
		return fmt.Sprint(w.last()) == fmt.Sprint(want)
	})
}

func TestWatch(t *testing.T) {
	e := newEnv(t, conf16)
	s := e.srv.Store(t, prefix)
	ctx := ctxT(t)
	pre, err := s.CreateLease(ctx, subnet.Lease{Subnet: netip.MustParsePrefix("10.5.1.0/24"), Attrs: node(1)}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	w := watch(t, e.manager(t, subnet.ManagerOptions{}))
	w.waitSet(t, "10.5.1.0-24")
	b, _ := s.CreateLease(ctx, subnet.Lease{Subnet: netip.MustParsePrefix("10.5.2.0/24"), Attrs: node(2)}, time.Minute)
	w.waitSet(t, "10.5.1.0-24", "10.5.2.0-24")
	short, _ := s.CreateLease(ctx, subnet.Lease{Subnet: netip.MustParsePrefix("10.5.3.0/24"), Attrs: node(3)}, time.Second)
	w.waitSet(t, "10.5.1.0-24", "10.5.2.0-24", "10.5.3.0-24")
	if err := s.DeleteLease(ctx, *pre); err != nil {
		t.Fatal(err)
	}
	// The deletion, then the expiry of the short lease.
	w.waitSet(t, "10.5.2.0-24")
	if time.Now().Before(short.Expiration.Add(-time.Second)) {
		t.Errorf("short lease gone before it expired")
	}
	// A renewal is a change too: delivered with the new expiration.
	r, err := s.UpdateLease(ctx, *b, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the renewal", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		last := w.sets[len(w.sets)-1]
		return len(last) == 1 && last[0].Revision == r.Revision
	})
}

func TestWatchSurvivesRestart(t *testing.T) {
	e := newEnv(t, conf16)
	m := e.manager(t, subnet.ManagerOptions{})
	w := watch(t, m)
	a, err := m.Acquire(ctxT(t), node(1), subnet.Previous{})
	if err != nil {
		t.Fatal(err)
	}
	w.waitSet(t, a.Key())
	e.srv.Restart(t)
	var b *subnet.Lease
	waitFor(t, "an acquisition after the restart", func() bool {
		b, err = m.Acquire(ctxT(t), node(2), subnet.Previous{})
		return err == nil
	})
	want := []string{a.Key(), b.Key()}
	if want[0] > want[1] {
		want[0], want[1] = want[1], want[0]
	}
	w.waitSet(t, want...)
}

func TestWatchRelistsAfterCompaction(t *testing.T) {
	e := newEnv(t, conf16)
	s := e.srv.Store(t, prefix)
	fs := &flakyStore{Store: s}
	ctx := ctxT(t)
	a, _ := s.CreateLease(ctx, subnet.Lease{Subnet: netip.MustParsePrefix("10.5.1.0/24"), Attrs: node(1)}, time.Minute)
	w := watch(t, subnet.NewManager(fs, fast(subnet.ManagerOptions{})))
	w.waitSet(t, a.Key())

	fs.disconnect()
	// Changes while the watcher is away, then the history is compacted.
	b, _ := s.CreateLease(ctx, subnet.Lease{Subnet: netip.MustParsePrefix("10.5.2.0/24"), Attrs: node(2)}, time.Minute)
	if err := s.DeleteLease(ctx, *a); err != nil {
		t.Fatal(err)
	}
	e.srv.Compact(t)
	fs.broken.Store(false)

	w.waitSet(t, b.Key())
	if fs.compacted.Load() == 0 || fs.lists.Load() < 2 {
		t.Errorf("compacted watches %d, lists %d: want a compacted watch and a second list", fs.compacted.Load(), fs.lists.Load())
	}
	// And it keeps watching after the re-list.
	c, _ := s.CreateLease(ctx, subnet.Lease{Subnet: netip.MustParsePrefix("10.5.3.0/24"), Attrs: node(3)}, time.Minute)
	w.waitSet(t, b.Key(), c.Key())
}

// TestWatchDirectEtcdWrites: keys written with plain etcd puts (as
// etcdctl does: no TTL = reservation) show up, and junk keys do not.
func TestWatchDirectEtcdWrites(t *testing.T) {
	e := newEnv(t, conf16)
	w := watch(t, e.manager(t, subnet.ManagerOptions{}))
	waitFor(t, "the first set", func() bool { return w.last() != nil })
	c := e.srv.Client(t)
	ctx := ctxT(t)
	put := func(k, v string) {
		if _, err := c.Put(ctx, prefix+"/subnets/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	put("10.5.7.0-24", `{"PublicIP":"192.0.2.7","PublicIPv6":null,"BackendType":"host-gw"}`)
	put("junk", `{}`)
	w.waitSet(t, "10.5.7.0-24")
	put("10.5.7.0-24", `not json`) // no longer a lease
	w.waitSet(t)
	if _, err := c.Delete(ctx, prefix+"/subnets/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
}

func TestAcquireDualStack(t *testing.T) {
	conf := `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00:5::/48","Backend":{"Type":"vxlan"}}`
	e := newEnv(t, conf)
	cfg, _ := subnet.ParseConfig([]byte(conf))
	m := e.manager(t, subnet.ManagerOptions{})
	me := node(1)
	me.PublicIPv6 = netip.MustParseAddr("2001:db8::1")
	me.BackendV6Data = []byte(`{"VNI":1,"VtepMAC":"02:00:00:00:01:01"}`)
	prev := subnet.Previous{Subnet: netip.MustParsePrefix("10.5.42.0/24"), IPv6Subnet: netip.MustParsePrefix("fc00:5:0:42::/64")}
	l, err := m.Acquire(ctxT(t), me, prev)
	if err != nil {
		t.Fatal(err)
	}
	if l.Key() != "10.5.42.0-24&fc00:5:0:42::-64" || !subnet.Fits(cfg, *l) {
		t.Errorf("acquired %s, want the previous subnets", l.Key())
	}
	raw, err := e.srv.Client(t).Get(ctxT(t), prefix+"/subnets/"+l.Key())
	if err != nil || len(raw.Kvs) != 1 {
		t.Fatalf("etcd get: %v %v", raw, err)
	}
	want := `{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:01:01"}}`
	if string(raw.Kvs[0].Value) != want {
		t.Errorf("stored value\n %s\nwant\n %s", raw.Kvs[0].Value, want)
	}
	// A node without an IPv6 address cannot lease in dual stack.
	if _, err := m.Acquire(ctxT(t), node(2), subnet.Previous{}); err == nil {
		t.Error("Acquire without PublicIPv6 in dual stack: want an error")
	}
	// Another node: both families random and free.
	other := node(2)
	other.PublicIPv6 = netip.MustParseAddr("2001:db8::2")
	l2, err := m.Acquire(ctxT(t), other, subnet.Previous{})
	if err != nil {
		t.Fatal(err)
	}
	if !subnet.Fits(cfg, *l2) || l2.Subnet == l.Subnet || l2.IPv6Subnet == l.IPv6Subnet {
		t.Errorf("second node got %s", l2.Key())
	}
}

// TestKeepSurvivesEtcdOutage: etcd down for longer than the TTL; the lease
// survives (etcd extends leases when it comes back), Keep renews it again
// and nothing is re-acquired.
func TestKeepSurvivesEtcdOutage(t *testing.T) {
	e := newEnv(t, conf16)
	m := e.manager(t, subnet.ManagerOptions{TTL: 4 * time.Second, RenewMargin: 2 * time.Second})
	l, err := m.Acquire(ctxT(t), node(1), subnet.Previous{})
	if err != nil {
		t.Fatal(err)
	}
	k := keep(t, m, l)
	w := watch(t, m)
	w.waitSet(t, l.Key())
	start := time.Now()
	e.srv.Stop() // about 5 s: etcd waits for the open watch streams
	if d := 5*time.Second - time.Since(start); d > 0 {
		time.Sleep(d) // the outage: longer than the TTL
	}
	e.srv.Restart(t)
	s := e.srv.Store(t, prefix)
	waitFor(t, "a renewal after the outage", func() bool {
		got, _, err := s.Leases(ctxT(t))
		return err == nil && len(got) == 1 && got[0].Key() == l.Key() && got[0].Revision > l.Revision
	})
	if n := k.newLeases(); len(n) != 0 {
		t.Errorf("lease re-acquired %d times across the outage", len(n))
	}
	// The watch is back too: it sees a new node.
	b, err := e.manager(t, subnet.ManagerOptions{}).Acquire(ctxT(t), node(2), subnet.Previous{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{l.Key(), b.Key()}
	if want[0] > want[1] {
		want[0], want[1] = want[1], want[0]
	}
	w.waitSet(t, want...)
}
