package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/nl"
)

// Scope tells the applier which kernel entries are linen's and how the
// devices a state names map to interface indexes.
type Scope struct {
	// Families are the address families (netlink.FAMILY_V4, FAMILY_V6)
	// whose RouteProtocol routes in the main table are managed. A family
	// not listed is neither dumped nor changed.
	Families []int
	// Links maps the name of every device the desired state names, and of
	// every owned device, to its interface index.
	Links map[string]int
	// Owned are the devices whose permanent neighbour entries (of the
	// managed families) and permanent FDB entries are linen's.
	Owned []string
}

func (sc Scope) has(family int) bool {
	for _, f := range sc.Families {
		if f == family {
			return true
		}
	}
	return false
}

func (sc Scope) nameOf(index int) string {
	for n, i := range sc.Links {
		if i == index {
			return n
		}
	}
	return fmt.Sprintf("if%d", index)
}

func (sc Scope) owned(index int) bool {
	for _, n := range sc.Owned {
		if i, ok := sc.Links[n]; ok && i == index {
			return true
		}
	}
	return false
}

// Changes counts what one Apply wrote.
type Changes struct {
	Set, Deleted, Failed int
}

// Applier reconciles the kernel with a desired State through one netlink
// handle (bound to the host namespace, usable from any goroutine). It is not
// safe for concurrent Apply calls; the backends serialise them.
type Applier struct {
	h   *netlink.Handle
	log *slog.Logger

	writes, deletes, failures atomic.Uint64
}

// NewApplier returns an applier writing through h.
func NewApplier(h *netlink.Handle, log *slog.Logger) *Applier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Applier{h: h, log: log}
}

// Writes is the number of netlink writes (sets and deletes) done so far.
func (a *Applier) Writes() uint64 { return a.writes.Load() + a.deletes.Load() }

// Deletes is the number of netlink deletes done so far.
func (a *Applier) Deletes() uint64 { return a.deletes.Load() }

// Failures is the number of netlink writes that failed so far.
func (a *Applier) Failures() uint64 { return a.failures.Load() }

// Observe returns the entries in scope that the kernel holds now (the
// routes of RouteProtocol, the permanent neighbour and FDB entries of the
// owned devices) in canonical order.
func (a *Applier) Observe(sc Scope) (State, error) {
	o, err := a.observe(sc)
	if err != nil {
		return State{}, err
	}
	var s State
	for _, r := range o.routes {
		s.Routes = append(s.Routes, r.r)
	}
	for _, n := range o.neighs {
		s.Neighs = append(s.Neighs, n.n)
	}
	for _, f := range o.fdb {
		s.FDB = append(s.FDB, f.f)
	}
	s.Sort()
	return s, nil
}

// Apply makes the kernel's in-scope entries equal to want: it dumps each
// kind once, and writes only the differences (replace for missing or
// different entries, delete for entries no longer wanted). Entries are
// written in the order that never leaves a route without its neighbour and
// FDB entry: stale routes are deleted first, then stale FDB and neighbour
// entries, then neighbours, FDB entries and routes are set. A failed write
// does not stop the others; all failures are returned, joined.
func (a *Applier) Apply(want State, sc Scope) (Changes, error) {
	have, err := a.observe(sc)
	if err != nil {
		return Changes{}, err
	}
	ops, perr := plan(want, have, sc)
	var ch Changes
	errs := []error{perr}
	for _, op := range ops {
		err := a.exec(op, sc)
		switch {
		case err != nil:
			ch.Failed++
			a.failures.Add(1)
			errs = append(errs, fmt.Errorf("%s: %w", op, err))
		case op.del:
			ch.Deleted++
		default:
			ch.Set++
		}
		if err == nil {
			a.log.Debug("data plane", "op", op.String())
		}
	}
	return ch, errors.Join(errs...)
}

// op is one netlink write.
type op struct {
	del   bool
	route *Route
	neigh *Neigh
	fdb   *FDB
	raw   any // the kernel's entry, for deletes
}

func (o op) String() string {
	verb := "set"
	if o.del {
		verb = "del"
	}
	switch {
	case o.route != nil:
		return verb + " route " + o.route.String()
	case o.neigh != nil:
		return verb + " neigh " + o.neigh.String()
	default:
		return verb + " fdb " + o.fdb.String()
	}
}

type kRoute struct {
	r     Route
	exact bool // a plain unicast route, metric 0: replaceable in place
	raw   netlink.Route
}

type kNeigh struct {
	n   Neigh
	raw netlink.Neigh
}

type kFDB struct {
	f   FDB
	raw netlink.Neigh
}

type observed struct {
	routes []kRoute
	neighs []kNeigh
	fdb    []kFDB
}

