package hostgw

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

func lease(n int) subnet.Lease {
	return subnet.Lease{
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(n), 0}), 24),
		Attrs:  subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + n)}), BackendType: BackendType},
	}
}

func dual(n int) subnet.Lease {
	l := lease(n)
	l.IPv6Subnet = netip.MustParsePrefix(fmt.Sprintf("2001:db8:5:%d::/64", n))
	l.Attrs.PublicIPv6 = netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", 10+n))
	return l
}

func with(l subnet.Lease, f func(*subnet.Lease)) subnet.Lease {
	f(&l)
	return l
}

func reach(ip netip.Addr) error {
	if netip.MustParsePrefix("192.0.2.0/24").Contains(ip) || netip.MustParsePrefix("2001:db8::/64").Contains(ip) {
		return nil
	}
	return errors.New("reached via gateway 192.0.2.254")
}

func TestDesiredGolden(t *testing.T) {
	base := Params{ExtDev: "eth0", IPv4: true, Network: netip.MustParsePrefix("10.5.0.0/16"), Own: lease(1),
		OwnPublic: netip.MustParseAddr("192.0.2.11")}
	dualParams := base
	dualParams.IPv6, dualParams.IPv6Network = true, netip.MustParsePrefix("2001:db8:5::/48")
	dualParams.Own, dualParams.OwnPublic6 = dual(1), netip.MustParseAddr("2001:db8::11")
	tests := []struct {
		name   string
		p      Params
		leases []subnet.Lease
	}{
		{name: "three-nodes", p: base, leases: []subnet.Lease{lease(3), lease(1), lease(2)}},
		{name: "refused-leases", p: base, leases: []subnet.Lease{
			lease(1), lease(2),
			with(lease(3), func(l *subnet.Lease) { l.Attrs.PublicIP = netip.MustParseAddr("198.51.100.13") }),
			with(lease(4), func(l *subnet.Lease) { l.Attrs.PublicIP = netip.Addr{} }),
			with(lease(5), func(l *subnet.Lease) { l.Subnet = netip.MustParsePrefix("10.99.5.0/24") }),
			with(lease(6), func(l *subnet.Lease) { l.Attrs.BackendType = "vxlan" }),
			with(lease(7), func(l *subnet.Lease) { l.Attrs.PublicIP = base.OwnPublic }),
		}},
		{name: "dual-stack", p: dualParams, leases: []subnet.Lease{dual(1), dual(2), lease(3),
			with(dual(4), func(l *subnet.Lease) { l.Attrs.PublicIPv6 = netip.MustParseAddr("2001:db8:99::4") })}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, errs := Desired(tt.p, tt.leases, reach)
			var b strings.Builder
			b.WriteString(s.String())
			if len(errs) > 0 {
				b.WriteString("-- lease errors --\n")
				for _, e := range errs {
					b.WriteString(e.Error() + "\n")
				}
			}
			golden(t, tt.name, b.String())
		})
	}
}

func TestNewValidates(t *testing.T) {
	ext := dataplane.ExternalInterface{Name: "eth0", Index: 2, MTU: 1500, IfaceAddr: netip.MustParseAddr("192.0.2.11")}
	ext.ExtAddr = ext.IfaceAddr
	nat := ext
	nat.ExtAddr = netip.MustParseAddr("198.51.100.11")
	network := netip.MustParsePrefix("10.5.0.0/16")
	tests := []struct {
		name    string
		cfg     subnet.Config
		ext     dataplane.ExternalInterface
		wantErr string
	}{
		{"public ip behind nat", subnet.Config{Network: network, EnableIPv4: true}, nat,
			"public IP 198.51.100.11 differs from the interface address 192.0.2.11: host-gw needs L2 adjacency"},
		{"no v6 address", subnet.Config{Network: network, EnableIPv4: true, EnableIPv6: true}, ext, "has no IPv6 address"},
		{"bad json", subnet.Config{Network: network, EnableIPv4: true, Backend: json.RawMessage(`[`)}, ext, "Backend:"},
		{"no family", subnet.Config{}, ext, "neither IPv4 nor IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(&tt.cfg, tt.ext, dataplane.Options{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New: %v, want %q", err, tt.wantErr)
			}
		})
	}
}
