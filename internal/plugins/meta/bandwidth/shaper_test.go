package bandwidth

import (
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The clock of current kernels: 1000/64 ticks per microsecond (a tick is
// 64 ns).
const tick = 15.625

func TestBucket(t *testing.T) {
	tests := []struct {
		name string
		in   Shape
		want bucket
	}{
		// 50 Mbit/s = 6.25 MB/s; 1 Mbit = 125 kB = 20 ms at the rate =
		// 312500 ticks; queue 25 ms of the rate (156250 B) + the burst.
		{"50 Mbit/s, 1 Mbit", Shape{50_000_000, 1_000_000}, bucket{Rate: 6_250_000, Burst: 125_000, Buffer: 312_500, Limit: 281_250}},
		// Bits that do not fill a byte are dropped.
		{"odd bits", Shape{8_000_007, 80_007}, bucket{Rate: 1_000_000, Burst: 10_000, Buffer: 156_250, Limit: 35_000}},
		// containerd's "no burst limit" (2^32-1 bits) at 1 Mbit/s is 4295 s
		// of traffic; the kernel holds at most 2^32-1 ticks = 274.88 s =
		// 34359738 bytes at 125 kB/s.
		{"burst capped at the kernel's maximum", Shape{1_000_000, 4294967295}, bucket{Rate: 125_000, Burst: 34_359_738, Buffer: math.MaxUint32, Limit: 34_362_863}},
		// The queue limit is a 32-bit byte count. The 4 GiB burst is
		// 17179.87 us at 250 GB/s, 268435.45 ticks: the whole 268435 ticks
		// hold 4294960000 bytes.
		{"limit capped", Shape{2_000_000_000_000, 34359738360}, bucket{Rate: 250_000_000_000, Burst: 4_294_960_000, Buffer: 268_435, Limit: math.MaxUint32}},
		// A burst shorter than one tick at the rate holds nothing: ADD
		// refuses it because it is less than a frame.
		{"less than a tick", Shape{math.MaxUint64, 8000}, bucket{Rate: math.MaxUint64 / 8, Burst: 0, Buffer: 0, Limit: math.MaxUint32}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, newBucket(tt.in, tick)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestIFBName(t *testing.T) {
	a := IFBName("net", "c1", "eth0")
	if len(a) != 15 || !strings.HasPrefix(a, ifbPrefix) {
		t.Errorf("name %q: want 15 bytes starting with %q", a, ifbPrefix)
	}
	if a != IFBName("net", "c1", "eth0") {
		t.Error("not deterministic")
	}
	seen := map[string]string{a: "net/c1/eth0"}
	for _, k := range [][3]string{{"net", "c1", "eth1"}, {"net", "c2", "eth0"}, {"net2", "c1", "eth0"}, {"ne", "tc1", "eth0"}} {
		n := IFBName(k[0], k[1], k[2])
		if prev, dup := seen[n]; dup {
			t.Errorf("%v and %s share %q", k, prev, n)
		}
		seen[n] = strings.Join(k[:], "/")
	}
}

func TestAlias(t *testing.T) {
	al := ifbAlias("kube", "abc", "eth0")
	if al != "linen-bandwidth net=kube id=abc if=eth0" {
		t.Errorf("alias %q", al)
	}
	if n, ok := aliasNetwork(al); !ok || n != "kube" {
		t.Errorf("aliasNetwork(%q) = %q, %v", al, n, ok)
	}
	long := ifbAlias("kube", strings.Repeat("x", 300), "eth0")
	if len(long) != 255 {
		t.Errorf("long alias has %d bytes", len(long))
	}
	if n, ok := aliasNetwork(long); !ok || n != "kube" {
		t.Errorf("truncated alias: network %q, %v", n, ok)
	}
	for _, other := range []string{"", "bwp-something", "linen-bandwidth net=x"} {
		if _, ok := aliasNetwork(other); ok {
			t.Errorf("aliasNetwork(%q) claims it", other)
		}
	}
}

func TestU32Match(t *testing.T) {
	type key = netlink.TcU32Key
	tests := []struct {
		prefix   string
		src      bool
		proto    uint16
		wantKeys []key
	}{
		{"10.0.0.0/8", true, unix.ETH_P_IP, []key{{Mask: 0xff000000, Val: 0x0a000000, Off: 12}}},
		{"192.0.2.0/24", false, unix.ETH_P_IP, []key{{Mask: 0xffffff00, Val: 0xc0000200, Off: 16}}},
		{"192.0.2.7/32", false, unix.ETH_P_IP, []key{{Mask: 0xffffffff, Val: 0xc0000207, Off: 16}}},
		{"0.0.0.0/0", false, unix.ETH_P_IP, []key{{Off: 16}}},
		{"::/0", true, unix.ETH_P_IPV6, []key{{Off: 8}}},
		{"fd00::/8", false, unix.ETH_P_IPV6, []key{{Mask: 0xff000000, Val: 0xfd000000, Off: 24}}},
		{"2001:db8::/36", true, unix.ETH_P_IPV6, []key{{Mask: 0xffffffff, Val: 0x20010db8, Off: 8}, {Mask: 0xf0000000, Val: 0, Off: 12}}},
		{"2001:db8:1:2::/64", true, unix.ETH_P_IPV6, []key{{Mask: 0xffffffff, Val: 0x20010db8, Off: 8}, {Mask: 0xffffffff, Val: 0x00010002, Off: 12}}},
		{"2001:db8::1/128", false, unix.ETH_P_IPV6, []key{
			{Mask: 0xffffffff, Val: 0x20010db8, Off: 24}, {Mask: 0xffffffff, Off: 28}, {Mask: 0xffffffff, Off: 32}, {Mask: 0xffffffff, Val: 1, Off: 36}}},
	}
	for _, tt := range tests {
		proto, sel := u32Match(netip.MustParsePrefix(tt.prefix), tt.src)
		if proto != tt.proto {
			t.Errorf("%s: protocol %#x, want %#x", tt.prefix, proto, tt.proto)
		}
		if sel.Flags != netlink.TC_U32_TERMINAL || int(sel.Nkeys) != len(sel.Keys) {
			t.Errorf("%s: flags %d, nkeys %d for %d keys", tt.prefix, sel.Flags, sel.Nkeys, len(sel.Keys))
		}
		if diff := cmp.Diff(tt.wantKeys, sel.Keys); diff != "" {
			t.Errorf("%s src=%v (-want +got):\n%s", tt.prefix, tt.src, diff)
		}
	}
}

func TestSubnetClass(t *testing.T) {
	if l, d := subnetClass(ShapeExcept); l != rootHandle || d != 1 {
		t.Errorf("unshapedSubnets: listed to %x, default %d; want the qdisc itself (direct) and class 1", l, d)
	}
	if l, d := subnetClass(ShapeOnly); l != shapedClass || d != 0 {
		t.Errorf("shapedSubnets: listed to %x, default %d; want class 1:1 and none (direct)", l, d)
	}
	for rate, want := range map[uint64]uint32{1000: 1000, 125_000: 12_500, 1 << 40: 200_000} {
		if got := htbQuantum(rate); got != want {
			t.Errorf("quantum at %d B/s = %d, want %d", rate, got, want)
		}
	}
}
