package vxlan

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

// BackendType is the lease attribute BackendType of this backend.
const BackendType = "vxlan"

// LeaseData is the lease's BackendData (and BackendV6Data) JSON, flannel's:
// {"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}. flannel's VNI field is 16 bits
// wide (a VNI above 65535 is published truncated) and older flannel
// versions publish no VNI at all.
type LeaseData struct {
	VNI     *int `json:",omitempty"`
	VtepMAC string
}

// Params are the inputs of Desired besides the leases.
type Params struct {
	VNI           int
	Dev, Dev6     string // "flannel.1", "flannel-v6.1"; "" when the family is off
	ExtDev        string // the external interface (DirectRouting routes)
	DirectRouting bool
	Network       netip.Prefix // the cluster network; leases outside it are refused
	IPv6Network   netip.Prefix
	Own           subnet.Lease // this node's lease (zero before Configure)
	OwnMAC        net.HardwareAddr
	OwnMAC6       net.HardwareAddr
	OwnPublic     netip.Addr // this node's public addresses (its leases are skipped)
	OwnPublic6    netip.Addr
}

// Reach reports nil when a public IP is on the external interface's L2
// network (reachable without a gateway), else why not.
type Reach func(netip.Addr) error

// Desired computes the kernel state for the lease set: for every remote
// vxlan lease of each enabled family a permanent neighbour entry (remote
// subnet address -> remote VtepMAC), an FDB entry (VtepMAC -> remote public
// IP) and an onlink route to the remote subnet via its subnet address on the
// VXLAN device; with DirectRouting, a peer whose public IP is on-link gets a
// plain route via that IP on the external interface instead. The own lease,
// leases of other backend types and leases of this node's public IP are
// skipped; a lease that cannot be programmed (bad BackendData, another VNI,
// outside the network, a VtepMAC already taken) yields an error naming it
// and no entries. reach is only called with DirectRouting.
func Desired(p Params, leases []subnet.Lease, reach Reach) (dataplane.State, []error) {
	var s dataplane.State
	var errs []error
	sorted := dataplane.SortedLeases(leases)
	macOwner := map[string]string{} // MAC -> lease key, per family
	macOwner6 := map[string]string{}
	if p.OwnMAC != nil {
		macOwner[p.OwnMAC.String()] = "this node"
	}
	if p.OwnMAC6 != nil {
		macOwner6[p.OwnMAC6.String()] = "this node"
	}
	for _, l := range sorted {
		if l.Attrs.BackendType != BackendType || isOwn(p, l) {
			continue
		}
		key := l.Key()
		fail := func(err error) { errs = append(errs, &dataplane.LeaseError{Key: key, Err: err}) }
		if p.Dev != "" && l.Subnet.IsValid() {
			if err := family(&s, p.Dev, p.ExtDev, p.VNI, p.Network, l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendData,
				"BackendData", "PublicIP", macOwner, key, p.DirectRouting, reach); err != nil {
				fail(err)
			}
		}
		if p.Dev6 != "" && l.IPv6Subnet.IsValid() {
			if err := family(&s, p.Dev6, p.ExtDev, p.VNI, p.IPv6Network, l.IPv6Subnet, l.Attrs.PublicIPv6, l.Attrs.BackendV6Data,
				"BackendV6Data", "PublicIPv6", macOwner6, key, p.DirectRouting, reach); err != nil {
				fail(err)
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

// family adds one lease's entries of one address family.
func family(s *dataplane.State, dev, extDev string, vni int, network, sn netip.Prefix, public netip.Addr, data json.RawMessage,
	dataName, publicName string, macOwner map[string]string, key string, direct bool, reach Reach) error {
	sn = sn.Masked()
	if !network.IsValid() || sn.Bits() < network.Bits() || !network.Contains(sn.Addr()) {
		return fmt.Errorf("subnet %s is outside the network %s", sn, network)
	}
	if !public.IsValid() || public.Is4() != sn.Addr().Is4() {
		return fmt.Errorf("no %s", publicName)
	}
	d, mac, err := ParseLeaseData(data)
	if err != nil {
		return fmt.Errorf("%s: %w", dataName, err)
	}
	if d.VNI != nil && *d.VNI != vni && *d.VNI != vni&0xffff {
		return fmt.Errorf("%s: VNI %d differs from this network's %d", dataName, *d.VNI, vni)
	}
	if direct && reach != nil && reach(public) == nil {
		s.Routes = append(s.Routes, dataplane.Route{Dst: sn, Gw: public, Dev: extDev})
		return nil
	}
	if other, taken := macOwner[mac.String()]; taken {
		return fmt.Errorf("%s: VtepMAC %s is already used by %s", dataName, mac, other)
	}
	macOwner[mac.String()] = "lease " + key
	gw := sn.Addr()
	s.Neighs = append(s.Neighs, dataplane.Neigh{Dev: dev, IP: gw, MAC: mac})
	s.FDB = append(s.FDB, dataplane.FDB{Dev: dev, MAC: mac, Dst: public})
	s.Routes = append(s.Routes, dataplane.Route{Dst: sn, Gw: gw, Dev: dev, OnLink: true})
	return nil
}

// ParseLeaseData decodes a lease's BackendData; the VtepMAC must be a
// unicast Ethernet address.
func ParseLeaseData(data json.RawMessage) (LeaseData, net.HardwareAddr, error) {
	var d LeaseData
	if len(data) == 0 || string(data) == "null" {
		return d, nil, errors.New("missing")
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return d, nil, err
	}
	mac, err := net.ParseMAC(d.VtepMAC)
	if err != nil || len(mac) != 6 {
		return d, nil, fmt.Errorf("VtepMAC %q is not an Ethernet address", d.VtepMAC)
	}
	if mac[0]&1 != 0 || string(mac) == string(make([]byte, 6)) {
		return d, nil, fmt.Errorf("VtepMAC %s is not a unicast address", mac)
	}
	return d, mac, nil
}

// MarshalLeaseData encodes BackendData exactly as flannel does (the VNI
// in 16 bits, so that flannel nodes can decode it).
func MarshalLeaseData(vni int, mac net.HardwareAddr) json.RawMessage {
	v := vni & 0xffff
	b, _ := json.Marshal(LeaseData{VNI: &v, VtepMAC: mac.String()})
	return b
}

// MustMAC parses a MAC address or panics (tables, tests).
func MustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}
