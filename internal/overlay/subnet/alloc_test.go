package subnet

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"
)

// oracleFree lists, by brute force, the free subnets between min and max:
// every subnet, every address in it checked against every lease. Only for
// small networks.
func oracleFree(network netip.Prefix, sublen int, smin, smax netip.Addr, taken []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for a := network.Addr(); network.Contains(a); {
		p := netip.PrefixFrom(a, sublen)
		free := true
		b := a
		for i := 0; i < 1<<(a.BitLen()-sublen); i++ {
			for _, t := range taken {
				if t.Contains(b) {
					free = false
				}
			}
			b = b.Next()
		}
		if free && a.Compare(smin) >= 0 && a.Compare(smax) <= 0 {
			out = append(out, p)
		}
		if !b.IsValid() {
			break
		}
		a = b
	}
	return out
}

func seed(t *testing.T) uint64 {
	if s := os.Getenv("LINEN_ALLOC_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// TestAllocateOracle: random configurations and lease sets; the pick must
// be the one an identically seeded uniform choice makes among the oracle's
// first MaxCandidates free subnets, or the previous subnet when the oracle
// says it is free.
func TestAllocateOracle(t *testing.T) {
	s := seed(t)
	t.Logf("seed %d (rerun with LINEN_ALLOC_SEED=%d)", s, s)
	r := rand.New(rand.NewPCG(s, 0))
	for iter := 0; iter < 300; iter++ {
		v6 := r.IntN(3) == 0
		var conf string
		if v6 {
			bits := 112 + r.IntN(13) // /112 .. /124
			conf = fmt.Sprintf(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::%x:0/%d"`, r.IntN(16)<<8, bits)
			if r.IntN(2) == 0 {
				conf += fmt.Sprintf(`,"IPv6SubnetLen":%d`, min(126, bits+2+r.IntN(4)))
			}
		} else {
			bits := 18 + r.IntN(11) // /18 .. /28
			conf = fmt.Sprintf(`{"Network":"10.%d.0.0/%d"`, r.IntN(256)&^3, bits)
			if r.IntN(2) == 0 {
				conf += fmt.Sprintf(`,"SubnetLen":%d`, min(30, bits+2+r.IntN(6)))
			}
		}
		cfg, err := ParseConfig([]byte(conf + "}"))
		if err != nil {
			t.Fatalf("iter %d: %s: %v", iter, conf, err)
		}
		network, sublen, smin, smax := cfg.Network, cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax
		if v6 {
			network, sublen, smin, smax = cfg.IPv6Network, cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax
		}
		all := oracleFree(network, sublen, network.Addr(), lastAddr(network).addr(network.Addr().BitLen()), nil)
		// Random leases: subnets of the configured size, some larger
		// reservations, some outside the range.
		var leases []Lease
		var taken []netip.Prefix
		for n := r.IntN(len(all) + 1); n > 0; n-- {
			p := all[r.IntN(len(all))]
			if r.IntN(8) == 0 && p.Bits() > network.Bits()+1 {
				p = netip.PrefixFrom(p.Addr(), p.Bits()-1-r.IntN(p.Bits()-network.Bits()-1)).Masked()
			}
			l := Lease{Attrs: LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(n)})}, Expiration: time.Unix(1, 0)}
			if v6 {
				l.IPv6Subnet, l.Attrs.PublicIP = p, netip.Addr{}
				l.Attrs.PublicIPv6 = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(n)})
			} else {
				l.Subnet = p
			}
			leases = append(leases, l)
			taken = append(taken, p)
		}
		free := oracleFree(network, sublen, smin, smax, taken)
		var prev Previous
		prevFree := false
		if r.IntN(2) == 0 && len(all) > 0 {
			p := all[r.IntN(len(all))]
			if v6 {
				prev.IPv6Subnet = p
			} else {
				prev.Subnet = p
			}
			for _, f := range free {
				prevFree = prevFree || f == p
			}
		}
		me := LeaseAttrs{PublicIP: netip.MustParseAddr("198.51.100.1"), PublicIPv6: netip.MustParseAddr("2001:db8:ffff::1")}
		rs := r.Uint64()
		plan, err := Allocate(cfg, leases, me, prev, rand.New(rand.NewPCG(rs, 1)))
		what := fmt.Sprintf("iter %d: %s}, %d leases, prev %v", iter, conf, len(leases), prev)
		if len(free) == 0 {
			if err != ErrNoFreeSubnet {
				t.Fatalf("%s: Allocate = %+v, %v; want ErrNoFreeSubnet", what, plan, err)
			}
			continue
		}
		if err != nil || plan.Reuse != nil || len(plan.Stale) != 0 {
			t.Fatalf("%s: Allocate = %+v, %v", what, plan, err)
		}
		got := plan.Subnet
		if v6 {
			got = plan.IPv6Subnet
			if plan.Subnet.IsValid() {
				t.Fatalf("%s: IPv4 subnet %v in an IPv6-only network", what, plan.Subnet)
			}
		}
		var want netip.Prefix
		switch {
		case prevFree && v6:
			want = prev.IPv6Subnet
		case prevFree:
			want = prev.Subnet
		default:
			c := free[:min(len(free), MaxCandidates)]
			want = c[rand.New(rand.NewPCG(rs, 1)).IntN(len(c))]
		}
		if got != want {
			t.Fatalf("%s: picked %v, oracle says %v (free: %v)", what, got, want, free)
		}
	}
}

