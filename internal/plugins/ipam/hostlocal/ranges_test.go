package hostlocal

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func collect(s *RangeSet, last netip.Addr) []netip.Addr {
	var out []netip.Addr
	for a := range s.Candidates(last) {
		out = append(out, a)
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, mustAddr(s))
	}
	return out
}

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestCandidates(t *testing.T) {
	two := &RangeSet{Ranges: []Range{
		rng("r0", "10.0.0.0/29", "10.0.0.1", "10.0.0.6", "10.0.0.1"),
		rng("r1", "10.0.1.0/30", "10.0.1.0", "10.0.1.3", "10.0.1.2"),
	}}
	tests := []struct {
		name string
		set  *RangeSet
		last string
		want []netip.Addr
	}{
		{"no last starts at rangeStart, skips gateway", two, "", addrs("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.1")},
		{"after last, wraps across ranges", two, "10.0.0.4", addrs("10.0.0.5", "10.0.0.6", "10.0.1.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")},
		{"last at a range end", two, "10.0.0.6", addrs("10.0.1.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6")},
		{"last in second range", two, "10.0.1.1", addrs("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.1")},
		{"last is a gateway", two, "10.0.0.1", addrs("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.1")},
		{"last outside every range", two, "192.0.2.1", addrs("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.1")},
		{"v6 keeps the last address", &RangeSet{Ranges: []Range{rng("r", "2001:db8::/126", "2001:db8::1", "2001:db8::3", "2001:db8::1")}}, "2001:db8::2",
			addrs("2001:db8::3", "2001:db8::2")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var last netip.Addr
			if tt.last != "" {
				last = mustAddr(tt.last)
			}
			if diff := cmp.Diff(tt.want, collect(tt.set, last), addrCmp); diff != "" {
				t.Errorf("candidates (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCapacity(t *testing.T) {
	tests := []struct {
		r    Range
		want uint64
	}{
		{rng("", "10.0.0.0/30", "10.0.0.1", "10.0.0.2", "10.0.0.1"), 1},
		{rng("", "10.0.0.0/24", "10.0.0.0", "10.0.0.255", "10.0.0.1"), 253},
		{rng("", "10.0.0.0/24", "10.0.0.0", "10.0.0.255", "10.0.0.0"), 254},
		{rng("", "10.0.0.0/24", "10.0.0.10", "10.0.0.20", "10.0.0.1"), 11},
		{rng("", "2001:db8::/64", "2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::1"), 1<<64 - 2},
		{rng("", "2001:db8::/48", "2001:db8::1", "2001:db8:0:ffff:ffff:ffff:ffff:ffff", "2001:db8::1"), ^uint64(0)},
	}
	for _, tt := range tests {
		if got := tt.r.capacity(); got != tt.want {
			t.Errorf("capacity(%s %s-%s gw %s) = %d, want %d", tt.r.Subnet, tt.r.Start, tt.r.End, tt.r.Gateway, got, tt.want)
		}
	}
}

// ---- differential testing against an obviously correct oracle ----

// oracleOrder lists the set's allocatable addresses in round-robin order by
// brute force: every address of every range in order, rotated to start
// after last, minus gateways and IPv4 network/broadcast addresses.
func oracleOrder(s *RangeSet, last netip.Addr) []netip.Addr {
	var all []netip.Addr
	var which []int
	for i, r := range s.Ranges {
		for a := r.Start; ; a = a.Next() {
			all = append(all, a)
			which = append(which, i)
			if a == r.End {
				break
			}
		}
	}
	start := 0
	for k, a := range all {
		if a == last {
			start = k + 1
			break
		}
	}
	var out []netip.Addr
	for k := range all {
		idx := (start + k) % len(all)
		a, r := all[idx], s.Ranges[which[idx]]
		if a == r.Gateway {
			continue
		}
		if a.Is4() {
			b := r.Subnet.Addr().As4()
			net := binary.BigEndian.Uint32(b[:])
			bcast := net | (1<<(32-r.Subnet.Bits()) - 1)
			v := a.As4()
			if x := binary.BigEndian.Uint32(v[:]); x == net || x == bcast {
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

func testSeed(t *testing.T) uint64 {
	if s := os.Getenv("HOSTLOCAL_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("HOSTLOCAL_SEED: %v", err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// randomSet builds a valid range set of 1-3 small, disjoint ranges.
func randomSet(r *rand.Rand, base int) RangeSet {
	v6 := r.IntN(3) == 0
	n := 1 + r.IntN(3)
	var set RangeSet
	for i := 0; i < n; i++ {
		var p netip.Prefix
		if v6 {
			p = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(base), byte(i)}), 122+r.IntN(5))
		} else {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(base), byte(i), 0}), 25+r.IntN(6))
		}
		size := 1 << (p.Addr().BitLen() - p.Bits())
		nth := func(k int) netip.Addr {
			a := p.Addr()
			for range k {
				a = a.Next()
			}
			return a
		}
		lo, hi := r.IntN(size), r.IntN(size)
		if lo > hi {
			lo, hi = hi, lo
		}
		rg := Range{Subnet: p, Start: nth(lo), End: nth(hi), Gateway: nth(r.IntN(size)), Field: fmt.Sprintf("r%d", i)}
		if r.IntN(3) == 0 {
			rg.Gateway = nth(1)
		}
		set.Ranges = append(set.Ranges, rg)
	}
	set.Field = fmt.Sprintf("set%d", base)
	return set
}

func pick(r *rand.Rand, s *RangeSet) netip.Addr {
	switch r.IntN(4) {
	case 0:
		return netip.Addr{}
	case 1:
		return mustAddr("192.0.2.1")
	}
	rg := s.Ranges[r.IntN(len(s.Ranges))]
	a := rg.Start
	for k := r.IntN(8); k > 0 && a != rg.End; k-- {
		a = a.Next()
	}
	if r.IntN(5) == 0 {
		a = rg.Gateway
	}
	return a
}

func TestCandidatesDifferential(t *testing.T) {
	seed := testSeed(t)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := 0; i < 2000; i++ {
		set := randomSet(r, 1)
		last := pick(r, &set)
		got, want := collect(&set, last), oracleOrder(&set, last)
		if diff := cmp.Diff(want, got, addrCmp, cmp.AllowUnexported()); diff != "" {
			t.Fatalf("seed %d (rerun with HOSTLOCAL_SEED=%d), case %d, ranges %+v, last %v: candidates (-oracle +got):\n%s",
				seed, seed, i, set.Ranges, last, diff)
		}
		// hasFree agrees with the oracle for random reservations.
		reserved := map[netip.Addr]lease{}
		for _, a := range want {
			if r.IntN(4) != 0 {
				reserved[a] = lease{}
			}
		}
		free := len(reserved) < len(want)
		if got := set.hasFree(reserved); got != free {
			t.Fatalf("seed %d, case %d: hasFree = %v, oracle %v (%d of %d reserved)", seed, i, got, free, len(reserved), len(want))
		}
	}
}

// TestAllocatorDifferential runs random ADD/DEL sequences through the real
// allocator (files, index, last_reserved_ip) and through a model that
// follows the oracle, and compares every choice.
func TestAllocatorDifferential(t *testing.T) {
	seed := testSeed(t)
	for round := uint64(0); round < 8; round++ {
		r := rand.New(rand.NewPCG(seed, round))
		conf := &Config{Network: "diff", CNIVersion: "1.1.0", DataDir: t.TempDir()}
		for i := 0; i < 1+r.IntN(2); i++ {
			conf.Sets = append(conf.Sets, randomSet(r, i+1))
		}
		type model struct {
			reserved map[netip.Addr]string
			last     []netip.Addr
		}
		m := model{reserved: map[netip.Addr]string{}, last: make([]netip.Addr, len(conf.Sets))}
		live := map[string][]netip.Addr{}
		fail := func(op int, format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d (rerun with HOSTLOCAL_SEED=%d), round %d, op %d: %s", seed, seed, round, op, fmt.Sprintf(format, args...))
		}
		for op := 0; op < 150; op++ {
			// Now and then damage the index: the store must notice and
			// rebuild it from the reservation files.
			idx := filepath.Join(conf.Dir(), indexName)
			switch r.IntN(12) {
			case 0:
				os.Remove(idx)
			case 1:
				os.WriteFile(idx, []byte("linen host-local index 1\nmtime 1 2\nend 0 0\n"), 0o600)
			}
			if len(live) > 0 && r.IntN(3) == 0 {
				ids := make([]string, 0, len(live))
				for id := range live {
					ids = append(ids, id)
				}
				slices.Sort(ids)
				id := ids[r.IntN(len(ids))]
				var prev []netip.Addr
				if r.IntN(2) == 0 {
					prev = live[id] // as a cached prevResult would name them
				}
				freed, err := Release(context.Background(), nil, conf.DataDir, conf.Network, id, "eth0", prev, len(conf.Sets))
				if err != nil {
					fail(op, "release %s: %v", id, err)
				}
				slices.SortFunc(freed, netip.Addr.Compare)
				want := slices.Clone(live[id])
				slices.SortFunc(want, netip.Addr.Compare)
				if diff := cmp.Diff(want, freed, addrCmp); diff != "" {
					fail(op, "release %s freed (-model +got):\n%s", id, diff)
				}
				for _, a := range live[id] {
					delete(m.reserved, a)
				}
				delete(live, id)
				continue
			}
			id := fmt.Sprintf("c%d", op)
			// Model: per set, the first oracle candidate not reserved.
			var want []netip.Addr
			for i := range conf.Sets {
				var choice netip.Addr
				for _, a := range oracleOrder(&conf.Sets[i], m.last[i]) {
					if _, taken := m.reserved[a]; !taken {
						choice = a
						break
					}
				}
				if !choice.IsValid() {
					want = nil
					break
				}
				want = append(want, choice)
			}
			got, err := Allocate(context.Background(), nil, conf, id, "eth0")
			if want == nil {
				if err == nil {
					fail(op, "allocate succeeded with %v, model says a set is exhausted", got)
				}
				continue
			}
			if err != nil {
				fail(op, "allocate: %v (model wants %v)", err, want)
			}
			if diff := cmp.Diff(want, got, addrCmp); diff != "" {
				fail(op, "allocate choices (-model +got):\n%s", diff)
			}
			for i, a := range got {
				m.reserved[a] = id
				m.last[i] = a
			}
			live[id] = got
		}
	}
}
