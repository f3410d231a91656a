package subnet

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"time"
)

// Config is the network configuration (net-conf.json), with flannel's keys
// and defaults. ParseConfig builds it; every field is filled in (defaults
// applied) and valid.
type Config struct {
	Network                      netip.Prefix // zero when EnableIPv4 is false
	SubnetLen                    int
	SubnetMin, SubnetMax         netip.Addr   // first and last subnet address that may be leased
	IPv6Network                  netip.Prefix // zero when EnableIPv6 is false
	IPv6SubnetLen                int
	IPv6SubnetMin, IPv6SubnetMax netip.Addr
	EnableIPv4, EnableIPv6       bool
	EnableNFTables               bool
	BackendType                  string          // lower-cased Backend.Type ("vxlan", "host-gw", "udp"); "vxlan" when unset
	Backend                      json.RawMessage // the whole Backend object ({} when absent), parsed by the backend
}

// LeaseAttrs are the attributes a node publishes with its lease. Their JSON
// is flannel's, byte for byte (see MarshalJSON).
type LeaseAttrs struct {
	PublicIP, PublicIPv6       netip.Addr // zero when the family is off
	BackendType                string
	BackendData, BackendV6Data json.RawMessage
}

// Lease is one node's subnet lease: the key <prefix>/subnets/<Key()> with the
// attrs as value.
type Lease struct {
	Subnet, IPv6Subnet netip.Prefix // zero prefix when the family is off
	Attrs              LeaseAttrs
	// Expiration is when the store drops the lease unless it is renewed;
	// zero for a reservation (a key without TTL), which never expires.
	Expiration time.Time
	// Revision is the store revision of the key's last write (etcd's
	// ModRevision). Conditional updates and deletes compare against it.
	// 0 when unknown.
	Revision int64
}

// Reservation tells whether l is a reservation (a key without TTL).
func (l Lease) Reservation() bool { return l.Expiration.IsZero() }

// Key is the lease's key below <prefix>/subnets/: "10.5.52.0-24",
// "10.5.52.0-24&fc00::-64" in dual stack, "fc00::-64" for IPv6 only.
func (l Lease) Key() string { return MakeKey(l.Subnet, l.IPv6Subnet) }

// MakeKey formats a subnet key from the IPv4 and IPv6 subnets (either may be
// the zero prefix, not both).
func MakeKey(v4, v6 netip.Prefix) string {
	var k string
	if v4.IsValid() {
		k = v4.Addr().String() + "-" + strconv.Itoa(v4.Bits())
	}
	if v6.IsValid() {
		s := v6.Addr().String() + "-" + strconv.Itoa(v6.Bits())
		if k == "" {
			return s
		}
		k += "&" + s
	}
	return k
}
