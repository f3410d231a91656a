// Package daemon is `linen daemon`, flanneld's role on a node: lease a pod
// subnet from etcd, program the backend's data plane for every other
// node's lease, write subnet.env for the CNI meta-plugin, and keep all of it
// current.
//
//	config (etcd) -> external interface -> backend.Prepare (devices, attrs)
//	  -> lease (acquire; keep renewing; re-acquire if lost) -> backend.Configure
//	  -> masquerade/forward rules -> subnet.env -> ready
//	  -> watch leases -> backend.Sync(all) on every change
//
// SIGTERM (context cancellation) stops the goroutines and leaves the kernel
// state in place, so a restart drops no traffic: the new process finds its
// devices, reuses its lease (same public IP) and reconciles.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nft"
	"linen.dev/linen/internal/overlay/backend"
	"linen.dev/linen/internal/overlay/subnet"
	"linen.dev/linen/internal/subnetenv"
)

// Config is the daemon's configuration (flanneld's flags).
type Config struct {
	Store        subnet.Store // the lease store (etcd, external or embedded)
	Iface        IfaceOptions
	IPMasq       bool
	ForwardRules bool
	SubnetFile   string
	RenewMargin  time.Duration
	HealthzAddr  string // "" = no health server
	DataDir      string // backend state (VtepMAC)
	Backends     map[string]backend.Constructor
	Log          *slog.Logger
	// Ready, when set, is closed once the node is ready (tests).
	Ready chan struct{}
}

// Run runs the daemon until ctx ends.
func Run(ctx context.Context, c Config) error {
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	m := &metrics{}
	if c.HealthzAddr != "" {
		ln, err := net.Listen("tcp", c.HealthzAddr)
		if err != nil {
			return fmt.Errorf("healthz: %w", err)
		}
		srv := &http.Server{Handler: m.handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		log.Info("serving /healthz, /readyz, /metrics", "addr", ln.Addr().String())
	}

	mgr := subnet.NewManager(c.Store, subnet.ManagerOptions{RenewMargin: c.RenewMargin, Log: log})
	netConf, err := mgr.Config(ctx)
	if err != nil {
		return err
	}
	log.Info("network configuration", "network", netConf.Network, "ipv6", netConf.IPv6Network, "backend", netConf.BackendType)

	// The namespace of the calling thread is the node's. Everything that
	// later runs on other goroutines (rules after a lease change) reaches
	// it through this handle, never through the thread it happens to run on.
	hostNS, err := netns.Current()
	if err != nil {
		return err
	}
	defer hostNS.Close()
	h, err := netlink.NewHandleAt(hostNS.Handle())
	if err != nil {
		return err
	}
	defer h.Close()
	io := c.Iface
	io.IPv4, io.IPv6 = netConf.EnableIPv4, netConf.EnableIPv6
	ext, err := SelectInterface(h, io)
	if err != nil {
		return err
	}
	log.Info("external interface", "name", ext.Name, "addr", ext.IfaceAddr, "public", ext.ExtAddr, "mtu", ext.MTU)

	ctor, ok := c.Backends[netConf.BackendType]
	if !ok {
		return fmt.Errorf("backend type %q is not supported (have %v)", netConf.BackendType, keys(c.Backends))
	}
	be, err := ctor(netConf, ext, backend.Options{StateDir: c.DataDir, Log: log})
	if err != nil {
		return fmt.Errorf("backend %s: %w", netConf.BackendType, err)
	}
	defer be.Close()
	m.backendStats = be.Stats
	attrs, err := be.Prepare(ctx)
	if err != nil {
		return fmt.Errorf("backend %s: %w", netConf.BackendType, err)
	}
	if !attrs.PublicIP.IsValid() && netConf.EnableIPv4 {
		attrs.PublicIP = ext.ExtAddr
	}
	if !attrs.PublicIPv6.IsValid() && netConf.EnableIPv6 {
		attrs.PublicIPv6 = ext.ExtAddr6
	}

	prev := subnet.Previous{}
	if env, err := subnetenv.Read(c.SubnetFile); err == nil {
		prev.Subnet, prev.IPv6Subnet = env.Subnet.Masked(), env.IPv6Subnet.Masked()
	}
	lease, err := mgr.Acquire(ctx, attrs, prev)
	if err != nil {
		return err
	}
	log.Info("leased subnet", "subnet", lease.Subnet, "ipv6", lease.IPv6Subnet, "expires", lease.Expiration)

	var mu sync.Mutex // guards lease and the writes that follow it
	apply := func(l *subnet.Lease) error {
		mu.Lock()
		defer mu.Unlock()
		lease = l
		if err := be.Configure(*l); err != nil {
			return fmt.Errorf("configure backend for %s: %w", l.Subnet, err)
		}
		if err := setRules(hostNS, netConf, l, c.IPMasq, c.ForwardRules); err != nil {
			return err
		}
		env := &subnetenv.Env{Network: netConf.Network, Subnet: firstHost(l.Subnet), MTU: be.MTU(), IPMasq: c.IPMasq,
			IPv6Network: netConf.IPv6Network, IPv6Subnet: firstHost(l.IPv6Subnet)}
		if err := subnetenv.Write(c.SubnetFile, env); err != nil {
			return fmt.Errorf("write %s: %w", c.SubnetFile, err)
		}
		return nil
	}
	if err := apply(lease); err != nil {
		return err
	}
	m.setReady(true)
	if c.Ready != nil {
		close(c.Ready)
	}
	log.Info("ready", "subnet-file", c.SubnetFile, "mtu", be.MTU())

	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		err := mgr.Watch(ctx, func(all []subnet.Lease) {
			start := time.Now()
			err := be.Sync(all)
			m.reconciled(len(all), time.Since(start), err)
			if err != nil {
				log.Error("reconcile data plane", "leases", len(all), "err", err)
			} else {
				log.Debug("reconciled data plane", "leases", len(all), "took", time.Since(start))
			}
		})
		if err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("watch leases: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		err := mgr.Keep(ctx, lease, func(l *subnet.Lease) {
			m.mu.Lock()
			m.leaseReacquire++
			m.mu.Unlock()
			log.Warn("own lease was lost; acquired a new one", "subnet", l.Subnet)
			if err := apply(l); err != nil {
				log.Error("apply new lease", "err", err)
			}
		})
		if err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("keep lease: %w", err)
		}
	}()
	select {
	case <-ctx.Done():
		log.Info("stopping; the data plane stays in place")
	case err = <-errc:
	}
	wg.Wait()
	return err
}

