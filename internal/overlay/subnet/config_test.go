package subnet

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var cmpNet = cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func TestParseConfigDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Config
	}{
		{
			name: "flannel manifest",
			in:   `{"Network":"10.244.0.0/16","EnableNFTables":false,"Backend":{"Type":"vxlan"}}`,
			want: Config{Network: pfx("10.244.0.0/16"), SubnetLen: 24, SubnetMin: ip("10.244.1.0"), SubnetMax: ip("10.244.255.0"),
				EnableIPv4: true, BackendType: "vxlan", Backend: []byte(`{"Type":"vxlan"}`)},
		},
		{
			name: "no backend: vxlan",
			in:   `{"Network":"10.5.0.0/16"}`,
			want: Config{Network: pfx("10.5.0.0/16"), SubnetLen: 24, SubnetMin: ip("10.5.1.0"), SubnetMax: ip("10.5.255.0"),
				EnableIPv4: true, BackendType: "vxlan", Backend: []byte(`{}`)},
		},
		{
			name: "/22 still gets /24",
			in:   `{"Network":"10.5.0.0/22","Backend":{"Type":"host-gw"}}`,
			want: Config{Network: pfx("10.5.0.0/22"), SubnetLen: 24, SubnetMin: ip("10.5.1.0"), SubnetMax: ip("10.5.3.0"),
				EnableIPv4: true, BackendType: "host-gw", Backend: []byte(`{"Type":"host-gw"}`)},
		},
		{
			name: "/23 gets prefix+2",
			in:   `{"Network":"10.5.0.0/23"}`,
			want: Config{Network: pfx("10.5.0.0/23"), SubnetLen: 25, SubnetMin: ip("10.5.0.128"), SubnetMax: ip("10.5.1.128"),
				EnableIPv4: true, BackendType: "vxlan", Backend: []byte(`{}`)},
		},
		{
			name: "/28 is the smallest",
			in:   `{"Network":"10.5.0.0/28"}`,
			want: Config{Network: pfx("10.5.0.0/28"), SubnetLen: 30, SubnetMin: ip("10.5.0.4"), SubnetMax: ip("10.5.0.12"),
				EnableIPv4: true, BackendType: "vxlan", Backend: []byte(`{}`)},
		},
		{
			name: "explicit values, keys in any case, type lower-cased, host bits masked",
			in:   `{"network":"10.5.7.9/16","SUBNETLEN":26,"SubnetMin":"10.5.2.0","subnetmax":"10.5.10.192","backend":{"Type":"UDP","Port":8285}}`,
			want: Config{Network: pfx("10.5.0.0/16"), SubnetLen: 26, SubnetMin: ip("10.5.2.0"), SubnetMax: ip("10.5.10.192"),
				EnableIPv4: true, BackendType: "udp", Backend: []byte(`{"Type":"UDP","Port":8285}`)},
		},
		{
			name: "SubnetLen 0 and SubnetMin 0.0.0.0 mean unset",
			in:   `{"Network":"10.5.0.0/16","SubnetLen":0,"SubnetMin":"0.0.0.0"}`,
			want: Config{Network: pfx("10.5.0.0/16"), SubnetLen: 24, SubnetMin: ip("10.5.1.0"), SubnetMax: ip("10.5.255.0"),
				EnableIPv4: true, BackendType: "vxlan", Backend: []byte(`{}`)},
		},
		{
			name: "dual stack",
			in:   `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`,
			want: Config{Network: pfx("10.5.0.0/16"), SubnetLen: 24, SubnetMin: ip("10.5.1.0"), SubnetMax: ip("10.5.255.0"),
				IPv6Network: pfx("fc00::/48"), IPv6SubnetLen: 64, IPv6SubnetMin: ip("fc00:0:0:1::"), IPv6SubnetMax: ip("fc00:0:0:ffff::"),
				EnableIPv4: true, EnableIPv6: true, BackendType: "vxlan", Backend: []byte(`{"Type":"vxlan"}`)},
		},
		{
			name: "IPv6 only, /63 gets prefix+2, Network ignored",
			in:   `{"EnableIPv4":false,"Network":"garbage","EnableIPv6":true,"IPv6Network":"fc00::/63"}`,
			want: Config{IPv6Network: pfx("fc00::/63"), IPv6SubnetLen: 65, IPv6SubnetMin: ip("fc00::8000:0:0:0"), IPv6SubnetMax: ip("fc00:0:0:1:8000::"),
				EnableIPv6: true, BackendType: "vxlan", Backend: []byte(`{}`)},
		},
		{
			name: "IPv6 /124 is the smallest",
			in:   `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/124","EnableNFTables":true}`,
			want: Config{IPv6Network: pfx("fc00::/124"), IPv6SubnetLen: 126, IPv6SubnetMin: ip("fc00::4"), IPv6SubnetMax: ip("fc00::c"),
				EnableIPv6: true, EnableNFTables: true, BackendType: "vxlan", Backend: []byte(`{}`)},
		},
		{
			name: "whole IPv4 space",
			in:   `{"Network":"0.0.0.0/0","Backend":{}}`,
			want: Config{Network: pfx("0.0.0.0/0"), SubnetLen: 24, SubnetMin: ip("0.0.1.0"), SubnetMax: ip("255.255.255.0"),
				EnableIPv4: true, BackendType: "vxlan", Backend: []byte(`{}`)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if diff := cmp.Diff(&tt.want, got, cmpNet); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // problems, in order
	}{
		{"empty object", `{}`, []string{"Network: missing"}},
		{"not an object", `[1]`, nil},
		{"syntax", `{"Network":`, nil},
		{"bad network", `{"Network":"10.5.0.0"}`, []string{`Network: "10.5.0.0" is not an IPv4 CIDR`}},
		{"v6 as v4 network", `{"Network":"fc00::/48"}`, []string{`Network: "fc00::/48" is not an IPv4 CIDR`}},
		{"network not a string", `{"Network":5}`, []string{"Network: want a CIDR string, got 5"}},
		{"too small", `{"Network":"10.5.0.0/29"}`, []string{"Network: 10.5.0.0/29 is too small: the longest usable prefix is /28"}},
		{"subnetlen too long", `{"Network":"10.5.0.0/16","SubnetLen":31}`, []string{"SubnetLen: 31 is longer than /30"}},
		{"subnetlen too short", `{"Network":"10.5.0.0/16","SubnetLen":17}`, []string{"SubnetLen: /17 leaves Network 10.5.0.0/16 room for fewer than four subnets (want at least /18)"}},
		{"subnetlen negative", `{"Network":"10.5.0.0/16","SubnetLen":-1}`, []string{"SubnetLen: want a prefix length, got -1"}},
		{"subnetlen string", `{"Network":"10.5.0.0/16","SubnetLen":"24"}`, []string{`SubnetLen: want a prefix length, got "24"`}},
		{"min outside", `{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}`, []string{"SubnetMin: 10.6.0.0 is outside Network 10.5.0.0/16"}},
		{"max unaligned", `{"Network":"10.5.0.0/16","SubnetMax":"10.5.3.7"}`, []string{"SubnetMax: 10.5.3.7 is not on a /24 boundary"}},
		{"min above max", `{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.3.0"}`, []string{"SubnetMin: 10.5.9.0 is above SubnetMax 10.5.3.0"}},
		{"min not an address", `{"Network":"10.5.0.0/16","SubnetMin":"x"}`, []string{`SubnetMin: "x" is not an IPv4 address`}},
		{"no family", `{"EnableIPv4":false}`, []string{"EnableIPv4: false and EnableIPv6 false: no address family left"}},
		{"bool as string", `{"Network":"10.5.0.0/16","EnableIPv6":"yes"}`, []string{`EnableIPv6: want true or false, got "yes"`}},
		{"v6 missing", `{"Network":"10.5.0.0/16","EnableIPv6":true}`, []string{"IPv6Network: missing (required when EnableIPv6 is true)"}},
		{"v6 too small", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/125"}`, []string{"IPv6Network: fc00::/125 is too small: the longest usable prefix is /124"}},
		{"v6 len too long", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":127}`, []string{"IPv6SubnetLen: 127 is longer than /126"}},
		{"v6 min unaligned", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00::1"}`, []string{"IPv6SubnetMin: fc00::1 is not on a /64 boundary"}},
		{"v6 max outside", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMax":"fd00::"}`, []string{"IPv6SubnetMax: fd00:: is outside IPv6Network fc00::/48"}},
		{"backend not an object", `{"Network":"10.5.0.0/16","Backend":"vxlan"}`, []string{`Backend: want an object, got "vxlan"`}},
		{"backend type not a string", `{"Network":"10.5.0.0/16","Backend":{"Type":1}}`, []string{"Backend.Type: want a string, got 1"}},
		{
			"every problem at once",
			`{"Network":"10.5.0.0/16","SubnetLen":31,"SubnetMin":"x","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMax":"fc00::1","Backend":[]}`,
			[]string{`SubnetMin: "x" is not an IPv4 address`, "SubnetLen: 31 is longer than /30", "IPv6SubnetMax: fc00::1 is not on a /64 boundary", "Backend: want an object, got []"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseConfig = %+v, want an error", got)
			}
			var ce *ConfigError
			if tt.want == nil {
				if errors.As(err, &ce) {
					t.Errorf("err = %v, want a decoding error", err)
				}
				return
			}
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *ConfigError", err)
			}
			if len(ce.Problems) != len(tt.want) {
				t.Fatalf("problems %q, want %q", ce.Problems, tt.want)
			}
			for i := range tt.want {
				if !strings.HasPrefix(ce.Problems[i], tt.want[i]) {
					t.Errorf("problem %d = %q, want %q...", i, ce.Problems[i], tt.want[i])
				}
			}
		})
	}
}
