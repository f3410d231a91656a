package udp

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"linen.dev/linen/internal/overlay/subnet"
)

func lease(sn, public, typ string) subnet.Lease {
	l := subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{BackendType: typ}}
	if public != "" {
		l.Attrs.PublicIP = netip.MustParseAddr(public)
	}
	return l
}

func render(routes []Route, errs []error) string {
	var b strings.Builder
	b.WriteString(Render(routes))
	for _, e := range errs {
		fmt.Fprintf(&b, "error %v\n", e)
	}
	return b.String()
}

func TestDesired(t *testing.T) {
	p := Params{Network: network, Port: DefaultPort, Own: ownNet, OwnPublic: netip.MustParseAddr("192.0.2.11")}
	tests := []struct {
		name   string
		p      Params
		leases []subnet.Lease
	}{
		{"three-nodes", p, []subnet.Lease{
			lease("10.5.3.0/24", "192.0.2.13", "udp"),
			lease("10.5.1.0/24", "192.0.2.11", "udp"),
			lease("10.5.2.0/24", "192.0.2.12", "udp"),
		}},
		{"refused-leases", p, []subnet.Lease{
			lease("10.5.2.0/24", "192.0.2.12", "udp"),
			lease("10.5.3.0/24", "192.0.2.13", "vxlan"),
			lease("10.5.4.0/24", "", "udp"),
			lease("10.6.0.0/24", "192.0.2.14", "udp"),
			lease("10.5.2.0/25", "192.0.2.15", "udp"),
			lease("10.5.9.0/24", "192.0.2.11", "udp"),
			lease("10.5.5.0/24", "2001:db8::5", "udp"),
		}},
		{"port-and-no-own", Params{Network: network, Port: 9999}, []subnet.Lease{
			lease("10.5.1.0/24", "192.0.2.11", "udp"),
			lease("10.5.2.0/24", "192.0.2.12", "udp"),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			routes, errs := Desired(tc.p, tc.leases)
			golden(t, "desired-"+tc.name, render(routes, errs))
		})
	}
}

func TestTableLookup(t *testing.T) {
	tb := newTable([]Route{
		{netip.MustParsePrefix("10.5.2.0/24"), netip.MustParseAddrPort("192.0.2.12:8285")},
		{netip.MustParsePrefix("10.5.3.0/24"), netip.MustParseAddrPort("192.0.2.13:8285")},
		{netip.MustParsePrefix("10.7.0.0/16"), netip.MustParseAddrPort("192.0.2.17:8285")},
	})
	for _, tc := range []struct {
		dst  string
		want string
	}{
		{"10.5.2.200", "192.0.2.12:8285"},
		{"10.5.3.0", "192.0.2.13:8285"},
		{"10.7.200.1", "192.0.2.17:8285"},
		{"10.5.4.1", ""},
		{"192.0.2.12", ""},
	} {
		peer, _, ok := tb.lookup(netip.MustParseAddr(tc.dst))
		got := ""
		if ok {
			got = peer.String()
		}
		if got != tc.want {
			t.Errorf("lookup(%s) = %q, want %q", tc.dst, got, tc.want)
		}
	}
}

func TestDecTTL(t *testing.T) {
	for ttl := 0; ttl < 256; ttl++ {
		for _, id := range []uint16{0, 1, 0xffff, 0x1234} {
			p := ipv4(podA, podB, 17, uint8(ttl), id, 0x4000, pattern(12, 0))
			ok := decTTL(p)
			if ttl <= 1 {
				if ok || p[8] != uint8(ttl) {
					t.Fatalf("TTL %d: decremented", ttl)
				}
				continue
			}
			if !ok || p[8] != uint8(ttl-1) || naiveSum(p[:20]) != 0 {
				t.Fatalf("TTL %d id %#x: got TTL %d, header checksum %s", ttl, id, p[8], map[bool]string{true: "valid", false: "invalid"}[naiveSum(p[:20]) == 0])
			}
		}
	}
}

func TestICMPSource(t *testing.T) {
	for _, tc := range []struct{ network, own, want string }{
		{"10.5.0.0/16", "10.5.1.0/24", "10.5.0.0"},
		{"10.5.0.0/16", "10.5.0.0/24", "10.5.255.255"},
		{"10.244.0.0/14", "10.244.0.0/24", "10.247.255.255"},
	} {
		if got := icmpSource(netip.MustParsePrefix(tc.network), netip.MustParsePrefix(tc.own)); got.String() != tc.want {
			t.Errorf("icmpSource(%s, %s) = %s, want %s", tc.network, tc.own, got, tc.want)
		}
	}
}
