package tuning

import (
	"strings"
	"testing"

	"linen.dev/linen/internal/plugins/plugintest"
)

// FuzzParseConfig feeds arbitrary configurations and CNI_ARGS to the
// decoder: it must never panic, and every sysctl it accepts must resolve
// below /proc/sys/net for any valid interface name.
func FuzzParseConfig(f *testing.F) {
	for _, ex := range plugintest.ReadmeExamples(f, "README.md") {
		f.Add(ex, "", "eth0")
	}
	f.Add(conf(`,"sysctl":{"net/../x":"1","net.IFNAME.x":"1"},"args":{"cni":{"sysctl":{"net/IFNAME/y":"2"}}}`), "MAC=c2:00:00:00:00:01", "a.b")
	f.Add(conf(`,"mac":"c2:00:00:00:00:01","mtu":1400,"runtimeConfig":{"mac":"x"}`), "IgnoreUnknown=1", "eth0")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs, ifName string) {
		c, err := parseConfig(stdin, cniArgs)
		if err != nil {
			return
		}
		if c.MAC != nil && (len(c.MAC) != 6 || c.MAC[0]&1 == 1) {
			t.Fatalf("accepted MAC %s", c.MAC)
		}
		if c.MTU != nil && (*c.MTU < 68 || *c.MTU > 65535) {
			t.Fatalf("accepted MTU %d", *c.MTU)
		}
		// The dispatcher only lets valid interface names through.
		if ifName == "" || len(ifName) > 15 || ifName == "." || ifName == ".." || strings.ContainsAny(ifName, "/: \t\n\x00") {
			return
		}
		rs, err := c.sysctlsFor(ifName, nil)
		if err != nil {
			return
		}
		for _, r := range rs {
			if !validPath(r.Path) || !strings.HasPrefix(r.Path, "net/") {
				t.Fatalf("%q resolves to %q", r.Key(), r.Path)
			}
		}
	})
}

// FuzzState feeds arbitrary saved-state files (read back from disk on DEL)
// to the decoder: no panic, and nothing accepted that DEL could not act on
// safely.
func FuzzState(f *testing.F) {
	f.Add([]byte(`{"mac":"0a:58:0a:f4:01:05","promisc":false,"mtu":1450,"allmulti":true,"txQLen":1000}`))
	f.Add([]byte(`{"sysctls":[{"path":"net/core/somaxconn","value":"4096"}],"network":"n","containerID":"c","ifName":"eth0"}`))
	f.Add([]byte(`{"sysctls":[{"path":"net/../etc","value":"x"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState(data)
		if err != nil {
			return
		}
		for _, s := range st.Sysctls {
			if !validPath(s.Path) || strings.ContainsAny(s.Value, "\n\x00") {
				t.Fatalf("accepted %+v", s)
			}
		}
	})
}

// FuzzAllowlist feeds arbitrary allow-list files to the parser.
func FuzzAllowlist(f *testing.F) {
	f.Add([]byte("# comment\n^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]+$\n\nnet\\.core\\.somaxconn\n"), "net.core.somaxconn")
	f.Add([]byte("(\n"), "net.x")
	f.Fuzz(func(t *testing.T, data []byte, key string) {
		al, err := parseAllowlist("fuzz", data)
		if err != nil {
			return
		}
		if k, why := parseKey(key); why == "" {
			al.allows(k, "eth0")
		}
	})
}
