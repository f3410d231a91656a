package bandwidth

import (
	"testing"

	"linen.dev/linen/internal/plugins/plugintest"
)

// FuzzParseConfig feeds arbitrary configurations to the decoder: it must
// never panic, and what validates must be something the kernel can take.
func FuzzParseConfig(f *testing.F) {
	for _, ex := range plugintest.ReadmeExamples(f, "README.md") {
		f.Add(ex)
	}
	f.Add(conf(`,"ingressRate":1e7,"ingressBurst":18446744073709551615,"egressRate":-0,"egressBurst":0.0`))
	f.Add(conf(`,"runtimeConfig":{"bandwidth":{"ingressRate":8,"ingressBurst":8,"shapedSubnets":["::/0","0.0.0.0/0"]}}`))
	f.Add(conf(`,"unshapedSubnets":["10.0.0.0/8"],"shapedSubnets":null,"runtimeConfig":{"bandwidth":"x"}`))
	f.Add([]byte(`{"ingressRate":"1","prevResult":{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}}`))
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := parseConfig(stdin)
		if err != nil {
			return
		}
		for _, s := range []Shape{c.Ingress, c.Egress} {
			if s.Rate == 0 {
				if s.Burst != 0 {
					t.Fatalf("burst without rate from %s", stdin)
				}
				continue
			}
			if s.Rate < minRate || s.Burst == 0 || s.Burst > maxBurst {
				t.Fatalf("invalid shape %+v from %s", s, stdin)
			}
			b := newBucket(s, tick)
			if b.Rate == 0 || b.Burst > s.Burst/8 || uint64(b.Limit) < min(b.Burst, 1<<32-1) {
				t.Fatalf("bucket %+v from %+v", b, s)
			}
		}
		if c.Subnets.Mode != ShapeAll && len(c.Subnets.Prefixes) == 0 {
			t.Fatalf("subnet mode %v without subnets from %s", c.Subnets.Mode, stdin)
		}
		for _, p := range c.Subnets.Prefixes {
			if !p.IsValid() || p.Masked() != p {
				t.Fatalf("bad subnet %v from %s", p, stdin)
			}
			_, sel := u32Match(p, true)
			if len(sel.Keys) == 0 || len(sel.Keys) > 4 {
				t.Fatalf("%v gives %d keys", p, len(sel.Keys))
			}
		}
	})
}
