package static

import (
	"testing"

	"linen.dev/linen/internal/plugins/plugintest"
)

// FuzzParseConfig: the decoder and validator never panic, and a valid
// configuration always yields a result.
func FuzzParseConfig(f *testing.F) {
	for _, ex := range plugintest.ReadmeExamples(f, "README.md") {
		f.Add(ex, "")
	}
	f.Add([]byte(`{"name":"n","ipam":{"addresses":[{"address":"10.0.0.1/24"}]}}`), "IP=10.0.0.2/24;GATEWAY=10.0.0.1")
	f.Add([]byte(`{"name":"n","args":{"cni":{"ips":["::1/128"]}},"ipam":{},"prevResult":{"ips":[]}}`), "")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		c, err := ParseConfig(stdin, cniArgs)
		if err != nil {
			return
		}
		if len(c.Addresses) == 0 {
			t.Fatalf("valid config without addresses: %s", stdin)
		}
		if r := Result(c); len(r.IPs) != len(c.Addresses) {
			t.Fatalf("result has %d IPs for %d addresses", len(r.IPs), len(c.Addresses))
		}
	})
}
