package bandwidth

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func conf(extra string) []byte {
	return []byte(`{"cniVersion":"1.1.0","name":"net1","type":"bandwidth"` + extra + `}`)
}

var prefixEq = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestParseConfig(t *testing.T) {
	base := Config{Network: "net1", CNIVersion: "1.1.0"}
	with := func(f func(c *Config)) *Config { c := base; f(&c); return &c }
	tests := []struct {
		name string
		in   []byte
		want *Config
	}{
		{"nothing", conf(""), with(func(*Config) {})},
		{"zeros", conf(`,"ingressRate":0,"ingressBurst":0,"egressRate":null`), with(func(*Config) {})},
		{"static", conf(`,"ingressRate":50000000,"ingressBurst":1000000,"egressRate":1e7,"egressBurst":2E5`),
			with(func(c *Config) { c.Ingress = Shape{50000000, 1000000}; c.Egress = Shape{10000000, 200000} })},
		{"largest values", conf(`,"ingressRate":18446744073709551615,"ingressBurst":34359738360`),
			with(func(c *Config) { c.Ingress = Shape{18446744073709551615, 34359738360} })},
		{"containerd's burst", conf(`,"runtimeConfig":{"bandwidth":{"ingressRate":1000000,"ingressBurst":4294967295}}`),
			with(func(c *Config) { c.Ingress = Shape{1000000, 4294967295}; c.FromRuntime = true })},
		{"runtimeConfig replaces static limits", conf(`,"ingressRate":1000,"ingressBurst":1000,"egressRate":2000,"egressBurst":2000,
			"runtimeConfig":{"bandwidth":{"egressRate":300000,"egressBurst":30000}}`),
			with(func(c *Config) { c.Egress = Shape{300000, 30000}; c.FromRuntime = true })},
		{"null runtimeConfig.bandwidth keeps static", conf(`,"ingressRate":1000,"ingressBurst":1000,"runtimeConfig":{"bandwidth":null}`),
			with(func(c *Config) { c.Ingress = Shape{1000, 1000} })},
		{"unshaped subnets, deduplicated", conf(`,"ingressRate":8000,"ingressBurst":80000,"unshapedSubnets":["10.0.0.0/8","fd00::/8","10.0.0.0/8"]`),
			with(func(c *Config) {
				c.Ingress = Shape{8000, 80000}
				c.Subnets = Subnets{Mode: ShapeExcept, Prefixes: pfx("10.0.0.0/8", "fd00::/8")}
			})},
		{"static subnets kept under runtime limits", conf(`,"shapedSubnets":["192.0.2.0/24"],"runtimeConfig":{"bandwidth":{"ingressRate":8000,"ingressBurst":80000}}`),
			with(func(c *Config) {
				c.Ingress = Shape{8000, 80000}
				c.FromRuntime = true
				c.Subnets = Subnets{Mode: ShapeOnly, Prefixes: pfx("192.0.2.0/24")}
			})},
		{"runtime subnets replace static", conf(`,"shapedSubnets":["192.0.2.0/24"],"runtimeConfig":{"bandwidth":{"unshapedSubnets":["0.0.0.0/0"]}}`),
			with(func(c *Config) {
				c.FromRuntime = true
				c.Subnets = Subnets{Mode: ShapeExcept, Prefixes: pfx("0.0.0.0/0")}
			})},
		{"unknown keys ignored", conf(`,"capabilities":{"bandwidth":true},"foo":1`), with(func(*Config) {})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, prefixEq, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// Every problem is reported at once, each with its field path.
func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		code uint
		want []string
	}{
		{"rate without burst and burst without rate", conf(`,"ingressRate":1000,"egressBurst":1000`), 7,
			[]string{"ingressBurst: missing or 0: ingressRate is set", "egressRate: missing: egressBurst is set"}},
		{"zero burst", conf(`,"ingressRate":1000,"ingressBurst":0`), 7, []string{"ingressBurst: missing or 0"}},
		{"bad numbers", conf(`,"ingressRate":-1,"ingressBurst":1.5,"egressRate":"100","egressBurst":true`), 7,
			[]string{"ingressRate: -1 is not a whole number", "ingressBurst: 1.5 is not a whole number",
				`egressRate: "100" is a string`, "egressBurst: true is not a whole number"}},
		{"too large", conf(`,"ingressRate":18446744073709551616,"ingressBurst":34359738361,"egressRate":1e30,"egressBurst":1`), 7,
			[]string{"ingressRate: 18446744073709551616 is not a whole number", "egressRate: 1e30 is not a whole number"}},
		{"burst overflow", conf(`,"ingressRate":1000,"ingressBurst":34359738361`), 7,
			[]string{"ingressBurst: 34359738361 bits is more than the maximum of 34359738360 bits"}},
		{"rate below a byte", conf(`,"egressRate":7,"egressBurst":100000`), 7,
			[]string{"egressRate: 7 bits/s is below the minimum of 8"}},
		{"both halves wrong", conf(`,"ingressRate":5`), 7,
			[]string{"ingressRate: 5 bits/s is below the minimum", "ingressBurst: missing or 0"}},
		{"subnets", conf(`,"unshapedSubnets":["10.0.0.1/8","nope",""],"shapedSubnets":"10.0.0.0/8"`), 7,
			[]string{`unshapedSubnets[0]: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`,
				`unshapedSubnets[1]: "nope" is not a CIDR subnet`, `unshapedSubnets[2]: "" is not a CIDR subnet`,
				"shapedSubnets: must be a list of CIDR strings"}},
		{"both lists", conf(`,"unshapedSubnets":["10.0.0.0/8"],"shapedSubnets":["fd00::/8"]`), 7,
			[]string{"shapedSubnets: cannot be combined with unshapedSubnets"}},
		{"empty list", conf(`,"shapedSubnets":[]`), 7, []string{"shapedSubnets: is empty"}},
		{"runtimeConfig paths", conf(`,"ingressRate":5,"ingressBurst":5,"runtimeConfig":{"bandwidth":{"egressRate":1000,"unshapedSubnets":["x"]}}`), 7,
			[]string{"ingressRate: 5 bits/s is below", "runtimeConfig.bandwidth.egressBurst: missing or 0",
				`runtimeConfig.bandwidth.unshapedSubnets[0]: "x" is not a CIDR subnet`}},
		{"runtimeConfig not an object", conf(`,"runtimeConfig":{"bandwidth":[1]}`), 7,
			[]string{"runtimeConfig.bandwidth: must be an object"}},
		{"not JSON", []byte(`{"name":`), 6, []string{"stdin: not valid JSON"}},
		{"runtimeConfig wrong type", conf(`,"runtimeConfig":5`), 6, []string{"runtimeConfig"}},
		{"bad prevResult", conf(`,"prevResult":{"ips":[{"address":"nope"}]}`), 6, []string{"prevResult"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.in)
			te := pluginmain.ToCNI(err)
			if te == nil {
				t.Fatal("no error")
			}
			if te.Code != tt.code {
				t.Errorf("code %d, want %d: %s", te.Code, tt.code, te.Msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(te.Msg, w) {
					t.Errorf("message lacks %q:\n%s", w, te.Msg)
				}
			}
			if n := strings.Count(te.Msg, "; ") + 1; len(tt.want) > 1 && n < len(tt.want) {
				t.Errorf("%d problems reported, want %d:\n%s", n, len(tt.want), te.Msg)
			}
		})
	}
}

func TestReadmeExamples(t *testing.T) {
	examples := plugintest.ReadmeExamples(t, "README.md")
	shaping := 0
	for i, ex := range examples {
		c, err := parseConfig(ex)
		if err != nil {
			t.Errorf("example %d: %v\n%s", i, err, ex)
			continue
		}
		if c.Shaping() {
			shaping++
		}
	}
	if shaping == 0 {
		t.Error("no README example limits anything")
	}
}