func (a *Applier) observe(sc Scope) (observed, error) {
	var o observed
	for _, fam := range sc.Families {
		routes, err := nl.Retry(func() ([]netlink.Route, error) {
			return a.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: RouteProtocol},
				netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return o, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			o.routes = append(o.routes, fromKernelRoute(r, fam, sc))
		}
	}
	if len(sc.Owned) == 0 {
		return o, nil
	}
	for _, fam := range sc.Families {
		neighs, err := nl.Retry(func() ([]netlink.Neigh, error) { return a.h.NeighList(0, fam) })
		if err != nil {
			return o, fmt.Errorf("list neighbours: %w", err)
		}
		for _, n := range neighs {
			if !sc.owned(n.LinkIndex) || n.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			ip, _ := netip.AddrFromSlice(n.IP)
			o.neighs = append(o.neighs, kNeigh{n: Neigh{Dev: sc.nameOf(n.LinkIndex), IP: ip.Unmap(), MAC: n.HardwareAddr}, raw: n})
		}
	}
	fdb, err := nl.Retry(func() ([]netlink.Neigh, error) { return a.h.NeighList(0, unix.AF_BRIDGE) })
	if err != nil {
		return o, fmt.Errorf("list fdb: %w", err)
	}
	for _, n := range fdb {
		if !sc.owned(n.LinkIndex) || n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		ip, _ := netip.AddrFromSlice(n.IP)
		o.fdb = append(o.fdb, kFDB{f: FDB{Dev: sc.nameOf(n.LinkIndex), MAC: n.HardwareAddr, Dst: ip.Unmap()}, raw: n})
	}
	return o, nil
}

