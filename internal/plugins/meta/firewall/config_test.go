package firewall

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"linen.dev/linen/internal/nft"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func conf(extra string) []byte {
	return []byte(`{"cniVersion":"1.1.0","name":"net1","type":"firewall"` + extra + `}`)
}

func TestParseConfig(t *testing.T) {
	base := func(mod func(*Config)) *Config {
		c := &Config{Network: "net1", CNIVersion: "1.1.0", AdminChain: "CNI-ADMIN"}
		if mod != nil {
			mod(c)
		}
		return c
	}
	tests := []struct {
		name string
		in   []byte
		want *Config
	}{
		{"defaults", conf(""), base(nil)},
		{"reference keys", conf(`,"backend":"iptables","iptablesAdminChainName":"MY-ADMIN","firewalldZone":"trusted","ingressPolicy":"same-bridge"`),
			base(func(c *Config) { c.AdminChain, c.Policy = "MY-ADMIN", nft.IngressSameBridge })},
		{"nftables, isolated", conf(`,"backend":"nftables","ingressPolicy":"isolated"`), base(func(c *Config) { c.Policy = nft.IngressIsolated })},
		{"open", conf(`,"ingressPolicy":"open"`), base(nil)},
		{"valid attachments", conf(`,"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]`),
			base(func(c *Config) { c.HasValid, c.Valid = true, pluginmain.Attachments{{"a", "eth0"}: true} })},
		{"legacy attachments", conf(`,"cni.dev/attachments":[]`), base(func(c *Config) { c.HasValid, c.Valid = true, pluginmain.Attachments{} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	c, err := parseConfig(conf(`,"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"cni0"},{"name":"eth0","sandbox":"/run/netns/x"}],"ips":[{"address":"10.0.0.2/24","interface":1},{"address":"fe80::1/64","interface":1},{"address":"fd00::2/64","interface":1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &current.Result{CNIVersion: "1.1.0"}
	if diff := cmp.Diff(want, c.PrevResult, cmpopts.IgnoreFields(current.Result{}, "Interfaces", "IPs")); diff != "" || len(c.PrevResult.IPs) != 3 {
		t.Errorf("prevResult: %s %+v", diff, c.PrevResult)
	}
	if got := podIPs(c.PrevResult, "eth0"); len(got) != 2 || got[0].String() != "10.0.0.2" || got[1].String() != "fd00::2" {
		t.Errorf("podIPs = %v (link-local must be left out)", got)
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
		{"firewalld", conf(`,"backend":"firewalld","ingressPolicy":"x"`), 2, []string{`backend: "firewalld" is not supported`}},
		{"several", conf(`,"backend":"pf","ingressPolicy":"closed","iptablesAdminChainName":"forward"`), 7, []string{
			`backend: "pf" is not a backend`,
			`ingressPolicy: "closed" is not an ingress policy`,
			`iptablesAdminChainName: "forward" is the firewall's own chain`}},
		{"admin chain too long", conf(`,"iptablesAdminChainName":"` + strings.Repeat("A", 29) + `"`), 7, []string{"iptablesAdminChainName: ", "must have 1 to 28 characters"}},
		{"wrong type", conf(`,"iptablesAdminChainName":5`), 6, []string{"iptablesAdminChainName"}},
		{"bad prevResult", conf(`,"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"nope"}]}`), 6, []string{"prevResult"}},
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
// code, never a panic; an accepted configuration is internally consistent.
func FuzzParseConfig(f *testing.F) {
	f.Add(conf(`,"ingressPolicy":"same-bridge","iptablesAdminChainName":"A"`))
	f.Add(conf(`,"backend":"firewalld"`))
	f.Add(conf(`,"prevResult":{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}`))
	f.Add(conf(`,"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"b"}],"ips":[{"address":"10.0.0.2/24","interface":7}]}`))
	f.Add([]byte(`{"name":1}`))
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := parseConfig(stdin)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code == 0 {
				t.Fatalf("not a CNI error with a code: %v", err)
			}
			return
		}
		if c.Policy > nft.IngressIsolated {
			t.Fatalf("policy %d", c.Policy)
		}
		if err := nft.ValidAdminChain(c.AdminChain); err != nil {
			t.Fatalf("accepted admin chain: %v", err)
		}
		if c.PrevResult != nil {
			for _, a := range podIPs(c.PrevResult, "eth0") {
				if !a.IsValid() || a.IsLinkLocalUnicast() {
					t.Fatalf("podIPs returned %v", a)
				}
			}
		}
	})
}
