package hostlocal

import (
	"iter"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
)

// Contains reports whether a is one of the range's addresses (Start..End).
func (r *Range) Contains(a netip.Addr) bool {
	return a.Is4() == r.Start.Is4() && r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0
}

// excluded reports whether a is never handed out from r: the gateway, and
// for IPv4 the subnet's network and broadcast addresses.
func (r *Range) excluded(a netip.Addr) bool {
	if a == r.Gateway {
		return true
	}
	if a.Is4() {
		return a == r.Subnet.Addr() || a == lastAddr(r.Subnet)
	}
	return false
}

// rangeOf is the index of the range of s containing a, or -1.
func (s *RangeSet) rangeOf(a netip.Addr) int {
	for i := range s.Ranges {
		if s.Ranges[i].Contains(a) {
			return i
		}
	}
	return -1
}

// Contains reports whether a lies in one of the set's ranges.
func (s *RangeSet) Contains(a netip.Addr) bool { return s.rangeOf(a) >= 0 }

// Allocatable reports whether a can be handed out from s: it is in a range
// and not that range's gateway, network or broadcast address.
func (s *RangeSet) Allocatable(a netip.Addr) bool {
	i := s.rangeOf(a)
	return i >= 0 && !s.Ranges[i].excluded(a)
}

// Subnets lists the set's ranges for messages: "10.0.0.0/30, 10.1.0.0/30".
func (s *RangeSet) Subnets() string {
	parts := make([]string, len(s.Ranges))
	for i := range s.Ranges {
		parts[i] = s.Ranges[i].String()
	}
	return strings.Join(parts, ", ")
}

// Candidates yields every allocatable address of the set exactly once, in
// round-robin order: when last lies in one of the ranges, from the address
// after it to the end of that range, then the following ranges in order,
// wrapping around, and finally the start of last's range up to last itself;
// otherwise from the start of the first range. Gateways and IPv4 network and
// broadcast addresses are skipped.
func (s *RangeSet) Candidates(last netip.Addr) iter.Seq[netip.Addr] {
	return func(yield func(netip.Addr) bool) {
		n := len(s.Ranges)
		if n == 0 {
			return
		}
		// seg yields r's addresses from..to inclusive; false means stop.
		seg := func(r *Range, from, to netip.Addr) bool {
			for a := from; ; a = a.Next() {
				if !r.excluded(a) && !yield(a) {
					return false
				}
				if a == to {
					return true
				}
			}
		}
		ri := s.rangeOf(last)
		if ri < 0 {
			for i := range s.Ranges {
				if !seg(&s.Ranges[i], s.Ranges[i].Start, s.Ranges[i].End) {
					return
				}
			}
			return
		}
		r := &s.Ranges[ri]
		if last != r.End && !seg(r, last.Next(), r.End) {
			return
		}
		for k := 1; k < n; k++ {
			o := &s.Ranges[(ri+k)%n]
			if !seg(o, o.Start, o.End) {
				return
			}
		}
		seg(r, r.Start, last)
	}
}

// capacity is the number of allocatable addresses of r, saturating at
// 2^64-1.
func (r *Range) capacity() uint64 {
	n := span(r.Start, r.End)
	if n == ^uint64(0) {
		return n
	}
	n++ // inclusive
	ex := []netip.Addr{r.Gateway}
	if r.Start.Is4() {
		ex = append(ex, r.Subnet.Addr(), lastAddr(r.Subnet))
	}
	for i, x := range ex {
		if r.Contains(x) && !slices.Contains(ex[:i], x) {
			n--
		}
	}
	return n
}

// span is b-a as a saturating uint64 (a <= b, same family).
func span(a, b netip.Addr) uint64 {
	x, y := a.As16(), b.As16()
	hi := func(v [16]byte) uint64 { return be64(v[:8]) }
	lo := func(v [16]byte) uint64 { return be64(v[8:]) }
	l, borrow := bits.Sub64(lo(y), lo(x), 0)
	h, _ := bits.Sub64(hi(y), hi(x), borrow)
	if h != 0 {
		return ^uint64(0)
	}
	return l
}

func be64(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// hasFree reports whether at least one allocatable address of s is not in
// reserved.
func (s *RangeSet) hasFree(reserved map[netip.Addr]lease) bool {
	var total uint64
	for i := range s.Ranges {
		c := s.Ranges[i].capacity()
		if total+c < total {
			return true
		}
		total += c
	}
	var used uint64
	for a := range reserved {
		if s.Allocatable(a) {
			used++
		}
	}
	return used < total
}
