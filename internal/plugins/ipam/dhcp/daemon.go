package dhcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/ipam/dhcp/dhcp4"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// DaemonConfig configures a Daemon.
type DaemonConfig struct {
	// HostPrefix is prepended to every namespace path the plugin sends
	// (for a daemon that runs in a container with the host's / mounted
	// at the prefix).
	HostPrefix string
	// StateDir keeps one file per lease so that a restarted daemon goes
	// on renewing them; "" keeps leases in memory only.
	StateDir string
	// Broadcast sets the broadcast flag in DISCOVER and REQUEST.
	Broadcast bool
	// Timeout bounds an allocation's DHCP exchange (default 10 s).
	Timeout time.Duration
	// ResendMax caps the retransmission interval (default 62 s).
	ResendMax time.Duration
	// FirstResend is the first retransmission interval (default 2 s).
	FirstResend time.Duration
	// LinkWait bounds the wait for the pod interface to come up
	// (default 5 s).
	LinkWait time.Duration
	Log      *slog.Logger
}

// Daemon holds the leases of every attachment that uses the dhcp plugin
// on the node and keeps them alive: one goroutine per lease renews it at
// T1 (unicast to its server) and rebinds at T2 (broadcast).
type Daemon struct {
	cfg    DaemonConfig
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex // leases and state files
	leases map[Key]*lease
	locks  keyLocks

	wg      sync.WaitGroup
	connSem chan struct{}
	lnMu    sync.Mutex
	lns     []net.Listener
}

// lease is one attachment's lease and its maintenance goroutine.
type lease struct {
	key          Key
	netns        string // as the plugin gave it, without HostPrefix
	nsDev, nsIno uint64
	params       []uint8
	provide      dhcp4.Options

	mu      sync.Mutex
	cur     *dhcp4.Lease
	state   string
	renewed int

	stop chan struct{}
	done chan struct{}
}

func (ls *lease) wire() *WireLease {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	w := &WireLease{Address: ls.cur.Address.String(), Server: ls.cur.Server.String(), State: ls.state,
		Expiry: ls.cur.Expiry(), Renewed: ls.renewed, Options: wireOptions(ls.cur.Options)}
	return w
}

// NewDaemon builds a daemon and resumes the leases of StateDir.
func NewDaemon(cfg DaemonConfig) (*Daemon, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.ResendMax <= 0 {
		cfg.ResendMax = 62 * time.Second
	}
	if cfg.LinkWait <= 0 {
		cfg.LinkWait = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{cfg: cfg, log: cfg.Log, ctx: ctx, cancel: cancel, leases: map[Key]*lease{}, connSem: make(chan struct{}, 512)}
	if cfg.StateDir != "" {
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			cancel()
			return nil, fmt.Errorf("create state directory: %w", err)
		}
		if err := d.resume(); err != nil {
			cancel()
			return nil, err
		}
	}
	return d, nil
}

// Serve answers requests on ln until Close.
func (d *Daemon) Serve(ln net.Listener) error {
	d.lnMu.Lock()
	if d.ctx.Err() != nil {
		d.lnMu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	d.lns = append(d.lns, ln)
	d.lnMu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			if d.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of descriptors or memory for a moment: keep serving
			// the leases' owners once it passes.
			d.log.Warn("accept", "err", err)
			if !sleep(d.ctx, 100*time.Millisecond) {
				return nil
			}
			continue
		}
		select {
		case d.connSem <- struct{}{}:
		case <-d.ctx.Done():
			c.Close()
			return nil
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer func() { <-d.connSem }()
			d.handle(c)
		}()
	}
}

// Close stops serving and stops every lease's maintenance without
// releasing the leases (they stay in StateDir for the next daemon).
func (d *Daemon) Close() {
	d.cancel()
	d.lnMu.Lock()
	for _, ln := range d.lns {
		ln.Close()
	}
	d.lns = nil
	d.lnMu.Unlock()
	d.mu.Lock()
	all := make([]*lease, 0, len(d.leases))
	for _, ls := range d.leases {
		all = append(all, ls)
	}
	d.mu.Unlock()
	for _, ls := range all {
		ls.halt()
	}
	d.wg.Wait()
}

func (ls *lease) halt() {
	select {
	case <-ls.stop:
	default:
		close(ls.stop)
	}
	<-ls.done
}

func (d *Daemon) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := readLine(c)
	var resp *Response
	if err != nil {
		resp = &Response{Error: &WireError{Code: pluginmain.CodeIOFailure, Msg: fmt.Sprintf("read request: %v", err)}}
	} else {
		resp = d.Do(d.ctx, line)
	}
	resp.Version = ProtoVersion
	b, _ := json.Marshal(resp)
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write(append(b, '\n'))
}

