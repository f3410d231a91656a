package hostgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

// Backend is the host-gw backend. Create it with New.
type Backend struct {
	net  subnet.Config
	ext  dataplane.ExternalInterface
	log  *slog.Logger
	ns   *netns.NS
	h    *netlink.Handle
	ap   *dataplane.Applier
	loop *dataplane.Loop

	startOnce sync.Once

	// Guarded by the loop's lock.
	own    subnet.Lease
	hasOwn bool
	leases []subnet.Lease
	synced bool

	reconciles, reconcileErrs, leaseErrs, routes atomic.Uint64
}

// New checks the configuration and returns the backend; it changes nothing
// in the kernel. The calling thread's network namespace is the host's.
func New(cfg *subnet.Config, ext dataplane.ExternalInterface, o dataplane.Options) (*Backend, error) {
	var errs []error
	if err := ParseConfig(cfg.Backend); err != nil {
		errs = append(errs, err)
	}
	if ext.Index <= 0 || ext.Name == "" {
		errs = append(errs, errors.New("external interface not set"))
	}
	if cfg.EnableIPv4 && ext.ExtAddr != ext.IfaceAddr {
		errs = append(errs, fmt.Errorf("public IP %s differs from the interface address %s: host-gw needs L2 adjacency", ext.ExtAddr, ext.IfaceAddr))
	}
	if cfg.EnableIPv6 && ext.ExtAddr6 != ext.IfaceAddr6 {
		errs = append(errs, fmt.Errorf("public IPv6 %s differs from the interface address %s: host-gw needs L2 adjacency", ext.ExtAddr6, ext.IfaceAddr6))
	}
	if cfg.EnableIPv4 && !ext.IfaceAddr.Is4() {
		errs = append(errs, fmt.Errorf("external interface %s has no IPv4 address", ext.Name))
	}
	if cfg.EnableIPv6 && !ext.IfaceAddr6.Is6() {
		errs = append(errs, fmt.Errorf("external interface %s has no IPv6 address", ext.Name))
	}
	if !cfg.EnableIPv4 && !cfg.EnableIPv6 {
		errs = append(errs, errors.New("neither IPv4 nor IPv6 is enabled"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Backend{net: *cfg, ext: ext, log: log.With("backend", BackendType)}
	ns, err := netns.Current()
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(ns.Handle(), unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	b.ns, b.h = ns, h
	b.ap = dataplane.NewApplier(h, b.log)
	b.loop = dataplane.NewLoop(b.reconcile, dataplane.ResyncPeriod(o), b.log)
	return b, nil
}

// Prepare starts the watcher and the loop and returns the lease
// attributes (no device to create).
func (b *Backend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	if err := ctx.Err(); err != nil {
		return subnet.LeaseAttrs{}, err
	}
	b.startOnce.Do(func() {
		b.loop.WatchLinks(b.ns, func(u netlink.LinkUpdate) bool { return int(u.Index) == b.ext.Index })
		b.loop.Start()
	})
	attrs := subnet.LeaseAttrs{BackendType: BackendType}
	if b.net.EnableIPv4 {
		attrs.PublicIP = b.ext.ExtAddr
	}
	if b.net.EnableIPv6 {
		attrs.PublicIPv6 = b.ext.ExtAddr6
	}
	return attrs, nil
}

// Configure records the own lease (its subnet is never routed elsewhere).
func (b *Backend) Configure(own subnet.Lease) error {
	return b.loop.Do(func() error {
		b.own, b.hasOwn = own, true
		return b.reconcile()
	})
}

// Sync reconciles the routes with the full lease set. The returned error
// joins the problems with single leases (no route for them; the others are
// programmed) and the kernel errors (retried by the loop).
func (b *Backend) Sync(all []subnet.Lease) error {
	var leaseErrs []error
	var kernelErr error
	_ = b.loop.Do(func() error {
		b.leases, b.synced = slices.Clone(all), true
		leaseErrs, kernelErr = b.reconcileLeases()
		return retryable(leaseErrs, kernelErr)
	})
	return errors.Join(append(leaseErrs, kernelErr)...)
}

// reconcile is the loop's function: it fails on kernel errors, and asks
// for a later re-check while a peer is not on-link.
func (b *Backend) reconcile() error {
	return retryable(b.reconcileLeases())
}

func retryable(leaseErrs []error, kernelErr error) error {
	if kernelErr != nil {
		return kernelErr
	}
	return dataplane.RetryLater(leaseErrs)
}

func (b *Backend) reconcileLeases() ([]error, error) {
	if !b.synced {
		return nil, nil
	}
	b.reconciles.Add(1)
	want, leaseErrs := Desired(b.params(), b.leases, b.reach)
	b.leaseErrs.Store(uint64(len(leaseErrs)))
	b.routes.Store(uint64(len(want.Routes)))
	ch, err := b.ap.Apply(want, b.scope())
	if ch.Set+ch.Deleted > 0 {
		b.log.Info("programmed routes", "set", ch.Set, "deleted", ch.Deleted, "failed", ch.Failed, "routes", len(want.Routes))
	}
	if err != nil {
		b.reconcileErrs.Add(1)
	}
	return leaseErrs, err
}

func (b *Backend) params() Params {
	p := Params{ExtDev: b.ext.Name, IPv4: b.net.EnableIPv4, IPv6: b.net.EnableIPv6,
		Network: b.net.Network, IPv6Network: b.net.IPv6Network}
	if b.hasOwn {
		p.Own = b.own
	}
	if p.IPv4 {
		p.OwnPublic = b.ext.ExtAddr
	}
	if p.IPv6 {
		p.OwnPublic6 = b.ext.ExtAddr6
	}
	return p
}

func (b *Backend) reach(ip netip.Addr) error { return dataplane.OnLink(b.h, b.ext, ip) }

func (b *Backend) scope() dataplane.Scope {
	sc := dataplane.Scope{Links: map[string]int{b.ext.Name: b.ext.Index}}
	if b.net.EnableIPv4 {
		sc.Families = append(sc.Families, netlink.FAMILY_V4)
	}
	if b.net.EnableIPv6 {
		sc.Families = append(sc.Families, netlink.FAMILY_V6)
	}
	return sc
}

// MTU is the external interface's: host-gw adds no header.
func (b *Backend) MTU() int { return b.ext.MTU }

// Desired returns the state the last pass wanted, for tests and `status`.
func (b *Backend) Desired() (dataplane.State, []error) {
	var s dataplane.State
	var errs []error
	_ = b.loop.Do(func() error {
		if b.synced {
			s, errs = Desired(b.params(), b.leases, b.reach)
		}
		return nil
	})
	return s, errs
}

// Observe returns linen's routes the kernel holds now.
func (b *Backend) Observe() (dataplane.State, error) {
	var s dataplane.State
	var err error
	_ = b.loop.Do(func() error {
		s, err = b.ap.Observe(b.scope())
		return nil
	})
	return s, err
}

// Stats are counters for /metrics.
func (b *Backend) Stats() map[string]uint64 {
	return map[string]uint64{
		"reconciles":       b.reconciles.Load(),
		"reconcile_errors": b.reconcileErrs.Load(),
		"netlink_writes":   b.ap.Writes(),
		"netlink_failures": b.ap.Failures(),
		"lease_errors":     b.leaseErrs.Load(),
		"routes":           b.routes.Load(),
	}
}

// Writes is the number of netlink writes so far.
func (b *Backend) Writes() uint64 { return b.ap.Writes() }

// Close stops the watcher and the loop; the routes stay.
func (b *Backend) Close() error {
	b.loop.Close()
	b.h.Close()
	return b.ns.Close()
}