func TestAllocateOwnLease(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`))
	if err != nil {
		t.Fatal(err)
	}
	me := LeaseAttrs{PublicIP: ip("192.0.2.1"), PublicIPv6: ip("2001:db8::1")}
	other := LeaseAttrs{PublicIP: ip("192.0.2.2")}
	exp := time.Unix(100, 0)
	fit := Lease{Subnet: pfx("10.5.7.0/24"), IPv6Subnet: pfx("fc00:0:0:7::/64"), Attrs: me, Expiration: exp}
	v4only := Lease{Subnet: pfx("10.5.8.0/24"), Attrs: me, Expiration: exp}                     // config is dual stack now
	outside := Lease{Subnet: pfx("10.5.0.0/24"), IPv6Subnet: pfx("fc00:0:0:9::/64"), Attrs: me} // below SubnetMin: reservation, kept
	res := Lease{Subnet: pfx("10.5.9.0/24"), IPv6Subnet: pfx("fc00:0:0:9::/64"), Attrs: me}
	othersLease := Lease{Subnet: pfx("10.5.10.0/24"), IPv6Subnet: pfx("fc00:0:0:10::/64"), Attrs: other, Expiration: exp}
	rnd := rand.New(rand.NewPCG(1, 2))

	plan, err := Allocate(cfg, []Lease{othersLease, fit, v4only}, me, Previous{}, rnd)
	if err != nil || plan.Reuse == nil || plan.Reuse.Key() != fit.Key() || len(plan.Stale) != 1 || plan.Stale[0].Key() != v4only.Key() {
		t.Errorf("with a fitting own lease: %+v, %v", plan, err)
	}
	plan, err = Allocate(cfg, []Lease{fit, res, outside}, me, Previous{}, rnd)
	if err != nil || plan.Reuse == nil || plan.Reuse.Key() != res.Key() || len(plan.Stale) != 0 {
		t.Errorf("with a reservation: want the reservation, got %+v, %v", plan, err)
	}
	// The stale lease's subnet is free for the node: the previous subnet
	// survives the switch to dual stack.
	plan, err = Allocate(cfg, []Lease{v4only, othersLease}, me, Previous{Subnet: pfx("10.5.8.0/24")}, rnd)
	if err != nil || plan.Reuse != nil || plan.Subnet != pfx("10.5.8.0/24") || !plan.IPv6Subnet.IsValid() || len(plan.Stale) != 1 {
		t.Errorf("after a config change: %+v, %v", plan, err)
	}
	// Previous taken by another node: random, not the previous.
	plan, err = Allocate(cfg, []Lease{othersLease}, me, Previous{Subnet: othersLease.Subnet, IPv6Subnet: othersLease.IPv6Subnet}, rnd)
	if err != nil || plan.Subnet == othersLease.Subnet || plan.IPv6Subnet == othersLease.IPv6Subnet || !Fits(cfg, Lease{Subnet: plan.Subnet, IPv6Subnet: plan.IPv6Subnet}) {
		t.Errorf("with the previous subnet taken: %+v, %v", plan, err)
	}
}

func TestAllocateSkipsLargeReservation(t *testing.T) {
	// A /33 reservation covering half of a /32 IPv6 network of /64s
	// (2^31 subnets) is jumped over, not walked.
	cfg, err := ParseConfig([]byte(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8::/32"}`))
	if err != nil {
		t.Fatal(err)
	}
	big := Lease{IPv6Subnet: pfx("2001:db8::/33"), Attrs: LeaseAttrs{PublicIPv6: ip("2001:db8:ffff::9")}}
	plan, err := Allocate(cfg, []Lease{big}, LeaseAttrs{PublicIPv6: ip("2001:db8:ffff::1")}, Previous{}, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := pfx("2001:db8:8000::/64").Addr(), pfx("2001:db8:8000:63::/64").Addr()
	if a := plan.IPv6Subnet.Addr(); a.Compare(lo) < 0 || a.Compare(hi) > 0 || plan.IPv6Subnet.Bits() != 64 {
		t.Errorf("picked %v, want one of the first 100 /64s after the reservation", plan.IPv6Subnet)
	}
}

func TestAllocateExhaustion(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"Network":"10.5.0.0/28"}`)) // 3 usable /30s
	if err != nil {
		t.Fatal(err)
	}
	var leases []Lease
	for i, s := range []string{"10.5.0.4/30", "10.5.0.8/30", "10.5.0.12/30"} {
		leases = append(leases, Lease{Subnet: pfx(s), Attrs: LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})}, Expiration: time.Unix(1, 0)})
	}
	if _, err := Allocate(cfg, leases, LeaseAttrs{PublicIP: ip("192.0.2.99")}, Previous{}, rand.New(rand.NewPCG(1, 1))); err != ErrNoFreeSubnet {
		t.Errorf("err = %v, want ErrNoFreeSubnet", err)
	}
}
