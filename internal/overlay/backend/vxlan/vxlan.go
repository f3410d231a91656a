package vxlan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

// Backend is the vxlan backend. Create it with New.
type Backend struct {
	cfg  Config
	net  subnet.Config
	ext  dataplane.ExternalInterface
	opts dataplane.Options
	log  *slog.Logger

	ns   *netns.NS // the host namespace
	h    *netlink.Handle
	ap   *dataplane.Applier
	loop *dataplane.Loop

	startOnce sync.Once

	v4, v6 *vtep // nil when the family is off

	// Guarded by the loop's lock.
	prepared bool
	own      subnet.Lease
	hasOwn   bool
	leases   []subnet.Lease
	synced   bool

	reconciles, reconcileErrs, devWrites, created, leaseErrs atomic.Uint64
	routes, neighs, fdb                                      atomic.Uint64
}

// vtep is one VXLAN device.
type vtep struct {
	family int // netlink.FAMILY_V4 or FAMILY_V6
	name   string
	src    netip.Addr
	mtu    int
	mac    net.HardwareAddr // the VtepMAC, fixed by Prepare
	index  int              // current ifindex, 0 = unknown (loop lock)
	// watchIndex mirrors index for the link watcher's goroutine.
	watchIndex atomic.Int64
}

// DeviceName is the IPv4 device's name for a VNI ("flannel.1").
func DeviceName(vni int) string { return "flannel." + strconv.Itoa(vni) }

// DeviceName6 is the IPv6 device's name for a VNI ("flannel-v6.1").
func DeviceName6(vni int) string { return "flannel-v6." + strconv.Itoa(vni) }