func fromKernelRoute(r netlink.Route, fam int, sc Scope) kRoute {
	var dst netip.Prefix
	if r.Dst != nil {
		ip, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		dst = netip.PrefixFrom(ip.Unmap(), ones)
	} else if fam == netlink.FAMILY_V6 {
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	} else {
		dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	gw, _ := netip.AddrFromSlice(r.Gw)
	k := kRoute{
		r:   Route{Dst: dst, Gw: gw.Unmap(), Dev: sc.nameOf(r.LinkIndex), OnLink: r.Flags&unix.RTNH_F_ONLINK != 0},
		raw: r,
	}
	wantScope := netlink.SCOPE_UNIVERSE
	if r.Gw == nil {
		wantScope = netlink.SCOPE_LINK
	}
	k.exact = r.Priority == 0 && r.Tos == 0 && r.Type == unix.RTN_UNICAST && r.Scope == wantScope &&
		len(r.MultiPath) == 0 && r.Src == nil && r.Encap == nil && r.MTU == 0 && r.Via == nil
	return k
}

func sameMAC(a, b net.HardwareAddr) bool { return strings.EqualFold(a.String(), b.String()) }

// plan computes the writes that turn have into want (pure; see Apply for
// the order).
func plan(want State, have observed, sc Scope) ([]op, error) {
	var errs []error
	var routeDels, fdbDels, neighDels, neighSets, fdbSets, routeSets []op

	// Routes, keyed by destination.
	wantRoutes := map[netip.Prefix]*Route{}
	for i := range want.Routes {
		r := &want.Routes[i]
		if _, dup := wantRoutes[r.Dst]; dup {
			errs = append(errs, fmt.Errorf("route %s wanted twice", r.Dst))
			continue
		}
		if !sc.has(familyOf(r.Dst.Addr())) {
			errs = append(errs, fmt.Errorf("route %s: family not in scope", r.Dst))
			continue
		}
		wantRoutes[r.Dst] = r
	}
	matched := map[netip.Prefix]bool{}
	for _, k := range have.routes {
		w, ok := wantRoutes[k.r.Dst]
		if ok && k.exact && !matched[k.r.Dst] {
			matched[k.r.Dst] = true
			if k.r != *w {
				routeSets = append(routeSets, op{route: w})
			}
			continue
		}
		routeDels = append(routeDels, op{del: true, route: &k.r, raw: k.raw})
	}
	for i := range want.Routes {
		r := &want.Routes[i]
		if wantRoutes[r.Dst] == r && !matched[r.Dst] {
			routeSets = append(routeSets, op{route: r})
		}
	}

	// Neighbours, keyed by device and IP.
	type nkey struct {
		dev string
		ip  netip.Addr
	}
	wantNeighs := map[nkey]*Neigh{}
	for i := range want.Neighs {
		n := &want.Neighs[i]
		k := nkey{n.Dev, n.IP}
		if _, dup := wantNeighs[k]; dup {
			errs = append(errs, fmt.Errorf("neighbour %s on %s wanted twice", n.IP, n.Dev))
			continue
		}
		wantNeighs[k] = n
	}
	seenNeigh := map[nkey]bool{}
	for _, k := range have.neighs {
		key := nkey{k.n.Dev, k.n.IP}
		w, ok := wantNeighs[key]
		if !ok {
			neighDels = append(neighDels, op{del: true, neigh: &k.n, raw: k.raw})
			continue
		}
		seenNeigh[key] = true
		if !sameMAC(w.MAC, k.n.MAC) {
			neighSets = append(neighSets, op{neigh: w})
		}
	}
	for i := range want.Neighs {
		n := &want.Neighs[i]
		key := nkey{n.Dev, n.IP}
		if wantNeighs[key] == n && !seenNeigh[key] {
			neighSets = append(neighSets, op{neigh: n})
		}
	}

	// FDB, keyed by device and MAC. A VXLAN FDB entry may hold several
	// remotes (one dump line each); linen wants exactly one.
	type fkey struct {
		dev, mac string
	}
	wantFDB := map[fkey]*FDB{}
	for i := range want.FDB {
		f := &want.FDB[i]
		k := fkey{f.Dev, strings.ToLower(f.MAC.String())}
		if _, dup := wantFDB[k]; dup {
			errs = append(errs, fmt.Errorf("fdb entry %s on %s wanted twice", f.MAC, f.Dev))
			continue
		}
		wantFDB[k] = f
	}
	fdbOK := map[fkey]bool{}
	for _, k := range have.fdb {
		key := fkey{k.f.Dev, strings.ToLower(k.f.MAC.String())}
		if w, ok := wantFDB[key]; ok && w.Dst == k.f.Dst && !fdbOK[key] {
			fdbOK[key] = true
			continue
		}
		fdbDels = append(fdbDels, op{del: true, fdb: &k.f, raw: k.raw})
	}
	for i := range want.FDB {
		f := &want.FDB[i]
		key := fkey{f.Dev, strings.ToLower(f.MAC.String())}
		if wantFDB[key] == f && !fdbOK[key] {
			fdbSets = append(fdbSets, op{fdb: f})
		}
	}

	ops := make([]op, 0, len(routeDels)+len(fdbDels)+len(neighDels)+len(neighSets)+len(fdbSets)+len(routeSets))
	for _, group := range [][]op{routeDels, fdbDels, neighDels, neighSets, fdbSets, routeSets} {
		ops = append(ops, group...)
	}
	return ops, errors.Join(errs...)
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func (a *Applier) exec(o op, sc Scope) error {
	link := func(dev string) (int, error) {
		i, ok := sc.Links[dev]
		if !ok || i <= 0 {
			return 0, fmt.Errorf("device %s unknown", dev)
		}
		return i, nil
	}
	if o.del {
		a.deletes.Add(1)
		var err error
		switch raw := o.raw.(type) {
		case netlink.Route:
			err = a.h.RouteDel(&raw)
		case netlink.Neigh:
			if o.fdb != nil {
				raw.Family = unix.AF_BRIDGE
				raw.Flags |= netlink.NTF_SELF
			}
			err = a.h.NeighDel(&raw)
		}
		if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
			err = nil // already gone
		}
		return err
	}
	a.writes.Add(1)
	switch {
	case o.route != nil:
		r := o.route
		idx, err := link(r.Dev)
		if err != nil {
			return err
		}
		nr := &netlink.Route{
			Dst:       prefixToIPNet(r.Dst),
			LinkIndex: idx,
			Protocol:  RouteProtocol,
			Table:     unix.RT_TABLE_MAIN,
			Type:      unix.RTN_UNICAST,
			Scope:     netlink.SCOPE_UNIVERSE,
		}
		if r.Gw.IsValid() {
			nr.Gw = net.IP(r.Gw.AsSlice())
		} else {
			nr.Scope = netlink.SCOPE_LINK
		}
		if r.OnLink {
			nr.Flags = int(netlink.FLAG_ONLINK)
		}
		return a.h.RouteReplace(nr)
	case o.neigh != nil:
		n := o.neigh
		idx, err := link(n.Dev)
		if err != nil {
			return err
		}
		return a.h.NeighSet(&netlink.Neigh{
			LinkIndex:    idx,
			Family:       familyOf(n.IP),
			State:        netlink.NUD_PERMANENT,
			Type:         unix.RTN_UNICAST,
			IP:           net.IP(n.IP.AsSlice()),
			HardwareAddr: n.MAC,
		})
	default:
		f := o.fdb
		idx, err := link(f.Dev)
		if err != nil {
			return err
		}
		return a.h.NeighSet(&netlink.Neigh{
			LinkIndex:    idx,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			State:        netlink.NUD_PERMANENT,
			IP:           net.IP(f.Dst.AsSlice()),
			HardwareAddr: f.MAC,
		})
	}
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}
