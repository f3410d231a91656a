package etcdstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"linen.dev/linen/internal/overlay/subnet"
)

// DefaultPrefix is flannel's default --etcd-prefix.
const DefaultPrefix = "/coreos.com/network"

// Options configure a Store.
type Options struct {
	Endpoints []string // etcd client URLs (http:// or https://)
	Prefix    string   // key prefix; DefaultPrefix when empty
	// TLS: CAFile verifies the servers; CertFile and KeyFile (both or
	// neither) authenticate the client. Any of them, or an https endpoint,
	// turns TLS (1.2 or later) on.
	CAFile, CertFile, KeyFile string
	Username, Password        string
	// RequestTimeout bounds each single request (not watches); 10 s when 0.
	RequestTimeout time.Duration
	Log            *slog.Logger
}

// Store is a subnet.Store over etcd v3 in flannel's key layout.
type Store struct {
	c       *clientv3.Client
	ownC    bool
	prefix  string // without trailing slash
	subnets string // prefix + "/subnets/"
	timeout time.Duration
	log     *slog.Logger

	mu  sync.Mutex
	exp map[clientv3.LeaseID]time.Time // expiration per etcd lease ID
}

var _ subnet.Store = (*Store)(nil)

// New connects to etcd (lazily: New does not wait for the servers).
func New(o Options) (*Store, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	cfg := clientv3.Config{
		Endpoints:            o.Endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Username:             o.Username,
		Password:             o.Password,
		Logger:               zap.NewNop(),
		// Reconnect quickly once etcd is back: gRPC's default backoff
		// grows to 2 minutes during a long outage.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		})},
	}
	tc, err := tlsConfig(o)
	if err != nil {
		return nil, err
	}
	cfg.TLS = tc
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	s := NewWithClient(c, o.Prefix, o.Log)
	s.ownC = true
	if o.RequestTimeout > 0 {
		s.timeout = o.RequestTimeout
	}
	return s, nil
}

