package portmap

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/nft"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

var addrEq = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func conf(extra string) []byte {
	return []byte(`{"cniVersion":"1.1.0","name":"net1","type":"portmap"` + extra + `}`)
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want *Config
	}{
		{"defaults", conf(""), &Config{Network: "net1", CNIVersion: "1.1.0", SNAT: true}},
		{"snat off, masqAll", conf(`,"snat":false,"masqAll":true`), &Config{Network: "net1", CNIVersion: "1.1.0", MasqAll: true}},
		{"reference options accepted", conf(`,"markMasqBit":13,"backend":"iptables","conditionsV4":[]`),
			&Config{Network: "net1", CNIVersion: "1.1.0", SNAT: true}},
		{"mappings", conf(`,"runtimeConfig":{"portMappings":[
			{"hostPort":8080,"containerPort":80},
			{"hostPort":53,"containerPort":5353,"protocol":"UDP","hostIP":"192.0.2.1"},
			{"hostPort":9,"containerPort":9,"protocol":"sctp","hostIP":"::ffff:192.0.2.9"},
			{"hostPort":8080,"containerPort":81,"hostIP":"2001:db8::1"},
			{"hostPort":7,"containerPort":7,"protocol":"","hostIP":""}]}`),
			&Config{Network: "net1", CNIVersion: "1.1.0", SNAT: true, HasMappings: true, Mappings: []nft.PortMapping{
				{Protocol: nft.TCP, HostPort: 8080, ContainerPort: 80},
				{Protocol: nft.UDP, HostPort: 53, ContainerPort: 5353, HostIP: netip.MustParseAddr("192.0.2.1")},
				{Protocol: nft.SCTP, HostPort: 9, ContainerPort: 9, HostIP: netip.MustParseAddr("192.0.2.9")},
				{Protocol: nft.TCP, HostPort: 8080, ContainerPort: 81, HostIP: netip.MustParseAddr("2001:db8::1")},
				{Protocol: nft.TCP, HostPort: 7, ContainerPort: 7},
			}}},
		{"containerd's capitalised keys", conf(`,"runtimeConfig":{"portMappings":[
			{"HostPort":18077,"ContainerPort":80,"Protocol":"tcp","HostIP":""},
			{"hostport":53,"CONTAINERPORT":5353,"protocol":"udp","HostIP":"192.0.2.1"}]}`),
			&Config{Network: "net1", CNIVersion: "1.1.0", SNAT: true, HasMappings: true, Mappings: []nft.PortMapping{
				{Protocol: nft.TCP, HostPort: 18077, ContainerPort: 80},
				{Protocol: nft.UDP, HostPort: 53, ContainerPort: 5353, HostIP: netip.MustParseAddr("192.0.2.1")},
			}}},
		{"empty mappings", conf(`,"runtimeConfig":{"portMappings":[]}`),
			&Config{Network: "net1", CNIVersion: "1.1.0", SNAT: true, HasMappings: true}},
		{"valid attachments", conf(`,"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]`),
			&Config{Network: "net1", CNIVersion: "1.1.0", SNAT: true, HasValid: true, Valid: pluginmain.Attachments{{"a", "eth0"}: true}}},
		{"legacy attachments", conf(`,"cni.dev/attachments":[]`),
			&Config{Network: "net1", CNIVersion: "1.1.0", SNAT: true, HasValid: true, Valid: pluginmain.Attachments{}}},
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

// Every problem is reported at once, each with its field path.
func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		code uint
		want []string
	}{
		{"conditions unsupported", conf(`,"conditionsV4":["ip","saddr","10.0.0.0/8"],"conditionsV6":["x"]`), 2,
			[]string{`conditionsV4: "ip saddr 10.0.0.0/8" is not supported`, `conditionsV6: "x" is not supported`}},
		{"reference options", conf(`,"markMasqBit":32,"externalSetMarkChain":"X","backend":"ebpf"`), 7,
			[]string{"markMasqBit: 32 is outside 0..31", "markMasqBit: cannot be combined with externalSetMarkChain", `backend: "ebpf" is not a backend`}},
		{"mappings", conf(`,"runtimeConfig":{"portMappings":[
			{"hostPort":0,"containerPort":80},
			{"hostPort":"80","containerPort":70000,"protocol":"icmp"},
			{"containerPort":1,"hostIP":"1.2.3"},
			5,
			{"hostPort":1.5,"containerPort":1,"hostIP":"fe80::1%eth0"},
			{"hostPort":8080,"containerPort":80},
			{"hostPort":8080,"containerPort":81,"hostIP":"0.0.0.0"},
			{"hostPort":8080,"containerPort":81,"protocol":"udp","hostIP":"0.0.0.0"},
			{"hostPort":8080,"containerPort":82,"protocol":"UDP"}]}`), 7,
			[]string{
				"runtimeConfig.portMappings[0].hostPort: 0 is not a port number (an integer from 1 to 65535)",
				`runtimeConfig.portMappings[1].hostPort: "80" is not a port number`,
				"runtimeConfig.portMappings[1].containerPort: 70000 is not a port number",
				`runtimeConfig.portMappings[1].protocol: "icmp" is not a protocol (want "tcp", "udp" or "sctp")`,
				"runtimeConfig.portMappings[2].hostPort: missing",
				`runtimeConfig.portMappings[2].hostIP: "1.2.3" is not an IP address`,
				"runtimeConfig.portMappings[3]: must be an object",
				"runtimeConfig.portMappings[4].hostPort: 1.5 is not a port number",
				`runtimeConfig.portMappings[4].hostIP: "fe80::1%eth0" is not an IP address`,
				"runtimeConfig.portMappings[6]: 8080/tcp duplicates portMappings[5] (8080/tcp)",
				"runtimeConfig.portMappings[8]: 8080/udp duplicates portMappings[7] (8080/udp)",
			}},
		{"not a list", conf(`,"runtimeConfig":{"portMappings":{"hostPort":1}}`), 7,
			[]string{"runtimeConfig.portMappings: must be a list of port mappings"}},
		{"wrong type", conf(`,"snat":"yes"`), 6, []string{"snat"}},
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
			if got := strings.Count(te.Msg, "; ") + 1; len(tt.want) > 1 && got != len(tt.want) {
				t.Errorf("%d problems reported, want %d:\n%s", got, len(tt.want), te.Msg)
			}
		})
	}
}

