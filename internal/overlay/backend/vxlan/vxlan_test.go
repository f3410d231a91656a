package vxlan

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

func render(s dataplane.State, errs []error) string {
	var b strings.Builder
	b.WriteString(s.String())
	if len(errs) > 0 {
		b.WriteString("-- lease errors --\n")
		for _, e := range errs {
			b.WriteString(e.Error() + "\n")
		}
	}
	return b.String()
}

// lease builds a vxlan lease of node n (subnet 10.5.n.0/24, public IP
// 192.0.2.(10+n), VtepMAC 0a:00:00:00:00:n).
func lease(n int) subnet.Lease {
	mac := fmt.Sprintf("0a:00:00:00:00:%02x", n)
	return subnet.Lease{
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(n), 0}), 24),
		Attrs: subnet.LeaseAttrs{
			PublicIP:    netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + n)}),
			BackendType: "vxlan",
			BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, mac)),
		},
	}
}

func dual(n int) subnet.Lease {
	l := lease(n)
	l.IPv6Subnet = netip.MustParsePrefix(fmt.Sprintf("2001:db8:5:%d::/64", n))
	l.Attrs.PublicIPv6 = netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", 10+n))
	l.Attrs.BackendV6Data = json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"0a:00:00:00:06:%02x"}`, n))
	return l
}

func with(l subnet.Lease, f func(*subnet.Lease)) subnet.Lease {
	f(&l)
	return l
}

// reach: 192.0.2.0/24 is the underlay's L2 network; everything else sits
// behind a router.
func reach(ip netip.Addr) error {
	if netip.MustParsePrefix("192.0.2.0/24").Contains(ip) || netip.MustParsePrefix("2001:db8::/64").Contains(ip) {
		return nil
	}
	return errors.New("reached via gateway 192.0.2.254")
}

func TestDesiredGolden(t *testing.T) {
	base := Params{VNI: 1, Dev: "flannel.1", ExtDev: "eth0", Network: netip.MustParsePrefix("10.5.0.0/16"),
		Own: lease(1), OwnMAC: MustMAC("0a:00:00:00:00:01"), OwnPublic: netip.MustParseAddr("192.0.2.11")}
	directParams := base
	directParams.DirectRouting = true
	dualParams := base
	dualParams.Dev6, dualParams.IPv6Network = "flannel-v6.1", netip.MustParsePrefix("2001:db8:5::/48")
	dualParams.Own, dualParams.OwnPublic6 = dual(1), netip.MustParseAddr("2001:db8::11")

	tests := []struct {
		name   string
		p      Params
		leases []subnet.Lease
	}{
		{name: "alone", p: base, leases: []subnet.Lease{lease(1)}},
		{name: "three-nodes", p: base, leases: []subnet.Lease{lease(3), lease(1), lease(2)}},
		{name: "refused-leases", p: base, leases: []subnet.Lease{
			lease(1), lease(2),
			with(lease(3), func(l *subnet.Lease) { l.Attrs.BackendData = json.RawMessage(`{"VNI":1}`) }),
			with(lease(4), func(l *subnet.Lease) {
				l.Attrs.BackendData = json.RawMessage(`{"VNI":7,"VtepMAC":"0a:00:00:00:00:04"}`)
			}),
			with(lease(5), func(l *subnet.Lease) { l.Subnet = netip.MustParsePrefix("10.99.5.0/24") }),
			with(lease(6), func(l *subnet.Lease) { l.Attrs.BackendData = lease(2).Attrs.BackendData }),
			with(lease(7), func(l *subnet.Lease) { l.Attrs.PublicIP = netip.Addr{} }),
			with(lease(8), func(l *subnet.Lease) { l.Attrs.BackendType = "host-gw" }),
			with(lease(9), func(l *subnet.Lease) { l.Attrs.PublicIP = base.OwnPublic }), // an old lease of this node
			with(lease(10), func(l *subnet.Lease) {
				l.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`)
			}),
			with(lease(11), func(l *subnet.Lease) { l.Attrs.BackendData = base.OwnMACData() }),
			with(lease(12), func(l *subnet.Lease) { l.Attrs.BackendData = nil }),
			// Older flannel versions publish no VNI: accepted.
			with(lease(13), func(l *subnet.Lease) { l.Attrs.BackendData = json.RawMessage(`{"VtepMAC":"0a:00:00:00:00:0d"}`) }),
		}},
		{name: "direct-routing", p: directParams, leases: []subnet.Lease{
			lease(1), lease(2),
			with(lease(3), func(l *subnet.Lease) { l.Attrs.PublicIP = netip.MustParseAddr("198.51.100.13") }),
		}},
		{name: "dual-stack", p: dualParams, leases: []subnet.Lease{dual(1), dual(2), lease(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, errs := Desired(tt.p, tt.leases, reach)
			golden(t, tt.name, render(s, errs))
		})
	}
}

