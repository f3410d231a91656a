package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"linen.dev/linen/internal/overlay/subnet"
)

// Memory is an in-memory backing store with etcd's semantics as far as
// subnet.Store needs them: one revision counter, TTLs (expired by a 50 ms
// ticker, deletions at their own revisions), watch history, compaction.
// Open gives Store clients over it. For tests that need a store but not
// etcd; it passes the same conformance suite.
type Memory struct {
	mu        sync.Mutex
	rev       int64
	kv        map[string]memKV
	history   []memEvent
	compacted int64         // revisions <= compacted are gone from history
	changed   chan struct{} // closed and replaced on every change
	epoch     int           // Restart bumps it: open watches break
	stop      chan struct{}
	stopOnce  sync.Once
}

type memKV struct {
	value  string
	modRev int64
	exp    time.Time // zero: no TTL
}

type memEvent struct {
	key   string
	value string
	del   bool
	rev   int64
	exp   time.Time
}

// NewMemory returns an empty store; Close stops its expiry ticker.
func NewMemory() *Memory {
	m := &Memory{kv: map[string]memKV{}, changed: make(chan struct{}), stop: make(chan struct{})}
	go m.expireLoop()
	return m
}

// Close stops the expiry ticker.
func (m *Memory) Close() { m.stopOnce.Do(func() { close(m.stop) }) }

func (m *Memory) expireLoop() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-t.C:
			m.mu.Lock()
			var keys []string
			for k, v := range m.kv {
				if !v.exp.IsZero() && now.After(v.exp) {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			for _, k := range keys {
				m.deleteLocked(k)
			}
			m.mu.Unlock()
		}
	}
}

// notifyLocked wakes the watchers.
func (m *Memory) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *Memory) putLocked(key, value string, exp time.Time) int64 {
	m.rev++
	m.kv[key] = memKV{value: value, modRev: m.rev, exp: exp}
	m.history = append(m.history, memEvent{key: key, value: value, rev: m.rev, exp: exp})
	m.notifyLocked()
	return m.rev
}

func (m *Memory) deleteLocked(key string) {
	if _, ok := m.kv[key]; !ok {
		return
	}
	m.rev++
	delete(m.kv, key)
	m.history = append(m.history, memEvent{key: key, del: true, rev: m.rev})
	m.notifyLocked()
}

// PutRaw writes a value without TTL.
func (m *Memory) PutRaw(key, value string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.putLocked(key, value, time.Time{})
}

// Compact drops the history up to the current revision.
func (m *Memory) Compact() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.compacted = m.rev
	m.history = nil
}

// Restart breaks every open watch (as a server restart does); the data
// stays.
func (m *Memory) Restart() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.epoch++
	m.notifyLocked()
}

// Open returns a Store client under prefix.
func (m *Memory) Open(prefix string) subnet.Store {
	prefix = "/" + strings.Trim(prefix, "/")
	return &memStore{m: m, prefix: prefix, subnets: prefix + "/subnets/"}
}

// MemoryHarness is the conformance-suite harness over a fresh Memory.
func MemoryHarness(t *testing.T) *Harness {
	m := NewMemory()
	t.Cleanup(m.Close)
	return &Harness{
		Open:    func(t *testing.T, prefix string) subnet.Store { return m.Open(prefix) },
		Restart: func(t *testing.T) { m.Restart() },
		Compact: func(t *testing.T) { m.Compact() },
		PutRaw:  func(t *testing.T, prefix, key, value string) { m.PutRaw(prefix+"/subnets/"+key, value) },
		TTL:     time.Second,
	}
}

type memStore struct {
	m               *Memory
	prefix, subnets string
}

func (s *memStore) Close() error { return nil }

func (s *memStore) Config(ctx context.Context) ([]byte, error) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	v, ok := s.m.kv[s.prefix+"/config"]
	if !ok {
		return nil, fmt.Errorf("%w: %s/config", subnet.ErrNotFound, s.prefix)
	}
	return []byte(v.value), nil
}

func (s *memStore) PutConfig(ctx context.Context, conf []byte) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.putLocked(s.prefix+"/config", string(conf), time.Time{})
	return nil
}

func (s *memStore) decode(key, value string, modRev int64, exp time.Time) (subnet.Lease, bool) {
	v4, v6, err := subnet.ParseKey(strings.TrimPrefix(key, s.subnets))
	if err != nil {
		return subnet.Lease{}, false
	}
	l := subnet.Lease{Subnet: v4, IPv6Subnet: v6, Revision: modRev, Expiration: exp}
	if err := json.Unmarshal([]byte(value), &l.Attrs); err != nil {
		return subnet.Lease{}, false
	}
	return l, true
}

