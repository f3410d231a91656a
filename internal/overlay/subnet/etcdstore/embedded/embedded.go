// Package embedded runs a single-node etcd inside the process. It is the
// only package that links the etcd server, and only the linen-etcd binary
// (and tests) import it: the daemon stays small and starts linen-etcd as a
// child process when it has no external etcd.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"linen.dev/linen/internal/overlay/subnet"
	"linen.dev/linen/internal/overlay/subnet/etcdstore"
)

// EmbeddedOptions configure a single-node etcd run inside the process.
type EmbeddedOptions struct {
	DataDir   string // created 0700 when missing; required
	ClientURL string // client listen and advertise URL; http://127.0.0.1:2379 when empty
	PeerURL   string // peer listen URL (nobody joins); http://127.0.0.1:2380 when empty
	Name      string // member name; "linen" when empty
	// InitConfig, when set, is validated (subnet.ParseConfig) and stored
	// at <Prefix>/config unless that key already exists.
	InitConfig []byte
	Prefix     string // DefaultPrefix when empty
	// TickMs and ElectionMs are etcd's --heartbeat-interval and
	// --election-timeout (100 and 1000 when 0). They also set the shortest
	// lease TTL etcd grants, ceil(1.5 * ElectionMs) rounded up to seconds:
	// 2 s with the defaults, 1 s with ElectionMs <= 666 (tests use 10/100).
	TickMs, ElectionMs uint
	// CompactionRetention is etcd's periodic --auto-compaction-retention;
	// "1h" when empty, "0" turns it off.
	CompactionRetention string
	StartTimeout        time.Duration // 60 s when 0
	Log                 *slog.Logger  // etcd's own warnings go here at debug level, its errors as warnings
}

// Embedded is a running embedded etcd.
type Embedded struct {
	e    *embed.Etcd
	eps  []string
	once sync.Once
}

// StartEmbedded starts a single-node etcd and waits until it serves (ctx
// bounds only the start; Stop ends the server). On an existing data
// directory it restarts the member with its data (revisions, leases) as it
// was.
func StartEmbedded(ctx context.Context, o EmbeddedOptions) (*Embedded, error) {
	if o.DataDir == "" {
		return nil, errors.New("embedded etcd: no data directory")
	}
	if o.ClientURL == "" {
		o.ClientURL = "http://127.0.0.1:2379"
	}
	if o.PeerURL == "" {
		o.PeerURL = "http://127.0.0.1:2380"
	}
	if o.Name == "" {
		o.Name = "linen"
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 60 * time.Second
	}
	if o.CompactionRetention == "" {
		o.CompactionRetention = "1h"
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.InitConfig != nil {
		if _, err := subnet.ParseConfig(o.InitConfig); err != nil {
			return nil, fmt.Errorf("embedded etcd: initial %w", err)
		}
	}
	cu, err := url.Parse(o.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: client URL: %w", err)
	}
	pu, err := url.Parse(o.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: peer URL: %w", err)
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}

	cfg := embed.NewConfig()
	cfg.Name = o.Name
	cfg.Dir = o.DataDir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	if o.TickMs > 0 {
		cfg.TickMs = o.TickMs
	}
	if o.ElectionMs > 0 {
		cfg.ElectionMs = o.ElectionMs
	}
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = o.CompactionRetention
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(slogCore{log: log}))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	t := time.NewTimer(o.StartTimeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-t.C:
		e.Close()
		return nil, fmt.Errorf("embedded etcd: not ready within %v", o.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", ctx.Err())
	}
	emb := &Embedded{e: e, eps: []string{cu.String()}}
	if o.InitConfig != nil {
		if err := emb.initConfig(ctx, o.Prefix, o.InitConfig); err != nil {
			emb.Stop()
			return nil, err
		}
	}
	return emb, nil
}

func (e *Embedded) initConfig(ctx context.Context, prefix string, conf []byte) error {
	c := v3client.New(e.e.Server)
	defer c.Close()
	if prefix == "" {
		prefix = etcdstore.DefaultPrefix
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	key := "/" + strings.Trim(prefix, "/") + "/config"
	if _, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, string(conf))).Commit(); err != nil {
		return fmt.Errorf("embedded etcd: store %s: %w", key, err)
	}
	return nil
}

// Endpoints are the client URLs to give New.
func (e *Embedded) Endpoints() []string { return append([]string(nil), e.eps...) }

// Err reports a fatal error of the running server.
func (e *Embedded) Err() <-chan error { return e.e.Err() }

// Stop stops the server and waits until it has (idempotent). The member
// stops at once (no more writes, no lease expiring from then on, as if the
// process had been killed); open client streams are then given etcd's
// request timeout (about 5 s) to end before they are cut.
func (e *Embedded) Stop() {
	e.once.Do(func() {
		e.e.Server.HardStop()
		e.e.Close()
		<-e.e.Server.StopNotify()
	})
}

// slogCore forwards etcd's zap logging to slog: warnings at debug level,
// errors and worse as warnings (etcd warns about many things that are
// expected for a single-node member on loopback).
type slogCore struct {
	log    *slog.Logger
	fields []zapcore.Field
}

func (c slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (c slogCore) With(f []zapcore.Field) zapcore.Core {
	return slogCore{log: c.log, fields: append(append([]zapcore.Field(nil), c.fields...), f...)}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, f []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, fl := range c.fields {
		fl.AddTo(enc)
	}
	for _, fl := range f {
		fl.AddTo(enc)
	}
	level := slog.LevelDebug
	if e.Level >= zapcore.ErrorLevel && !benign(e.Message, enc.Fields["error"]) {
		level = slog.LevelWarn
	}
	if !c.log.Enabled(context.Background(), level) {
		return nil
	}
	args := make([]any, 0, 2+2*len(enc.Fields))
	args = append(args, "component", "etcd")
	for k, v := range enc.Fields {
		args = append(args, k, v)
	}
	c.log.Log(context.Background(), level, e.Message, args...)
	return nil
}

func (c slogCore) Sync() error { return nil }

// benign tells the errors etcd logs in normal operation of a single
// member (its listeners closing on Stop, a storage-version update tried
// before the first raft entry) from real ones.
func benign(msg string, err any) bool {
	s := fmt.Sprint(err)
	return strings.Contains(s, "closed") ||
		msg == "failed to update storage version" && strings.Contains(s, "missing term information")
}