// setRules installs the masquerade and forward rules for the node's lease.
func setRules(ns *netns.NS, cfg *subnet.Config, l *subnet.Lease, masq, forward bool) error {
	if !masq && !forward {
		return nil
	}
	c, sock, err := nft.Dial(ns.Fd())
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer sock.Close()
	defer c.Close()
	var nets []nft.OverlayNet
	if cfg.EnableIPv4 {
		nets = append(nets, nft.OverlayNet{Network: cfg.Network, Subnet: l.Subnet})
	}
	if cfg.EnableIPv6 && cfg.IPv6Network.IsValid() {
		nets = append(nets, nft.OverlayNet{Network: cfg.IPv6Network, Subnet: l.IPv6Subnet})
	}
	return nft.SetOverlayRules(c, nets, masq)
}

// firstHost turns 10.5.52.0/24 into 10.5.52.1/24 (subnet.env's form).
func firstHost(p netip.Prefix) netip.Prefix {
	if !p.IsValid() {
		return p
	}
	return netip.PrefixFrom(p.Masked().Addr().Next(), p.Bits())
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// DefaultDataDir holds backend state and the embedded etcd.
const DefaultDataDir = "/var/lib/linen"

// EnsureDir creates dir (0700) if missing.
func EnsureDir(dir string) error {
	if dir == "" {
		return errors.New("empty directory")
	}
	return os.MkdirAll(filepath.Clean(dir), 0o700)
}

// HealthzAddr builds the listen address from flanneld's --healthz-ip and
// --healthz-port (port 0 = off).
func HealthzAddr(ip string, port int) string {
	if port <= 0 {
		return ""
	}
	return net.JoinHostPort(ip, strconv.Itoa(port))
}