func (s *memStore) Leases(ctx context.Context) ([]subnet.Lease, int64, error) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	var keys []string
	for k := range s.m.kv {
		if strings.HasPrefix(k, s.subnets) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := []subnet.Lease{}
	for _, k := range keys {
		v := s.m.kv[k]
		if l, ok := s.decode(k, v.value, v.modRev, v.exp); ok {
			out = append(out, l)
		}
	}
	return out, s.m.rev, nil
}

func (s *memStore) write(l subnet.Lease, ttl time.Duration, check func(memKV, bool) error) (*subnet.Lease, error) {
	k := l.Key()
	if _, _, err := subnet.ParseKey(k); err != nil {
		return nil, err
	}
	b, err := json.Marshal(l.Attrs)
	if err != nil {
		return nil, err
	}
	var exp time.Time
	if ttl > 0 {
		exp = time.Now().Add(ttl)
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	cur, ok := s.m.kv[s.subnets+k]
	if err := check(cur, ok); err != nil {
		return nil, err
	}
	rev := s.m.putLocked(s.subnets+k, string(b), exp)
	n, _ := s.decode(s.subnets+k, string(b), rev, exp)
	return &n, nil
}

func (s *memStore) CreateLease(ctx context.Context, l subnet.Lease, ttl time.Duration) (*subnet.Lease, error) {
	return s.write(l, ttl, func(_ memKV, exists bool) error {
		if exists {
			return fmt.Errorf("%w: %s", subnet.ErrExists, l.Key())
		}
		return nil
	})
}

func (s *memStore) UpdateLease(ctx context.Context, l subnet.Lease, ttl time.Duration) (*subnet.Lease, error) {
	if l.Revision == 0 {
		return nil, fmt.Errorf("update lease %s: no revision to compare with", l.Key())
	}
	return s.write(l, ttl, func(cur memKV, exists bool) error {
		switch {
		case !exists:
			return fmt.Errorf("%w: %s", subnet.ErrNotFound, l.Key())
		case cur.modRev != l.Revision:
			return fmt.Errorf("%w: %s", subnet.ErrConflict, l.Key())
		}
		return nil
	})
}

func (s *memStore) DeleteLease(ctx context.Context, l subnet.Lease) error {
	key := s.subnets + l.Key()
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	cur, ok := s.m.kv[key]
	if !ok {
		return nil
	}
	if l.Revision != 0 && cur.modRev != l.Revision {
		return fmt.Errorf("%w: %s", subnet.ErrConflict, l.Key())
	}
	s.m.deleteLocked(key)
	return nil
}

func (s *memStore) WatchLeases(ctx context.Context, rev int64, fn func([]subnet.Event) error) error {
	if rev < 1 {
		return fmt.Errorf("watch leases: revision %d < 1", rev)
	}
	s.m.mu.Lock()
	epoch := s.m.epoch
	s.m.mu.Unlock()
	next := rev
	for {
		s.m.mu.Lock()
		if s.m.epoch != epoch {
			s.m.mu.Unlock()
			return errors.New("memory store: restarted")
		}
		if next <= s.m.compacted {
			s.m.mu.Unlock()
			return fmt.Errorf("%w: watch from revision %d, compacted up to %d", subnet.ErrCompacted, next, s.m.compacted)
		}
		var evs []subnet.Event
		for _, e := range s.m.history {
			if e.rev < next || !strings.HasPrefix(e.key, s.subnets) {
				continue
			}
			v4, v6, err := subnet.ParseKey(strings.TrimPrefix(e.key, s.subnets))
			if err != nil {
				continue
			}
			if l, ok := s.decode(e.key, e.value, e.rev, e.exp); ok && !e.del {
				evs = append(evs, subnet.Event{Type: subnet.EventPut, Lease: l, Revision: e.rev})
			} else {
				evs = append(evs, subnet.Event{Type: subnet.EventDelete, Lease: subnet.Lease{Subnet: v4, IPv6Subnet: v6}, Revision: e.rev})
			}
		}
		next = s.m.rev + 1
		changed := s.m.changed
		s.m.mu.Unlock()
		if len(evs) > 0 {
			if err := fn(evs); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
