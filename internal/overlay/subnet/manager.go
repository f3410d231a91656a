package subnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Defaults of ManagerOptions.
const (
	DefaultTTL           = 24 * time.Hour   // flannel's subnetTTL
	DefaultRenewMargin   = 60 * time.Minute // flanneld's --subnet-lease-renew-margin
	DefaultRetryInterval = time.Minute      // between failed renewals
	DefaultConfigRetry   = time.Second      // between polls for <prefix>/config
	DefaultRaceRetries   = 10               // Acquire attempts lost to concurrent writers
	DefaultBackoffMin    = 100 * time.Millisecond
	DefaultBackoffMax    = 5 * time.Second
)

// ManagerOptions tune a Manager; zero fields take the defaults above.
type ManagerOptions struct {
	TTL time.Duration // lease TTL
	// RenewMargin: renew the lease this long before it expires. A margin
	// of TTL or more is taken as TTL/2.
	RenewMargin   time.Duration
	RetryInterval time.Duration // wait after a failed renewal
	ConfigRetry   time.Duration // wait between reads of a missing or invalid configuration
	RaceRetries   int
	// BackoffMin and BackoffMax bound the doubling wait before the lease
	// watch reconnects (and before Keep retries a failed re-acquisition).
	BackoffMin, BackoffMax time.Duration
	// Rand is the allocator's random source; nil: seeded from the clock.
	// Used under the manager's lock.
	Rand *rand.Rand
	Log  *slog.Logger
}

// Manager leases the node's subnet from a Store, keeps it, and watches
// everybody's leases. Safe for concurrent use.
type Manager struct {
	store Store
	o     ManagerOptions
	log   *slog.Logger

	mu  sync.Mutex
	cfg *Config
	rnd *rand.Rand
}