// New checks the configuration and returns the backend; it changes nothing
// in the kernel. The calling thread's network namespace is the host's.
func New(cfg *subnet.Config, ext dataplane.ExternalInterface, o dataplane.Options) (*Backend, error) {
	c, err := ParseConfig(cfg.Backend)
	if err != nil {
		return nil, err
	}
	var errs []error
	base := c.MTU
	if base == 0 {
		base = ext.MTU
	}
	if ext.Index <= 0 || ext.Name == "" {
		errs = append(errs, errors.New("external interface not set"))
	}
	b := &Backend{cfg: c, net: *cfg, ext: ext, opts: o, log: o.Log}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.log = b.log.With("backend", BackendType)
	if cfg.EnableIPv4 {
		switch {
		case !ext.IfaceAddr.Is4():
			errs = append(errs, fmt.Errorf("external interface %s has no IPv4 address", ext.Name))
		case base-Overhead < 68:
			errs = append(errs, fmt.Errorf("MTU %d leaves %d for %s (at least 68 needed)", base, base-Overhead, DeviceName(c.VNI)))
		}
		b.v4 = &vtep{family: netlink.FAMILY_V4, name: DeviceName(c.VNI), src: ext.IfaceAddr, mtu: base - Overhead}
	}
	if cfg.EnableIPv6 {
		switch {
		case !ext.IfaceAddr6.Is6():
			errs = append(errs, fmt.Errorf("external interface %s has no IPv6 address", ext.Name))
		case base-Overhead6 < 1280:
			errs = append(errs, fmt.Errorf("MTU %d leaves %d for %s (IPv6 needs 1280)", base, base-Overhead6, DeviceName6(c.VNI)))
		}
		b.v6 = &vtep{family: netlink.FAMILY_V6, name: DeviceName6(c.VNI), src: ext.IfaceAddr6, mtu: base - Overhead6}
	}
	if b.v4 == nil && b.v6 == nil {
		errs = append(errs, errors.New("neither IPv4 nor IPv6 is enabled"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
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

func (b *Backend) vteps() []*vtep {
	var vs []*vtep
	if b.v4 != nil {
		vs = append(vs, b.v4)
	}
	if b.v6 != nil {
		vs = append(vs, b.v6)
	}
	return vs
}

// Prepare creates (or adopts) the VXLAN devices, fixes the VtepMACs, starts
// the link watcher and the repair loop, and returns the lease attributes.
func (b *Backend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	var attrs subnet.LeaseAttrs
	if err := ctx.Err(); err != nil {
		return attrs, err
	}
	err := b.loop.Do(func() error {
		for _, v := range b.vteps() {
			if err := b.chooseMAC(v); err != nil {
				return err
			}
			if err := b.ensureDevice(v, true); err != nil {
				return err
			}
		}
		b.prepared = true
		return nil
	})
	if err != nil {
		return attrs, err
	}
	b.startOnce.Do(func() {
		b.loop.WatchLinks(b.ns, b.linkMatters)
		b.loop.Start()
	})
	attrs.BackendType = BackendType
	if b.v4 != nil {
		attrs.PublicIP = b.ext.ExtAddr
		attrs.BackendData = MarshalLeaseData(b.cfg.VNI, b.v4.mac)
	}
	if b.v6 != nil {
		attrs.PublicIPv6 = b.ext.ExtAddr6
		attrs.BackendV6Data = MarshalLeaseData(b.cfg.VNI, b.v6.mac)
	}
	return attrs, nil
}

// linkMatters tells which link changes warrant a reconciliation: any change
// of a VXLAN device (by name or index) or of the external interface.
func (b *Backend) linkMatters(u netlink.LinkUpdate) bool {
	idx := int(u.Index)
	if idx == b.ext.Index {
		return true
	}
	name := ""
	if u.Link != nil {
		name = u.Link.Attrs().Name
	}
	for _, v := range b.vteps() {
		if name == v.name || (idx != 0 && int64(idx) == v.watchIndex.Load()) {
			return true
		}
	}
	return false
}

// Configure gives the devices the own lease's subnet address.
func (b *Backend) Configure(own subnet.Lease) error {
	return b.loop.Do(func() error {
		b.own, b.hasOwn = own, true
		return b.reconcile()
	})
}

// Sync reconciles the data plane with the full lease set. The returned
// error joins the problems with single leases (those get no entries; the
// others are programmed) and the kernel errors (retried by the loop).
func (b *Backend) Sync(all []subnet.Lease) error {
	var leaseErrs []error
	err := b.loop.Do(func() error {
		b.leases, b.synced = slices.Clone(all), true
		var err error
		leaseErrs, err = b.reconcileLeases()
		return err
	})
	return errors.Join(append(leaseErrs, err)...)
}

// reconcile is the loop's function: kernel errors only.
func (b *Backend) reconcile() error {
	_, err := b.reconcileLeases()
	return err
}

// reconcileLeases runs one level-triggered pass (loop lock held): devices,
// addresses, then routes, neighbour and FDB entries.
func (b *Backend) reconcileLeases() ([]error, error) {
	if !b.prepared {
		return nil, nil
	}
	b.reconciles.Add(1)
	var errs []error
	for _, v := range b.vteps() {
		if err := b.ensureDevice(v, false); err != nil {
			errs = append(errs, err)
			continue
		}
		if b.hasOwn {
			if err := b.ensureAddr(v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		b.reconcileErrs.Add(1)
		return nil, err
	}
	if !b.synced {
		return nil, nil
	}
	want, leaseErrs := Desired(b.params(), b.leases, b.reach)
	b.leaseErrs.Store(uint64(len(leaseErrs)))
	b.routes.Store(uint64(len(want.Routes)))
	b.neighs.Store(uint64(len(want.Neighs)))
	b.fdb.Store(uint64(len(want.FDB)))
	ch, err := b.ap.Apply(want, b.scope())
	if ch.Set+ch.Deleted > 0 {
		b.log.Info("programmed data plane", "set", ch.Set, "deleted", ch.Deleted, "failed", ch.Failed,
			"routes", len(want.Routes), "neighbours", len(want.Neighs), "fdb", len(want.FDB))
	}
	if err != nil {
		b.reconcileErrs.Add(1)
	}
	return leaseErrs, err
}

func (b *Backend) params() Params {
	p := Params{VNI: b.cfg.VNI, ExtDev: b.ext.Name, DirectRouting: b.cfg.DirectRouting,
		Network: b.net.Network, IPv6Network: b.net.IPv6Network}
	if b.hasOwn {
		p.Own = b.own
	}
	if b.v4 != nil {
		p.Dev, p.OwnMAC, p.OwnPublic = b.v4.name, b.v4.mac, b.ext.ExtAddr
	}
	if b.v6 != nil {
		p.Dev6, p.OwnMAC6, p.OwnPublic6 = b.v6.name, b.v6.mac, b.ext.ExtAddr6
	}
	return p
}

func (b *Backend) reach(ip netip.Addr) error { return dataplane.OnLink(b.h, b.ext, ip) }

func (b *Backend) scope() dataplane.Scope {
	sc := dataplane.Scope{Links: map[string]int{b.ext.Name: b.ext.Index}}
	for _, v := range b.vteps() {
		sc.Families = append(sc.Families, v.family)
		sc.Links[v.name] = v.index
		sc.Owned = append(sc.Owned, v.name)
	}
	return sc
}

// MTU is the pods' MTU: the smallest VXLAN device MTU.
func (b *Backend) MTU() int {
	m := 0
	for _, v := range b.vteps() {
		if m == 0 || v.mtu < m {
			m = v.mtu
		}
	}
	return m
}

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

// Observe returns linen's entries the kernel holds now.
func (b *Backend) Observe() (dataplane.State, error) {
	var s dataplane.State
	var err error
	_ = b.loop.Do(func() error {
		s, err = b.ap.Observe(b.scope())
		return nil
	})
	return s, err
}

// Stats are counters for /metrics: reconciliation passes and failures,
// netlink writes, device (re)creations, and the size of the programmed
// state (routes, neighbours, fdb) and of the leases refused in the last
// pass.
func (b *Backend) Stats() map[string]uint64 {
	return map[string]uint64{
		"reconciles":       b.reconciles.Load(),
		"reconcile_errors": b.reconcileErrs.Load(),
		"netlink_writes":   b.ap.Writes() + b.devWrites.Load(),
		"netlink_failures": b.ap.Failures(),
		"device_creations": b.created.Load(),
		"lease_errors":     b.leaseErrs.Load(),
		"routes":           b.routes.Load(),
		"neighbours":       b.neighs.Load(),
		"fdb_entries":      b.fdb.Load(),
	}
}

// Writes is the number of netlink writes so far (tests: a Sync that changes
// nothing adds none).
func (b *Backend) Writes() uint64 { return b.ap.Writes() + b.devWrites.Load() }

// Close stops the watcher and the loop; the kernel state stays.
func (b *Backend) Close() error {
	b.loop.Close()
	b.h.Close()
	return b.ns.Close()
}
