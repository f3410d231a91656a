// Package dataplane is what linen's overlay backends share: the external
// interface and options they are built with, the desired kernel state as
// plain data (routes, neighbour entries, FDB entries) with a text rendering
// for golden tests, the applier that reconciles the kernel with that state,
// and the loop that re-runs a reconciliation after failures, on request and
// periodically.
//
// "Reconcile, don't script": a backend never turns lease events into kernel
// commands. On every Sync it computes the complete desired state from the
// full lease set with a pure function, dumps what the kernel holds that is
// linen's (one dump per object kind), and writes only the difference. The
// same code path programs a fresh node, repairs a damaged one and removes
// what leases deleted while the daemon was down left behind; a Sync that
// changes nothing performs no writes.
//
// Ownership. The applier changes only entries that are linen's:
//
//   - routes in the main table whose protocol is [RouteProtocol] (108,
//     0x6c, "l"; `ip route` prints "proto 108" unless rt_protos names it;
//     add "108 linen" to /etc/iproute2/rt_protos.d/linen.conf to see the
//     name). A desired route replaces any route with the same destination
//     (and metric 0) whatever its protocol, as flannel's RouteReplace does;
//     a route of another protocol that no lease wants is left alone.
//   - permanent neighbour entries and permanent FDB entries on the devices
//     the backend owns (flannel.<VNI>, flannel-v6.<VNI>); the kernel's own
//     dynamic neighbour entries there are left alone.
//
// The package's names (ExternalInterface, Options) are re-exported by
// package backend; they live here so that backend can import the backend
// implementations for its registry without an import cycle.
package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"linen.dev/linen/internal/overlay/subnet"
)

// RouteProtocol is the rtm_protocol value that marks routes installed by
// linen's backends (RTPROT 108, 0x6c, the letter "l"; unassigned in
// iproute2's rt_protos).
const RouteProtocol = 0x6c

// ExternalInterface is the node's underlay interface, chosen by the daemon.
type ExternalInterface struct {
	Name       string
	Index, MTU int
	IfaceAddr  netip.Addr // IPv4 address on the interface
	IfaceAddr6 netip.Addr // IPv6 address on the interface
	ExtAddr    netip.Addr // public IPv4 address (--public-ip), default IfaceAddr
	ExtAddr6   netip.Addr // public IPv6 address (--public-ipv6), default IfaceAddr6
}

// Options are the settings every backend gets from the daemon.
type Options struct {
	// StateDir keeps state that must survive restarts (the VXLAN VtepMAC).
	// Empty: nothing is persisted.
	StateDir string
	Log      *slog.Logger
	// Resync is the period of the backend's own re-check of the data plane
	// against the last lease set (repairs routes or entries removed behind
	// its back). 0 means DefaultResync; negative turns it off.
	Resync time.Duration
}

// DefaultResync is the period of the periodic re-check when Options.Resync
// is zero.
const DefaultResync = 30 * time.Second

// Route is a unicast route in the main table, installed with RouteProtocol,
// metric 0.
type Route struct {
	Dst    netip.Prefix
	Gw     netip.Addr
	Dev    string
	OnLink bool
}

func (r Route) String() string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	if r.Gw.IsValid() {
		b.WriteString(" via ")
		b.WriteString(r.Gw.String())
	}
	b.WriteString(" dev ")
	b.WriteString(r.Dev)
	if r.OnLink {
		b.WriteString(" onlink")
	}
	return b.String()
}

// Neigh is a permanent neighbour (ARP/NDP) entry.
type Neigh struct {
	Dev string
	IP  netip.Addr
	MAC net.HardwareAddr
}

func (n Neigh) String() string {
	return fmt.Sprintf("%s dev %s lladdr %s permanent", n.IP, n.Dev, n.MAC)
}

// FDB is a permanent forwarding-database entry of a VXLAN device: frames
// for MAC are encapsulated to Dst (`bridge fdb ... self permanent`).
type FDB struct {
	Dev string
	MAC net.HardwareAddr
	Dst netip.Addr
}