// Do answers one encoded request.
func (d *Daemon) Do(ctx context.Context, b []byte) *Response {
	req, werr := DecodeRequest(b)
	if werr != nil {
		return &Response{Error: werr}
	}
	var resp *Response
	var err error
	switch req.Op {
	case OpStatus:
		resp = &Response{}
	case OpAllocate:
		resp, err = d.allocate(ctx, req)
	case OpRelease:
		var n int
		n, err = d.release(req.Key)
		resp = &Response{Released: n}
	case OpCheck:
		resp, err = d.check(req)
	case OpGC:
		resp, err = d.gc(req)
	}
	if err != nil {
		code := pluginmain.ToCNI(err).Code
		d.log.Warn("request failed", "op", req.Op, "key", req.Key.String(), "err", err)
		return &Response{Error: &WireError{Code: code, Msg: err.Error()}}
	}
	return resp
}

// openNS opens a lease's namespace and checks it is still the one the
// lease was made in (a path can be reused for a new namespace).
func (d *Daemon) openNS(path string, dev, ino uint64) (*netns.NS, error) {
	ns, err := netns.Open(d.cfg.HostPrefix + path)
	if err != nil {
		return nil, err
	}
	if dev != 0 || ino != 0 {
		gd, gi, err := ns.ID()
		if err != nil || gd != dev || gi != ino {
			ns.Close()
			return nil, fmt.Errorf("open netns %q: %w (the path now names another namespace)", path, netns.ErrNotExist)
		}
	}
	return ns, nil
}

func (d *Daemon) client(conn *dhcp4.Conn, ls *lease) *dhcp4.Client {
	mtu := conn.MTU()
	if mtu > 65535 {
		mtu = 65535
	}
	return &dhcp4.Client{
		T: conn, ClientID: clientID(ls.key.ContainerID, ls.key.Network, ls.key.IfName),
		Params: ls.params, Extra: ls.provide, Broadcast: d.cfg.Broadcast, MaxSize: uint16(max(mtu, 0)),
		FirstResend: d.cfg.FirstResend, ResendMax: d.cfg.ResendMax,
		Log: d.log.With("lease", ls.key.String()),
	}
}

// withConn opens the lease's namespace and a packet socket on its
// interface and runs fn.
func (d *Daemon) withConn(ls *lease, fn func(*dhcp4.Client) error) error {
	ns, err := d.openNS(ls.netns, ls.nsDev, ls.nsIno)
	if err != nil {
		return err
	}
	defer ns.Close()
	conn, err := dhcp4.Open(ns, ls.key.IfName)
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(d.client(conn, ls))
}

func (d *Daemon) allocate(ctx context.Context, req *Request) (*Response, error) {
	unlock := d.locks.lock(req.Key)
	defer unlock()
	ns, err := d.openNS(req.Netns, 0, 0)
	if err != nil {
		if errors.Is(err, netns.ErrNotExist) || errors.Is(err, netns.ErrNotNetNS) {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidEnv, "allocate %s: netns %q: %v", req.Key, d.cfg.HostPrefix+req.Netns, err)
		}
		return nil, fmt.Errorf("allocate %s: %w", req.Key, err)
	}
	defer ns.Close()
	dev, ino, err := ns.ID()
	if err != nil {
		return nil, fmt.Errorf("allocate %s: identify netns: %w", req.Key, err)
	}

	d.mu.Lock()
	old := d.leases[req.Key]
	d.mu.Unlock()
	if old != nil {
		old.mu.Lock()
		reuse := old.nsDev == dev && old.nsIno == ino && old.state != StateExpired
		old.mu.Unlock()
		if reuse {
			return &Response{Lease: old.wire()}, nil
		}
		// A lease for another namespace under the same key, or an
		// expired one: replace it.
		if _, err := d.releaseLocked(req.Key); err != nil {
			d.log.Warn("replace lease", "key", req.Key.String(), "err", err)
		}
	}

	setUp, err := ensureUp(ns, req.IfName, d.cfg.LinkWait)
	if err != nil {
		return nil, fmt.Errorf("allocate %s: %w", req.Key, err)
	}
	ok := false
	defer func() {
		if !ok && setUp {
			setDown(ns, req.IfName) // as the main plugin left it
		}
	}()
	ls := &lease{key: req.Key, netns: req.Netns, nsDev: dev, nsIno: ino, params: req.Params, provide: fromWire(req.Provide),
		state: StateBound, stop: make(chan struct{}), done: make(chan struct{})}
	conn, err := dhcp4.Open(ns, req.IfName)
	if err != nil {
		return nil, fmt.Errorf("allocate %s: %w", req.Key, err)
	}
	got, err := d.client(conn, ls).Acquire(ctx, time.Now().Add(d.cfg.Timeout))
	conn.Close()
	if err != nil {
		return nil, pluginmain.Errorf(pluginmain.CodeTryAgainLater, "allocate %s: no lease on %s within %s: %v", req.Key, req.IfName, d.cfg.Timeout, err)
	}
	ls.cur = got
	ok = true
	d.mu.Lock()
	d.leases[req.Key] = ls
	d.persistLocked(ls)
	d.mu.Unlock()
	d.start(ls)
	d.log.Info("lease acquired", "lease", req.Key.String(), "address", got.Address, "server", got.Server, "duration", got.Duration, "t1", got.T1, "t2", got.T2)
	return &Response{Lease: ls.wire()}, nil
}