// NewManager returns a Manager over s.
func NewManager(s Store, o ManagerOptions) *Manager {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.TTL, DefaultTTL)
	def(&o.RenewMargin, DefaultRenewMargin)
	def(&o.RetryInterval, DefaultRetryInterval)
	def(&o.ConfigRetry, DefaultConfigRetry)
	def(&o.BackoffMin, DefaultBackoffMin)
	def(&o.BackoffMax, DefaultBackoffMax)
	if o.RenewMargin >= o.TTL {
		o.RenewMargin = o.TTL / 2
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.RaceRetries <= 0 {
		o.RaceRetries = DefaultRaceRetries
	}
	if o.Rand == nil {
		now := uint64(time.Now().UnixNano())
		o.Rand = rand.New(rand.NewPCG(now, now>>17|1))
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{store: s, o: o, log: log, rnd: o.Rand}
}

// Config reads and parses <prefix>/config, waiting (ConfigRetry between
// reads) while it is missing, unreadable or invalid; it returns only when
// it has a valid configuration or ctx ends. The result is kept for Acquire.
func (m *Manager) Config(ctx context.Context) (*Config, error) {
	var last string
	for {
		b, err := m.store.Config(ctx)
		if err == nil {
			var cfg *Config
			if cfg, err = ParseConfig(b); err == nil {
				m.mu.Lock()
				m.cfg = cfg
				m.mu.Unlock()
				return cfg, nil
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read network configuration: %w", ctx.Err())
		}
		if msg := err.Error(); msg != last {
			last = msg
			if errors.Is(err, ErrNotFound) {
				m.log.Warn("network configuration not found in the store; waiting for it", "err", err)
			} else {
				m.log.Error("cannot use the network configuration; retrying", "err", err)
			}
		}
		if !sleep(ctx, m.o.ConfigRetry) {
			return nil, fmt.Errorf("read network configuration: %w", ctx.Err())
		}
	}
}

func (m *Manager) config(ctx context.Context) (*Config, error) {
	m.mu.Lock()
	cfg := m.cfg
	m.mu.Unlock()
	if cfg != nil {
		return cfg, nil
	}
	return m.Config(ctx)
}

// Acquire leases a subnet for the node publishing attrs (see Allocate for
// the choice: own lease by public address, then prev, then random). It
// lists the leases and writes one key transactionally (created only if
// absent, or rewritten only if unchanged), starting over up to RaceRetries
// times when another writer gets in between. A reservation of the node is
// rewritten without TTL and stays a reservation. attrs must carry the
// public address of every enabled family. Store errors and
// ErrNoFreeSubnet are returned as they come.
func (m *Manager) Acquire(ctx context.Context, attrs LeaseAttrs, prev Previous) (*Lease, error) {
	cfg, err := m.config(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := attrs.MarshalJSON(); err != nil {
		return nil, err
	}
	if cfg.EnableIPv4 && !attrs.PublicIP.IsValid() {
		return nil, errors.New("acquire lease: no PublicIP (IPv4 is enabled)")
	}
	if cfg.EnableIPv6 && !attrs.PublicIPv6.IsValid() {
		return nil, errors.New("acquire lease: no PublicIPv6 (IPv6 is enabled)")
	}
attempts:
	for i := 0; i < m.o.RaceRetries; i++ {
		leases, _, err := m.store.Leases(ctx)
		if err != nil {
			return nil, fmt.Errorf("acquire lease: %w", err)
		}
		m.mu.Lock()
		plan, err := Allocate(cfg, leases, attrs, prev, m.rnd)
		m.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("acquire lease: %w", err)
		}
		for _, s := range plan.Stale {
			m.log.Info("deleting own lease that no longer fits the configuration", "key", s.Key())
			if err := m.store.DeleteLease(ctx, s); errors.Is(err, ErrConflict) {
				continue attempts
			} else if err != nil {
				return nil, fmt.Errorf("acquire lease: delete stale %s: %w", s.Key(), err)
			}
		}
		var l *Lease
		if r := plan.Reuse; r != nil {
			ttl := m.o.TTL
			if r.Reservation() {
				ttl = 0
			}
			n := *r
			n.Attrs = attrs
			l, err = m.store.UpdateLease(ctx, n, ttl)
		} else {
			l, err = m.store.CreateLease(ctx, Lease{Subnet: plan.Subnet, IPv6Subnet: plan.IPv6Subnet, Attrs: attrs}, m.o.TTL)
		}
		switch {
		case err == nil:
			return l, nil
		case errors.Is(err, ErrExists), errors.Is(err, ErrConflict), errors.Is(err, ErrNotFound):
			m.log.Debug("lost a race for a subnet; trying again", "attempt", i+1, "err", err)
			continue
		default:
			return nil, fmt.Errorf("acquire lease: %w", err)
		}
	}
	return nil, fmt.Errorf("acquire lease: %d attempts lost to concurrent writers", m.o.RaceRetries)
}

// Keep keeps the node's lease until ctx ends: it renews it RenewMargin
// before it expires (RetryInterval between failed attempts; reservations
// are not renewed) and follows the lease's key. When the key is deleted,
// expires or is taken by another node, Keep acquires a lease again (the
// same subnets when still free) and calls onNew with it; it never gives
// up. A rewrite of the key by someone else that keeps the node's public
// address is adopted (new expiration). Keep returns ctx.Err().
func (m *Manager) Keep(ctx context.Context, lease *Lease, onNew func(*Lease)) error {
	cfg, err := m.config(ctx)
	if err != nil {
		return err
	}
	cur := *lease
	attrs := cur.Attrs

	type update struct {
		list    []Lease
		listRev int64
		events  []Event
	}
	upc := make(chan update, 64)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		send := func(u update) {
			select {
			case upc <- u:
			case <-wctx.Done():
			}
		}
		_ = m.follow(wctx, func(l []Lease, rev int64) { send(update{list: l, listRev: rev}) },
			func(ev []Event) { send(update{events: ev}) })
	}()
	defer wg.Wait()
	defer cancel()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	arm := func(d time.Duration) {
		timer.Stop()
		select {
		case <-timer.C:
		default:
		}
		timer.Reset(max(d, 0))
	}
	schedule := func() {
		if cur.Reservation() {
			arm(1<<63 - 1)
			return
		}
		arm(time.Until(cur.Expiration.Add(-m.o.RenewMargin)))
	}
	schedule()

	for {
		lost := ""
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			n := cur
			n.Attrs = attrs
			l, err := m.store.UpdateLease(ctx, n, m.o.TTL)
			switch {
			case err == nil:
				m.log.Debug("renewed lease", "key", l.Key(), "expires", l.Expiration)
				cur = *l
				schedule()
			case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict):
				lost = "renewal found it " + err.Error()
			default:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				m.log.Warn("renew lease failed; retrying", "key", cur.Key(), "in", m.o.RetryInterval, "err", err)
				arm(m.o.RetryInterval)
			}
		case u := <-upc:
			key := cur.Key()
			if u.list != nil || u.listRev != 0 {
				i := slices.IndexFunc(u.list, func(l Lease) bool { return l.Key() == key })
				switch {
				case i < 0 && u.listRev >= cur.Revision:
					lost = "missing from the store"
				case i >= 0 && u.list[i].Revision > cur.Revision:
					lost = m.adopt(cfg, &cur, attrs, u.list[i])
					schedule()
				}
			}
			for _, ev := range u.events {
				if ev.Lease.Key() != key || ev.Revision <= cur.Revision || lost != "" {
					continue
				}
				if ev.Type == EventDelete {
					lost = "deleted or expired"
					continue
				}
				lost = m.adopt(cfg, &cur, attrs, ev.Lease)
				schedule()
			}
		}
		if lost == "" {
			continue
		}
		m.log.Warn("own lease lost; acquiring again", "key", cur.Key(), "why", lost)
		l, err := m.reacquire(ctx, attrs, Previous{Subnet: cur.Subnet, IPv6Subnet: cur.IPv6Subnet})
		if err != nil {
			return err
		}
		m.log.Info("acquired lease again", "key", l.Key(), "expires", l.Expiration)
		cur = *l
		schedule()
		if onNew != nil {
			onNew(l)
		}
	}
}