func TestEntry(t *testing.T) {
	prev := func(ips ...string) string {
		b, _ := json.Marshal(map[string]any{
			"cniVersion": "1.1.0",
			"interfaces": []map[string]any{{"name": "cni0"}, {"name": "eth0", "sandbox": "/run/netns/x"}, {"name": "net1", "sandbox": "/run/netns/x"}},
			"ips": func() []map[string]any {
				var out []map[string]any
				for _, s := range ips {
					ip, idx, _ := strings.Cut(s, "@")
					m := map[string]any{"address": ip}
					if idx != "" {
						m["interface"] = map[string]int{"1": 1, "2": 2}[idx]
					}
					out = append(out, m)
				}
				return out
			}(),
		})
		return string(b)
	}
	mappings := `"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80}]}`
	tests := []struct {
		name    string
		prev    string
		extra   string
		ifname  string
		want4   string
		want6   string
		wantErr string
	}{
		{"first of each family on the interface", prev("10.0.0.9/24@2", "10.0.0.2/24@1", "10.0.0.3/24@1", "fd00::2/64@1", "fd00::3/64@1"), "", "eth0", "10.0.0.2/24", "fd00::2/64", ""},
		{"other interface", prev("10.0.0.9/24@2", "10.0.0.2/24@1"), "", "net1", "10.0.0.9/24", "", ""},
		{"interface without addresses: any", prev("10.0.0.9/24@2", "fd00::9/64@2"), "", "eth0", "10.0.0.9/24", "fd00::9/64", ""},
		{"hostIP of a missing family", prev("10.0.0.2/24@1"), `,"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"2001:db8::1"}]}`, "eth0", "", "",
			"runtimeConfig.portMappings[0].hostIP: 2001:db8::1 is IPv6 but the pod has no IPv6 address"},
		{"no addresses", prev(), "", "eth0", "", "", `prevResult.ips: no IP address for interface "eth0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			extra := tt.extra
			if extra == "" {
				extra = "," + mappings
			}
			c, err := parseConfig(conf(extra + `,"prevResult":` + tt.prev))
			if err != nil {
				t.Fatal(err)
			}
			e, err := c.entry("ctr", tt.ifname)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := prefixString(e.IPv4); got != tt.want4 {
				t.Errorf("IPv4 %s, want %s", got, tt.want4)
			}
			if got := prefixString(e.IPv6); got != tt.want6 {
				t.Errorf("IPv6 %s, want %s", got, tt.want6)
			}
		})
	}
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func TestReadmeExamples(t *testing.T) {
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		if _, err := parseConfig(ex); err != nil {
			t.Errorf("example %d: %v\n%s", i, err, ex)
		}
	}
}

func FuzzPortMappings(f *testing.F) {
	f.Add([]byte(`[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"192.0.2.1"}]`))
	f.Add([]byte(`[{"hostPort":1,"containerPort":65535,"protocol":"SCTP","hostIP":"::"},{"hostPort":1,"containerPort":2}]`))
	f.Add([]byte(`[{"hostPort":-1},null,"x",[],{"hostIP":5}]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ms, err := ParsePortMappings(raw)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "runtimeConfig.portMappings") {
				t.Fatalf("error without a field path: %v", err)
			}
			return
		}
		for _, m := range ms {
			if m.HostPort == 0 || m.ContainerPort == 0 {
				t.Fatalf("accepted port 0: %+v", m)
			}
			if m.Protocol != nft.TCP && m.Protocol != nft.UDP && m.Protocol != nft.SCTP {
				t.Fatalf("accepted protocol %d", m.Protocol)
			}
			if m.HostIP.IsValid() && (m.HostIP.Is4In6() || m.HostIP.Zone() != "") {
				t.Fatalf("host address not normalised: %v", m.HostIP)
			}
		}
		// What was accepted survives a round trip through JSON.
		var wire []map[string]any
		for _, m := range ms {
			w := map[string]any{"hostPort": m.HostPort, "containerPort": m.ContainerPort, "protocol": m.Protocol.String()}
			if m.HostIP.IsValid() {
				w["hostIP"] = m.HostIP.String()
			}
			wire = append(wire, w)
		}
		b, _ := json.Marshal(wire)
		again, err := ParsePortMappings(b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if diff := cmp.Diff(ms, again, addrEq); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