func tlsConfig(o Options) (*tls.Config, error) {
	https := false
	for _, e := range o.Endpoints {
		https = https || strings.HasPrefix(e, "https://")
	}
	if o.CAFile == "" && o.CertFile == "" && o.KeyFile == "" && !https {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA file %s: no PEM certificate", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("etcd TLS: give both the certificate and the key file, or neither")
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// NewWithClient returns a Store over an existing client, which Close
// leaves open.
func NewWithClient(c *clientv3.Client, prefix string, log *slog.Logger) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	prefix = "/" + strings.Trim(prefix, "/")
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{c: c, prefix: prefix, subnets: prefix + "/subnets/", timeout: 10 * time.Second,
		log: log, exp: map[clientv3.LeaseID]time.Time{}}
}

// Client is the underlying etcd client.
func (s *Store) Client() *clientv3.Client { return s.c }

// Prefix is the key prefix (no trailing slash).
func (s *Store) Prefix() string { return s.prefix }

// Close closes the client if New created it.
func (s *Store) Close() error {
	if s.ownC {
		return s.c.Close()
	}
	return nil
}

func (s *Store) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

func (s *Store) configKey() string { return s.prefix + "/config" }

// Config implements subnet.Store.
func (s *Store) Config(ctx context.Context) ([]byte, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.c.Get(ctx, s.configKey())
	if err != nil {
		return nil, fmt.Errorf("etcd get %s: %w", s.configKey(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: %s (write it with: etcdctl put %s '{\"Network\":\"10.244.0.0/16\",\"Backend\":{\"Type\":\"vxlan\"}}')",
			subnet.ErrNotFound, s.configKey(), s.configKey())
	}
	return resp.Kvs[0].Value, nil
}

// PutConfig implements subnet.Store.
func (s *Store) PutConfig(ctx context.Context, conf []byte) error {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	if _, err := s.c.Put(ctx, s.configKey(), string(conf)); err != nil {
		return fmt.Errorf("etcd put %s: %w", s.configKey(), err)
	}
	return nil
}

// Leases implements subnet.Store: one range request, plus one TimeToLive
// per etcd lease ID this Store has not seen before.
func (s *Store) Leases(ctx context.Context) ([]subnet.Lease, int64, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.c.Get(ctx, s.subnets, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("etcd list %s: %w", s.subnets, err)
	}
	out := make([]subnet.Lease, 0, len(resp.Kvs))
	var ids []clientv3.LeaseID
	for _, kv := range resp.Kvs {
		l, ok := s.decode(kv)
		if !ok {
			continue
		}
		out = append(out, l)
		ids = append(ids, clientv3.LeaseID(kv.Lease))
	}
	exp, err := s.expirations(ctx, ids)
	if err != nil {
		return nil, 0, err
	}
	for i := range out {
		out[i].Expiration = exp[i]
	}
	s.prune()
	return out, resp.Header.Revision, nil
}

// decode turns a key-value into a lease (Expiration not set); ok is false
// (and a debug line logged) for keys or values that are not leases.
func (s *Store) decode(kv *mvccpb.KeyValue) (subnet.Lease, bool) {
	key := strings.TrimPrefix(string(kv.Key), s.subnets)
	v4, v6, err := subnet.ParseKey(key)
	if err != nil {
		s.log.Debug("skipping key that is not a subnet", "key", string(kv.Key), "err", err)
		return subnet.Lease{}, false
	}
	l := subnet.Lease{Subnet: v4, IPv6Subnet: v6, Revision: kv.ModRevision}
	if kv.Value != nil {
		if err := json.Unmarshal(kv.Value, &l.Attrs); err != nil {
			s.log.Debug("skipping lease with invalid attrs", "key", string(kv.Key), "err", err)
			return subnet.Lease{}, false
		}
	}
	return l, true
}

// expirations maps etcd lease IDs to expiration times (zero for no lease),
// from the cache or, for IDs not seen before, TimeToLive (8 at a time).
func (s *Store) expirations(ctx context.Context, ids []clientv3.LeaseID) ([]time.Time, error) {
	out := make([]time.Time, len(ids))
	var missing []clientv3.LeaseID
	s.mu.Lock()
	for i, id := range ids {
		if id == clientv3.NoLease {
			continue
		}
		if t, ok := s.exp[id]; ok {
			out[i] = t
		} else {
			missing = append(missing, id)
		}
	}
	s.mu.Unlock()
	if len(missing) > 0 {
		var (
			wg   sync.WaitGroup
			sem  = make(chan struct{}, 8)
			emu  sync.Mutex
			errs []error
		)
		for _, id := range missing {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				start := time.Now()
				r, err := s.c.TimeToLive(ctx, id)
				if err != nil {
					emu.Lock()
					errs = append(errs, fmt.Errorf("etcd lease %x time to live: %w", int64(id), err))
					emu.Unlock()
					return
				}
				// TTL -1: the lease is gone and its keys about to be.
				s.remember(id, start.Add(time.Duration(max(r.TTL, 0))*time.Second))
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		s.mu.Lock()
		for i, id := range ids {
			if id != clientv3.NoLease {
				out[i] = s.exp[id]
			}
		}
		s.mu.Unlock()
	}
	return out, nil
}

func (s *Store) remember(id clientv3.LeaseID, t time.Time) {
	if id == clientv3.NoLease {
		return
	}
	s.mu.Lock()
	s.exp[id] = t
	s.mu.Unlock()
}

func (s *Store) forget(id clientv3.LeaseID) {
	s.mu.Lock()
	delete(s.exp, id)
	s.mu.Unlock()
}

// prune drops cached expirations more than a minute past.
func (s *Store) prune() {
	cut := time.Now().Add(-time.Minute)
	s.mu.Lock()
	for id, t := range s.exp {
		if t.Before(cut) {
			delete(s.exp, id)
		}
	}
	s.mu.Unlock()
}

// grant creates an etcd lease for ttl (none for 0).
func (s *Store) grant(ctx context.Context, ttl time.Duration) (clientv3.LeaseID, time.Time, []clientv3.OpOption, error) {
	if ttl <= 0 {
		return clientv3.NoLease, time.Time{}, nil, nil
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	start := time.Now()
	g, err := s.c.Grant(ctx, secs)
	if err != nil {
		return 0, time.Time{}, nil, fmt.Errorf("etcd grant: %w", err)
	}
	exp := start.Add(time.Duration(g.TTL) * time.Second)
	return g.ID, exp, []clientv3.OpOption{clientv3.WithLease(g.ID)}, nil
}

// revoke drops an etcd lease that ended up unused (best effort).
func (s *Store) revoke(id clientv3.LeaseID) {
	if id == clientv3.NoLease {
		return
	}
	s.forget(id)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.c.Revoke(ctx, id); err != nil {
		s.log.Debug("revoke unused etcd lease", "id", fmt.Sprintf("%x", int64(id)), "err", err)
	}
}

func (s *Store) value(l subnet.Lease) (string, subnet.LeaseAttrs, error) {
	b, err := json.Marshal(l.Attrs)
	if err != nil {
		return "", subnet.LeaseAttrs{}, err
	}
	var norm subnet.LeaseAttrs
	if err := json.Unmarshal(b, &norm); err != nil {
		return "", subnet.LeaseAttrs{}, err
	}
	return string(b), norm, nil
}

func (s *Store) leaseKey(l subnet.Lease) (string, error) {
	k := l.Key()
	if _, _, err := subnet.ParseKey(k); err != nil {
		return "", err
	}
	return s.subnets + k, nil
}

// CreateLease implements subnet.Store: a Grant (when ttl > 0) and one
// transaction, Version(key) == 0 -> Put.
func (s *Store) CreateLease(ctx context.Context, l subnet.Lease, ttl time.Duration) (*subnet.Lease, error) {
	key, err := s.leaseKey(l)
	if err != nil {
		return nil, err
	}
	val, norm, err := s.value(l)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	id, exp, opts, err := s.grant(ctx, ttl)
	if err != nil {
		return nil, err
	}
	resp, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, val, opts...)).
		Commit()
	if err != nil {
		s.revoke(id)
		return nil, fmt.Errorf("etcd create %s: %w", key, err)
	}
	if !resp.Succeeded {
		s.revoke(id)
		return nil, fmt.Errorf("%w: %s", subnet.ErrExists, l.Key())
	}
	s.remember(id, exp)
	out := subnet.Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet, Attrs: norm, Expiration: exp, Revision: resp.Header.Revision}
	return &out, nil
}

// UpdateLease implements subnet.Store: a Grant (when ttl > 0) and one
// transaction, ModRevision(key) == l.Revision -> Put, else Get; the etcd
// lease the key had before is revoked (one more request).
func (s *Store) UpdateLease(ctx context.Context, l subnet.Lease, ttl time.Duration) (*subnet.Lease, error) {
	if l.Revision == 0 {
		return nil, fmt.Errorf("update lease %s: no revision to compare with", l.Key())
	}
	key, err := s.leaseKey(l)
	if err != nil {
		return nil, err
	}
	val, norm, err := s.value(l)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	id, exp, opts, err := s.grant(ctx, ttl)
	if err != nil {
		return nil, err
	}
	resp, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", l.Revision)).
		Then(clientv3.OpPut(key, val, append(opts, clientv3.WithPrevKV())...)).
		Else(clientv3.OpGet(key, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		s.revoke(id)
		return nil, fmt.Errorf("etcd update %s: %w", key, err)
	}
	if !resp.Succeeded {
		s.revoke(id)
		if len(resp.Responses) == 1 && resp.Responses[0].GetResponseRange().GetCount() == 0 {
			return nil, fmt.Errorf("%w: %s", subnet.ErrNotFound, l.Key())
		}
		return nil, fmt.Errorf("%w: %s (expected revision %d)", subnet.ErrConflict, l.Key(), l.Revision)
	}
	s.remember(id, exp)
	if len(resp.Responses) == 1 {
		if prev := resp.Responses[0].GetResponsePut().GetPrevKv(); prev != nil {
			if old := clientv3.LeaseID(prev.Lease); old != clientv3.NoLease && old != id {
				s.revoke(old)
			}
		}
	}
	out := subnet.Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet, Attrs: norm, Expiration: exp, Revision: resp.Header.Revision}
	return &out, nil
}

// DeleteLease implements subnet.Store: one request (a transaction when
// l.Revision is set).
func (s *Store) DeleteLease(ctx context.Context, l subnet.Lease) error {
	key, err := s.leaseKey(l)
	if err != nil {
		return err
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	if l.Revision == 0 {
		if _, err := s.c.Delete(ctx, key); err != nil {
			return fmt.Errorf("etcd delete %s: %w", key, err)
		}
		return nil
	}
	resp, err := s.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", l.Revision)).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(key, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return fmt.Errorf("etcd delete %s: %w", key, err)
	}
	if !resp.Succeeded && resp.Responses[0].GetResponseRange().GetCount() != 0 {
		return fmt.Errorf("%w: %s (expected revision %d)", subnet.ErrConflict, l.Key(), l.Revision)
	}
	return nil
}

// WatchLeases implements subnet.Store with one etcd watch (WithRequireLeader,
// so a member without a leader breaks it). The etcd client bridges broken
// connections itself, resuming after the last revision it delivered.
func (s *Store) WatchLeases(ctx context.Context, rev int64, fn func([]subnet.Event) error) error {
	if rev < 1 {
		return fmt.Errorf("watch leases: revision %d < 1", rev)
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.c.Watch(wctx, s.subnets, clientv3.WithPrefix(), clientv3.WithRev(rev))
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return fmt.Errorf("%w: watch from revision %d, compacted up to %d", subnet.ErrCompacted, rev, resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			return fmt.Errorf("etcd watch: %w", err)
		}
		if resp.Canceled {
			return errors.New("etcd watch: canceled")
		}
		if len(resp.Events) == 0 {
			continue
		}
		evs, err := s.events(ctx, resp.Events)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			continue
		}
		if err := fn(evs); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("etcd watch: closed")
}

func (s *Store) events(ctx context.Context, in []*clientv3.Event) ([]subnet.Event, error) {
	out := make([]subnet.Event, 0, len(in))
	var ids []clientv3.LeaseID
	var idx []int
	for _, e := range in {
		kv := e.Kv
		if e.Type == clientv3.EventTypeDelete {
			v4, v6, err := subnet.ParseKey(strings.TrimPrefix(string(kv.Key), s.subnets))
			if err != nil {
				continue
			}
			out = append(out, subnet.Event{Type: subnet.EventDelete, Lease: subnet.Lease{Subnet: v4, IPv6Subnet: v6}, Revision: kv.ModRevision})
			continue
		}
		l, ok := s.decode(kv)
		if !ok {
			// A key that no longer holds a usable lease: gone, as far
			// as the watchers are concerned.
			if v4, v6, err := subnet.ParseKey(strings.TrimPrefix(string(kv.Key), s.subnets)); err == nil {
				out = append(out, subnet.Event{Type: subnet.EventDelete, Lease: subnet.Lease{Subnet: v4, IPv6Subnet: v6}, Revision: kv.ModRevision})
			}
			continue
		}
		out = append(out, subnet.Event{Type: subnet.EventPut, Lease: l, Revision: kv.ModRevision})
		ids = append(ids, clientv3.LeaseID(kv.Lease))
		idx = append(idx, len(out)-1)
	}
	if len(ids) > 0 {
		rctx, cancel := s.reqCtx(ctx)
		defer cancel()
		exp, err := s.expirations(rctx, ids)
		if err != nil {
			return nil, err
		}
		for i, j := range idx {
			out[j].Lease.Expiration = exp[i]
		}
	}
	return out, nil
}

// PeerURLFor derives a single-node etcd's peer URL from its client URL:
// the client port + 1 (2379 -> 2380).
func PeerURLFor(client string) string {
	u, err := url.Parse(client)
	if err != nil || u.Port() == "" {
		return "http://127.0.0.1:2380"
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return "http://127.0.0.1:2380"
	}
	return fmt.Sprintf("%s://%s:%d", u.Scheme, u.Hostname(), port+1)
}