// adopt takes over a rewrite of the own key by someone else when it keeps
// the node's public address; otherwise it reports the lease lost.
func (m *Manager) adopt(cfg *Config, cur *Lease, attrs LeaseAttrs, l Lease) (lost string) {
	if !sameNode(cfg, l.Attrs, attrs) {
		return "taken by " + publicOf(l.Attrs)
	}
	m.log.Info("own lease rewritten in the store; adopting it", "key", l.Key(), "expires", l.Expiration)
	cur.Expiration, cur.Revision = l.Expiration, l.Revision
	return ""
}

func publicOf(a LeaseAttrs) string {
	if a.PublicIP.IsValid() {
		return a.PublicIP.String()
	}
	return a.PublicIPv6.String()
}

// reacquire runs Acquire until it succeeds or ctx ends, backing off between
// failures (the store may be unreachable, or every subnet taken for now).
func (m *Manager) reacquire(ctx context.Context, attrs LeaseAttrs, prev Previous) (*Lease, error) {
	b := backoff{min: m.o.BackoffMin, max: m.o.BackoffMax}
	for {
		l, err := m.Acquire(ctx, attrs, prev)
		if err == nil {
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d := b.next()
		m.log.Warn("acquire lease failed; retrying", "in", d, "err", err)
		if !sleep(ctx, d) {
			return nil, ctx.Err()
		}
	}
}

// Watch calls fn with the full set of leases (the node's own included,
// sorted by key) once at the start and again after every change, until ctx
// ends; it returns ctx.Err(). It lists the leases, then watches from the
// list's revision + 1; a broken watch is resumed from the last revision
// seen + 1 after a backoff (BackoffMin doubling to BackoffMax), and a
// watch whose revision was compacted lists again. While the store is
// unreachable fn is simply not called.
func (m *Manager) Watch(ctx context.Context, fn func(all []Lease)) error {
	set := map[string]Lease{}
	emit := func() {
		all := make([]Lease, 0, len(set))
		for _, l := range set {
			all = append(all, l)
		}
		slices.SortFunc(all, func(a, b Lease) int { return cmpKey(a.Key(), b.Key()) })
		fn(all)
	}
	return m.follow(ctx, func(list []Lease, _ int64) {
		clear(set)
		for _, l := range list {
			set[l.Key()] = l
		}
		emit()
	}, func(evs []Event) {
		for _, ev := range evs {
			if ev.Type == EventDelete {
				delete(set, ev.Lease.Key())
			} else {
				set[ev.Lease.Key()] = ev.Lease
			}
		}
		emit()
	})
}

func cmpKey(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// follow lists the leases (onList), then watches them (onEvents for each
// non-empty batch), reconnecting and re-listing as Watch describes, until
// ctx ends.
func (m *Manager) follow(ctx context.Context, onList func([]Lease, int64), onEvents func([]Event)) error {
	b := backoff{min: m.o.BackoffMin, max: m.o.BackoffMax}
	for {
		list, rev, err := m.store.Leases(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d := b.next()
			m.log.Warn("list leases failed; retrying", "in", d, "err", err)
			if !sleep(ctx, d) {
				return ctx.Err()
			}
			continue
		}
		b.reset()
		if list == nil {
			list = []Lease{}
		}
		onList(list, rev)
		next := rev + 1
		for {
			err := m.store.WatchLeases(ctx, next, func(evs []Event) error {
				if len(evs) == 0 {
					return nil
				}
				for _, ev := range evs {
					next = max(next, ev.Revision+1)
				}
				b.reset()
				onEvents(evs)
				return nil
			})
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrCompacted) {
				m.log.Info("lease watch fell behind compaction; listing again", "rev", next)
				break
			}
			d := b.next()
			m.log.Warn("lease watch broke; resuming", "rev", next, "in", d, "err", err)
			if !sleep(ctx, d) {
				return ctx.Err()
			}
		}
	}
}

// backoff doubles from min to max.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
