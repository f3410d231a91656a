package hostlocal

import (
	"testing"

	"linen.dev/linen/internal/plugins/plugintest"
)

// FuzzParseConfig feeds arbitrary stdin and CNI_ARGS to the configuration
// decoders. They must never panic, and what validates must be usable.
func FuzzParseConfig(f *testing.F) {
	for _, ex := range plugintest.ReadmeExamples(f, "README.md") {
		f.Add(ex, "")
	}
	f.Add([]byte(`{"cniVersion":"0.1.0","name":"n","ipam":{"subnet":"10.0.0.0/30","routes":[{"dst":"::/0"}]}}`), "IP=10.0.0.2")
	f.Add([]byte(`{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/126","gateway":"2001:db8::3"}]]},"prevResult":{"ips":[{"address":"10.0.0.1/8"}]}}`), "IP=2001:db8::2")
	f.Add([]byte(`{"name":"n","runtimeConfig":{"ipRanges":[[{"subnet":"10.0.0.0/24"}]],"ips":["10.0.0.9"]},"args":{"cni":{"ips":["x"]}},"ipam":{}}`), "")
	f.Add([]byte(`[]`), ";;=")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		c, err := ParseConfig(stdin, cniArgs)
		_, _ = parseLenient(stdin)
		if err != nil {
			return
		}
		if len(c.Sets) == 0 {
			t.Fatalf("valid config without range sets: %s", stdin)
		}
		for _, s := range c.Sets {
			if len(s.Ranges) == 0 {
				t.Fatalf("valid config with an empty set: %s", stdin)
			}
			for _, r := range s.Ranges {
				if !r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End) || r.Start.Compare(r.End) > 0 {
					t.Fatalf("bad range %+v from %s", r, stdin)
				}
			}
			if s.Requested.IsValid() && !s.Allocatable(s.Requested) {
				t.Fatalf("requested %v not allocatable in %+v", s.Requested, s.Ranges)
			}
			// The first few candidates are allocatable and distinct.
			seen := map[string]bool{}
			n := 0
			for a := range s.Candidates(s.Requested) {
				if !s.Allocatable(a) || seen[a.String()] {
					t.Fatalf("candidate %v repeated or not allocatable in %+v", a, s.Ranges)
				}
				seen[a.String()] = true
				if n++; n == 64 {
					break
				}
			}
			_ = s.hasFree(nil)
		}
	})
}