// OwnMACData is the BackendData this node would publish (tests).
func (p Params) OwnMACData() json.RawMessage { return MarshalLeaseData(p.VNI, p.OwnMAC) }

func TestLeaseDataJSON(t *testing.T) {
	got := string(MarshalLeaseData(1, MustMAC("0A:58:0a:f4:01:01")))
	if want := `{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}`; got != want {
		t.Errorf("BackendData = %s, want %s", got, want)
	}
	d, mac, err := ParseLeaseData(json.RawMessage(`{"VNI":4096,"VtepMAC":"0a:58:0a:f4:01:01"}`))
	if err != nil || d.VNI == nil || *d.VNI != 4096 || mac.String() != "0a:58:0a:f4:01:01" {
		t.Errorf("ParseLeaseData = %+v %s %v", d, mac, err)
	}
	// flannel's VNI field is 16 bits wide.
	if got := string(MarshalLeaseData(70000, mac)); got != `{"VNI":4464,"VtepMAC":"0a:58:0a:f4:01:01"}` {
		t.Errorf("BackendData for VNI 70000 = %s", got)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		in      string
		want    Config
		wantErr []string
	}{
		{in: ``, want: Config{VNI: 1}},
		{in: `{"Type":"vxlan"}`, want: Config{VNI: 1}},
		{in: `{"Type":"vxlan","VNI":42,"Port":4789,"MTU":9000,"GBP":true,"Learning":true,"DirectRouting":true}`,
			want: Config{VNI: 42, Port: 4789, MTU: 9000, GBP: true, Learning: true, DirectRouting: true}},
		{in: `{"type":"vxlan","vni":0,"directrouting":true,"MacPrefix":"0E-2A"}`, want: Config{VNI: 0, DirectRouting: true}},
		{in: `{"VNI":16777216,"Port":70000,"MTU":100,"GBP":"yes","DirectRouting":1}`, wantErr: []string{
			"Backend.VNI: 16777216 is out of range 0-16777215",
			"Backend.Port: 70000 is out of range 0-65535",
			"Backend.MTU: 100 is out of range 118-65535",
			`Backend.GBP: must be true or false, not "yes"`,
			"Backend.DirectRouting: must be true or false, not 1",
		}},
		{in: `{"VNI":"1","vni":2}`, wantErr: []string{`Backend.VNI: must be an integer, not "1"`, "Backend.vni: given twice (also as VNI)"}},
		{in: `[1]`, wantErr: []string{"Backend: json: cannot unmarshal array"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseConfig(json.RawMessage(tt.in))
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	ext := dataplane.ExternalInterface{Name: "eth0", Index: 2, MTU: 1500, IfaceAddr: netip.MustParseAddr("192.0.2.11")}
	ext.ExtAddr = ext.IfaceAddr
	net := netip.MustParsePrefix("10.5.0.0/16")
	tests := []struct {
		name    string
		cfg     subnet.Config
		ext     dataplane.ExternalInterface
		wantErr string
	}{
		{"bad backend", subnet.Config{Network: net, EnableIPv4: true, Backend: json.RawMessage(`{"VNI":-1}`)}, ext, "Backend.VNI"},
		{"no v6 address", subnet.Config{Network: net, EnableIPv4: true, EnableIPv6: true}, ext, "has no IPv6 address"},
		{"tiny mtu", subnet.Config{Network: net, EnableIPv4: true}, func() dataplane.ExternalInterface { e := ext; e.MTU = 100; return e }(), "at least 68"},
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
