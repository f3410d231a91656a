package subnet

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sort"
)

// ErrNoFreeSubnet is returned when every subnet between SubnetMin and
// SubnetMax is taken.
var ErrNoFreeSubnet = errors.New("out of subnets")

// MaxCandidates is how many free subnets the allocator collects (from
// SubnetMin upwards) before picking one at random, as flannel does.
const MaxCandidates = 100

// Previous is the node's previous lease as it knows it locally (subnet.env),
// preferred when it is still free. Zero prefixes when unknown.
type Previous struct {
	Subnet, IPv6Subnet netip.Prefix
}

// Plan is the allocator's decision for one node.
type Plan struct {
	// Reuse is the node's own lease (same public address) when it still
	// fits the configuration: renew it in place. Reservations come first.
	Reuse *Lease
	// Stale are the node's leases that no longer fit the configuration
	// (never reservations): delete them.
	Stale []Lease
	// Subnet and IPv6Subnet are the subnets of a new lease when Reuse is
	// nil (zero for a family the configuration does not enable).
	Subnet, IPv6Subnet netip.Prefix
}

// Allocate decides which subnets a node with attrs gets, given the
// configuration and the leases currently in the store. It is pure: the
// only randomness comes from rnd.
//
// Order: the node's own lease (same PublicIP, or PublicIPv6 when IPv4 is
// off) if it still fits the configuration; else, per family, the previous
// subnet if it fits and overlaps no lease; else, per family, a uniformly
// random pick among the first MaxCandidates free subnets from SubnetMin to
// SubnetMax. ErrNoFreeSubnet when a family has none left.
func Allocate(cfg *Config, leases []Lease, attrs LeaseAttrs, prev Previous, rnd *rand.Rand) (Plan, error) {
	var plan Plan
	var own []int
	for i := range leases {
		if sameNode(cfg, leases[i].Attrs, attrs) {
			own = append(own, i)
		}
	}
	// Reservations first, then key order: deterministic.
	sort.SliceStable(own, func(a, b int) bool {
		la, lb := leases[own[a]], leases[own[b]]
		if la.Reservation() != lb.Reservation() {
			return la.Reservation()
		}
		return la.Key() < lb.Key()
	})
	stale := map[int]bool{}
	for _, i := range own {
		l := leases[i]
		if Fits(cfg, l) {
			if plan.Reuse == nil {
				c := l
				plan.Reuse = &c
			}
		} else if !l.Reservation() {
			plan.Stale = append(plan.Stale, l)
			stale[i] = true
		}
	}
	if plan.Reuse != nil {
		return plan, nil
	}
	// The node's stale leases are about to be deleted: their subnets are
	// free for it (a previous subnet survives a configuration change).
	var taken4, taken6 []netip.Prefix
	for i, l := range leases {
		if stale[i] {
			continue
		}
		if l.Subnet.IsValid() {
			taken4 = append(taken4, l.Subnet.Masked())
		}
		if l.IPv6Subnet.IsValid() {
			taken6 = append(taken6, l.IPv6Subnet.Masked())
		}
	}
	if cfg.EnableIPv4 {
		p, err := pick(cfg.Network, cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax, prev.Subnet, taken4, rnd)
		if err != nil {
			return Plan{}, err
		}
		plan.Subnet = p
	}
	if cfg.EnableIPv6 {
		p, err := pick(cfg.IPv6Network, cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax, prev.IPv6Subnet, taken6, rnd)
		if err != nil {
			return Plan{}, err
		}
		plan.IPv6Subnet = p
	}
	return plan, nil
}

// sameNode tells whether a lease with attrs a belongs to the node with attrs
// b: the public address is the node's identity (IPv4, or IPv6 in an
// IPv6-only network).
func sameNode(cfg *Config, a, b LeaseAttrs) bool {
	if cfg.EnableIPv4 {
		return b.PublicIP.IsValid() && a.PublicIP == b.PublicIP
	}
	return b.PublicIPv6.IsValid() && a.PublicIPv6 == b.PublicIPv6
}

// Fits tells whether l's subnets match the configuration: each enabled
// family present with the configured length between its SubnetMin and
// SubnetMax, each disabled family absent.
func Fits(cfg *Config, l Lease) bool {
	return fitsFamily(cfg.EnableIPv4, cfg.Network, cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax, l.Subnet) &&
		fitsFamily(cfg.EnableIPv6, cfg.IPv6Network, cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax, l.IPv6Subnet)
}

func fitsFamily(on bool, network netip.Prefix, sublen int, smin, smax netip.Addr, p netip.Prefix) bool {
	if !on {
		return !p.IsValid()
	}
	return p.IsValid() && p.Bits() == sublen && p.Masked() == p && network.Contains(p.Addr()) &&
		p.Addr().Compare(smin) >= 0 && p.Addr().Compare(smax) <= 0
}

func pick(network netip.Prefix, sublen int, smin, smax netip.Addr, prev netip.Prefix, taken []netip.Prefix, rnd *rand.Rand) (netip.Prefix, error) {
	free := func(p netip.Prefix) (bool, netip.Prefix) {
		for _, t := range taken {
			if t.Overlaps(p) {
				return false, t
			}
		}
		return true, netip.Prefix{}
	}
	if prev.IsValid() {
		prev = prev.Masked()
		if fitsFamily(true, network, sublen, smin, smax, prev) {
			if ok, _ := free(prev); ok {
				return prev, nil
			}
		}
	}
	abits := network.Addr().BitLen()
	size := u128One().shl(uint(abits - sublen))
	cur, end := u128From(smin), u128From(smax)
	var cands []netip.Prefix
	for len(cands) < MaxCandidates && cur.cmp(end) <= 0 {
		p := netip.PrefixFrom(cur.addr(abits), sublen)
		ok, by := free(p)
		next := cur.add(size)
		if ok {
			cands = append(cands, p)
		} else if by.Bits() < sublen {
			// A lease larger than a subnet (a reservation of a whole
			// range): jump past it.
			next = lastAddr(by).add(u128One())
		}
		if next.cmp(cur) <= 0 { // wrapped around the address space
			break
		}
		cur = next
	}
	if len(cands) == 0 {
		return netip.Prefix{}, ErrNoFreeSubnet
	}
	return cands[rnd.IntN(len(cands))], nil
}