func (f FDB) String() string {
	return fmt.Sprintf("%s dev %s dst %s self permanent", f.MAC, f.Dev, f.Dst)
}

// State is a desired (or observed) set of kernel entries.
type State struct {
	Routes []Route
	Neighs []Neigh
	FDB    []FDB
}

// Sort puts the entries in a canonical order (by destination, IP, MAC).
func (s *State) Sort() {
	slices.SortFunc(s.Routes, func(a, b Route) int {
		if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
			return c
		}
		if c := a.Dst.Bits() - b.Dst.Bits(); c != 0 {
			return c
		}
		return strings.Compare(a.String(), b.String())
	})
	slices.SortFunc(s.Neighs, func(a, b Neigh) int {
		if c := a.IP.Compare(b.IP); c != 0 {
			return c
		}
		return strings.Compare(a.String(), b.String())
	})
	slices.SortFunc(s.FDB, func(a, b FDB) int {
		if c := strings.Compare(a.Dev, b.Dev); c != 0 {
			return c
		}
		if c := strings.Compare(a.MAC.String(), b.MAC.String()); c != 0 {
			return c
		}
		return a.Dst.Compare(b.Dst)
	})
}

// String renders the state one entry a line, in iproute2's words and in
// canonical order ("route ...", "neigh ...", "fdb ..."); an empty state is
// the empty string.
func (s State) String() string {
	c := s.Clone()
	c.Sort()
	var b strings.Builder
	for _, r := range c.Routes {
		fmt.Fprintf(&b, "route %s\n", r)
	}
	for _, n := range c.Neighs {
		fmt.Fprintf(&b, "neigh %s\n", n)
	}
	for _, f := range c.FDB {
		fmt.Fprintf(&b, "fdb %s\n", f)
	}
	return b.String()
}

// Clone returns a copy that shares no slices with s.
func (s State) Clone() State {
	return State{Routes: slices.Clone(s.Routes), Neighs: slices.Clone(s.Neighs), FDB: slices.Clone(s.FDB)}
}

// Len is the number of entries.
func (s State) Len() int { return len(s.Routes) + len(s.Neighs) + len(s.FDB) }

// LeaseError is a problem with one lease: the lease gets no data-plane
// entries, the others are still programmed.
type LeaseError struct {
	Key string // the lease key, "10.5.52.0-24"
	Err error
	// Retry marks a problem that may resolve itself without a lease
	// change (a peer not on-link while the underlay is coming up): the
	// backend's loop re-checks with backoff.
	Retry bool
}

func (e *LeaseError) Error() string { return "lease " + e.Key + ": " + e.Err.Error() }
func (e *LeaseError) Unwrap() error { return e.Err }

// ErrRetry wraps what a reconcile function returns when the pass succeeded
// but some leases should be looked at again later (LeaseError.Retry): the
// loop re-runs it with backoff and logs at debug level only.
var ErrRetry = errors.New("re-check later")

// RetryLater returns an ErrRetry error when any of errs is a LeaseError
// marked Retry, else nil.
func RetryLater(errs []error) error {
	n := 0
	for _, err := range errs {
		var le *LeaseError
		if errors.As(err, &le) && le.Retry {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d lease(s)", ErrRetry, n)
}

// SortedLeases returns a copy of the leases ordered by IPv4 subnet, then
// IPv6 subnet: the order in which the backends' Desired functions look at
// them (so which of two conflicting leases wins does not depend on the
// store's order).
func SortedLeases(leases []subnet.Lease) []subnet.Lease {
	out := slices.Clone(leases)
	slices.SortStableFunc(out, func(a, b subnet.Lease) int {
		if c := comparePrefix(a.Subnet, b.Subnet); c != 0 {
			return c
		}
		return comparePrefix(a.IPv6Subnet, b.IPv6Subnet)
	})
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
