package sbr

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/plugins/plugintest"
)

func raw(extra string) []byte {
	return []byte(`{"cniVersion":"1.1.0","name":"net1","type":"sbr"` + extra + `}`)
}

var addrEq = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want *Config
	}{
		{"defaults", raw(""), &Config{Network: "net1", CNIVersion: "1.1.0"}},
		{"table", raw(`,"table":1000`), &Config{Network: "net1", CNIVersion: "1.1.0", Table: 1000}},
		{"largest table", raw(`,"table":4294967295`), &Config{Network: "net1", CNIVersion: "1.1.0", Table: 4294967295}},
		{"gateways", raw(`,"gateways":["192.0.2.1","2001:db8::1"]`), &Config{Network: "net1", CNIVersion: "1.1.0",
			Gateway4: netip.MustParseAddr("192.0.2.1"), Gateway6: netip.MustParseAddr("2001:db8::1")}},
		{"mapped gateway", raw(`,"gateways":["::ffff:192.0.2.1"]`), &Config{Network: "net1", CNIVersion: "1.1.0",
			Gateway4: netip.MustParseAddr("192.0.2.1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, addrEq); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		code uint
		want []string
	}{
		{"vrf", raw(`,"vrfname":"red","table":0`), 2, []string{`vrfname: "red"`}},
		{"tables", raw(`,"table":0`), 7, []string{"table: 0 is not a routing table number"}},
		{"reserved", raw(`,"table":255`), 7, []string{"table: 255 is the kernel's local table"}},
		{"too large", raw(`,"table":4294967296`), 7, []string{"table: 4294967296 is not a routing table number"}},
		{"fraction", raw(`,"table":1.5`), 7, []string{"table: 1.5 is not a routing table number"}},
		{"gateways", raw(`,"gateways":["fe80::1%eth0","ff02::1","2001:db8::1","2001:db8::2"]`), 7, []string{
			`gateways[0]: "fe80::1%eth0" is not an IP address`,
			"gateways[1]: ff02::1 cannot be a gateway",
			"gateways[3]: a second IPv6 gateway (2001:db8::2 after 2001:db8::1)"}},
		{"wrong type", raw(`,"table":"100"`), 6, []string{"table"}},
		{"bad prevResult", raw(`,"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.1"}]}`), 6, []string{"prevResult"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.in)
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("error %v is not a CNI error", err)
			}
			if te.Code != tt.code {
				t.Errorf("code %d, want %d (%v)", te.Code, tt.code, te)
			}
			for _, w := range tt.want {
				if !strings.Contains(te.Msg, w) {
					t.Errorf("message lacks %q:\n%s", w, te.Msg)
				}
			}
		})
	}
}

func TestReadmeExamples(t *testing.T) {
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		if _, err := parseConfig(ex); err != nil {
			t.Errorf("example %d: %v\n%s", i, err, ex)
		}
	}
}

// FuzzParseConfig: any stdin yields a configuration or a CNI error with a
// code; an accepted configuration is consistent.
func FuzzParseConfig(f *testing.F) {
	f.Add(raw(`,"table":100,"gateways":["10.0.0.1","fd00::1"]`))
	f.Add(raw(`,"vrfname":"x"`))
	f.Add(raw(`,"table":-0,"gateways":[""]`))
	f.Add(raw(`,"prevResult":{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24","gateway":"10.0.0.1"}}`))
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := parseConfig(stdin)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code == 0 {
				t.Fatalf("not a CNI error with a code: %v", err)
			}
			return
		}
		if c.Table < 0 || reservedTables[int64(c.Table)] != "" && c.Table != 0 {
			t.Fatalf("accepted table %d", c.Table)
		}
		if (c.Gateway4.IsValid() && !c.Gateway4.Is4()) || (c.Gateway6.IsValid() && (!c.Gateway6.Is6() || c.Gateway6.Is4In6())) {
			t.Fatalf("gateways %v %v", c.Gateway4, c.Gateway6)
		}
		if c.PrevResult != nil {
			for _, a := range ifaceIPs(c.PrevResult, "eth0") {
				if !a.IsValid() || a.IsLinkLocalUnicast() {
					t.Fatalf("ifaceIPs returned %v", a)
				}
			}
		}
	})
}