// ensureUp sets the interface up (a main plugin may leave it down until
// it has addresses) and waits, at most wait, until it is operationally up.
// It reports whether it set the interface up.
func ensureUp(ns *netns.NS, ifName string, wait time.Duration) (bool, error) {
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		return false, fmt.Errorf("open netlink in %s: %w", ns.Path(), err)
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if err != nil {
		if nl.IsNotFound(err) {
			return false, pluginmain.Errorf(pluginmain.CodeInvalidEnv, "CNI_IFNAME: interface %q does not exist in %s", ifName, ns.Path())
		}
		return false, fmt.Errorf("find %q: %w", ifName, err)
	}
	setUp := false
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(l); err != nil {
			return false, fmt.Errorf("set %q up: %w", ifName, err)
		}
		setUp = true
	}
	deadline := time.Now().Add(wait)
	for {
		l, err = h.LinkByIndex(l.Attrs().Index)
		if err != nil {
			return setUp, fmt.Errorf("find %q: %w", ifName, err)
		}
		if s := l.Attrs().OperState; s == netlink.OperUp || s == netlink.OperUnknown {
			return setUp, nil
		}
		if time.Now().After(deadline) {
			// Let the DHCP exchange report what happens on a link
			// that is not up.
			return setUp, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// setDown sets an interface down, best effort.
func setDown(ns *netns.NS, ifName string) {
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		return
	}
	defer h.Close()
	if l, err := h.LinkByName(ifName); err == nil {
		_ = h.LinkSetDown(l)
	}
}

func (d *Daemon) release(key Key) (int, error) {
	unlock := d.locks.lock(key)
	defer unlock()
	return d.releaseLocked(key)
}

// releaseLocked stops a lease's maintenance, sends DHCPRELEASE when its
// namespace and interface still exist, and forgets it. A missing lease or
// namespace is not an error.
func (d *Daemon) releaseLocked(key Key) (int, error) {
	d.mu.Lock()
	ls := d.leases[key]
	d.mu.Unlock()
	if ls == nil {
		return 0, nil
	}
	ls.halt()
	ls.mu.Lock()
	cur, state := ls.cur, ls.state
	ls.mu.Unlock()
	if state != StateExpired {
		err := d.withConn(ls, func(c *dhcp4.Client) error { return c.Release(cur) })
		switch {
		case err == nil:
			d.log.Info("lease released", "lease", key.String(), "address", cur.Address, "server", cur.Server)
		default:
			d.log.Info("lease dropped without DHCPRELEASE", "lease", key.String(), "address", cur.Address, "reason", err)
		}
	}
	d.forget(ls)
	return 1, nil
}

// forget removes ls from the table and its state file, unless another
// lease has replaced it.
func (d *Daemon) forget(ls *lease) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.leases[ls.key] != ls {
		return
	}
	delete(d.leases, ls.key)
	d.removeStateLocked(ls.key)
}

func (d *Daemon) check(req *Request) (*Response, error) {
	d.mu.Lock()
	ls := d.leases[req.Key]
	d.mu.Unlock()
	if ls == nil {
		return nil, pluginmain.Errorf(pluginmain.CodeUnknownContainer, "check %s: the daemon holds no lease for it", req.Key)
	}
	if req.Netns != "" {
		if ns, err := d.openNS(req.Netns, 0, 0); err == nil {
			dev, ino, _ := ns.ID()
			ns.Close()
			if dev != ls.nsDev || ino != ls.nsIno {
				return nil, fmt.Errorf("check %s: the lease was made in another network namespace than %s", req.Key, req.Netns)
			}
		}
	}
	return &Response{Lease: ls.wire()}, nil
}

func (d *Daemon) gc(req *Request) (*Response, error) {
	keep := map[Attachment]bool{}
	for _, a := range req.Valid {
		keep[a] = true
	}
	d.mu.Lock()
	var drop []Key
	for k := range d.leases {
		if k.Network == req.Network && !keep[Attachment{ContainerID: k.ContainerID, IfName: k.IfName}] {
			drop = append(drop, k)
		}
	}
	d.mu.Unlock()
	n := 0
	for _, k := range drop {
		m, _ := d.release(k)
		n += m
	}
	if n > 0 {
		d.log.Info("gc released leases", "network", req.Network, "count", n)
	}
	return &Response{Released: n}, nil
}

// Leases returns a snapshot of the leases held (for tests and status).
func (d *Daemon) Leases() map[Key]WireLease {
	d.mu.Lock()
	all := make([]*lease, 0, len(d.leases))
	for _, ls := range d.leases {
		all = append(all, ls)
	}
	d.mu.Unlock()
	out := map[Key]WireLease{}
	for _, ls := range all {
		out[ls.key] = *ls.wire()
	}
	return out
}

// keyLocks serialises operations on one lease key.
type keyLocks struct {
	mu sync.Mutex
	m  map[Key]*keyLock
}

type keyLock struct {
	sync.Mutex
	refs int
}

func (k *keyLocks) lock(key Key) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[Key]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// Listen creates the daemon's unix socket at path (mode 0600, parent
// directories created). A socket file left by a dead daemon is replaced;
// one that still answers is an error, as is any other file at path.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen on %s: the path exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another daemon answers there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen on %s: remove stale socket: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, nil
}
