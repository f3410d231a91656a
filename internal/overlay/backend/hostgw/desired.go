package hostgw

import (
	"errors"
	"fmt"
	"net/netip"

	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

// Params are the inputs of Desired besides the leases.
type Params struct {
	ExtDev      string // the external interface
	IPv4, IPv6  bool   // families in use
	Network     netip.Prefix
	IPv6Network netip.Prefix
	Own         subnet.Lease // this node's lease (zero before Configure)
	OwnPublic   netip.Addr
	OwnPublic6  netip.Addr
}

// Reach reports nil when a public IP is on-link on the external interface,
// else why not.
type Reach func(netip.Addr) error

// Desired computes the routes for the lease set: per remote host-gw lease
// and enabled family, the remote subnet via the remote public IP on the
// external interface. Leases of other backend types, the own lease and
// leases of this node's public IP are skipped; a lease whose public IP is
// not on-link, that lies outside the network or has no public IP yields an
// error naming it (and no route).
func Desired(p Params, leases []subnet.Lease, reach Reach) (dataplane.State, []error) {
	var s dataplane.State
	var errs []error
	sorted := dataplane.SortedLeases(leases)
	for _, l := range sorted {
		if l.Attrs.BackendType != BackendType || isOwn(p, l) {
			continue
		}
		if p.IPv4 && l.Subnet.IsValid() {
			if err := route(&s, p.ExtDev, p.Network, l.Subnet, l.Attrs.PublicIP, "PublicIP", reach); err != nil {
				errs = append(errs, leaseError(l.Key(), err))
			}
		}
		if p.IPv6 && l.IPv6Subnet.IsValid() {
			if err := route(&s, p.ExtDev, p.IPv6Network, l.IPv6Subnet, l.Attrs.PublicIPv6, "PublicIPv6", reach); err != nil {
				errs = append(errs, leaseError(l.Key(), err))
			}
		}
	}
	s.Sort()
	return s, errs
}

func isOwn(p Params, l subnet.Lease) bool {
	switch {
	case p.Own.Subnet.IsValid() && l.Subnet == p.Own.Subnet:
		return true
	case p.Own.IPv6Subnet.IsValid() && l.IPv6Subnet == p.Own.IPv6Subnet:
		return true
	case p.OwnPublic.IsValid() && l.Attrs.PublicIP == p.OwnPublic:
		return true
	case p.OwnPublic6.IsValid() && l.Attrs.PublicIPv6 == p.OwnPublic6:
		return true
	}
	return false
}

func route(s *dataplane.State, ext string, network, sn netip.Prefix, public netip.Addr, publicName string, reach Reach) error {
	sn = sn.Masked()
	if !network.IsValid() || sn.Bits() < network.Bits() || !network.Contains(sn.Addr()) {
		return fmt.Errorf("subnet %s is outside the network %s", sn, network)
	}
	if !public.IsValid() || public.Is4() != sn.Addr().Is4() {
		return fmt.Errorf("no %s", publicName)
	}
	if reach != nil {
		if err := reach(public); err != nil {
			return &notOnLink{fmt.Errorf("public IP %s is not on-link on %s (%v): host-gw needs L2 adjacency", public, ext, err)}
		}
	}
	s.Routes = append(s.Routes, dataplane.Route{Dst: sn, Gw: public, Dev: ext})
	return nil
}

// notOnLink is a reachability problem: the underlay may still be coming up
// (an interface back up before its connected route), so it is re-checked.
type notOnLink struct{ error }

func (e *notOnLink) Unwrap() error { return e.error }

func leaseError(key string, err error) error {
	var n *notOnLink
	return &dataplane.LeaseError{Key: key, Err: err, Retry: errors.As(err, &n)}
}
