package linen

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
	"linen.dev/linen/internal/subnetenv"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// standardConflist is flannel's default CNI configuration (cni-conf.json),
// byte for byte as flannel's manifests install it.
const standardConflist = `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`

func mustEnv(t testing.TB, s string) *subnetenv.Env {
	t.Helper()
	e, err := subnetenv.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const (
	envV4       = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	envV4NoMasq = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
	envDual     = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_IPV6_NETWORK=2001:db8:244::/56\nFLANNEL_IPV6_SUBNET=2001:db8:244:7::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	envV6       = "FLANNEL_IPV6_NETWORK=2001:db8:244::/56\nFLANNEL_IPV6_SUBNET=2001:db8:244:7::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
	envMulti    = "FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=8951\nFLANNEL_IPMASQ=true\n"
)

// pluginConf returns the first plugin of flannel's standard conflist as
// libcni hands it to the plugin (name and cniVersion copied in).
func standardPluginConf(t testing.TB) []byte {
	t.Helper()
	var l struct {
		Name       string            `json:"name"`
		CNIVersion string            `json:"cniVersion"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(standardConflist), &l); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(l.Plugins[0], &m); err != nil {
		t.Fatal(err)
	}
	m["name"], m["cniVersion"] = l.Name, l.CNIVersion
	b, _ := json.Marshal(m)
	return b
}

// TestDelegateConfGolden: the delegate configuration for each case is
// compared with testdata/<case>.json (go test -update rewrites them).
func TestDelegateConfGolden(t *testing.T) {
	tests := []struct {
		name string
		conf string
		env  string
	}{
		{"standard-conflist", string(standardPluginConf(t)), envV4},
		{"defaults", `{"cniVersion":"1.1.0","name":"pods","type":"linen"}`, envV4},
		{"ipmasq-inverted", `{"cniVersion":"1.1.0","name":"pods","type":"linen"}`, envV4NoMasq},
		{"user-overrides", `{"cniVersion":"1.0.0","name":"pods","type":"flannel",
			"subnetFile":"/run/linen/subnet.env","dataDir":"/var/lib/linen/cni",
			"delegate":{"type":"bridge","bridge":"br-pods","isGateway":false,"isDefaultGateway":true,"ipMasq":true,"mtu":1400,
				"hairpinMode":true,"promiscMode":false,"vlan":0,"dns":{"nameservers":["10.96.0.10"]},"cniVersion":"0.1.0"},
			"ipam":{"type":"host-local","dataDir":"/var/lib/linen/ipam","resolvConf":"/etc/resolv.conf",
				"routes":[{"dst":"0.0.0.0/0"},{"dst":"10.244.0.0/16","gw":"10.244.7.254"}]}}`, envV4},
		{"dual-stack", `{"cniVersion":"1.1.0","name":"pods","type":"linen","delegate":{"isDefaultGateway":true}}`, envDual},
		{"ipv6-only", `{"cniVersion":"1.1.0","name":"pods","type":"linen"}`, envV6},
		{"mtu-and-networks", `{"cniVersion":"1.1.0","name":"pods","type":"linen","ipam":{"routes":[{"dst":"10.245.0.0/16"}]}}`, envMulti},
		{"ptp-delegate", `{"cniVersion":"1.1.0","name":"pods","type":"linen","delegate":{"type":"ptp"},"ipam":{"type":"static"}}`, envV4},
		{"runtime-config-and-args", `{"cniVersion":"1.1.0","name":"pods","type":"linen",
			"delegate":{"runtimeConfig":{"mac":"02:00:00:00:00:01"}},
			"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"bandwidth":{"ingressRate":1000}},
			"args":{"cni":{"ips":["10.244.7.9"]}}}`, envV4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig([]byte(tt.conf))
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.delegateConf(mustEnv(t, tt.env))
			if err != nil {
				t.Fatal(err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got, "", "  "); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			golden := filepath.Join("testdata", tt.name+".json")
			if *update {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), pretty.String()); diff != "" {
				t.Errorf("delegate configuration differs from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}

// The four combinations of FLANNEL_IPMASQ and delegate.ipMasq, and mtu
// with and without delegate.mtu.
func TestIPMasqAndMTU(t *testing.T) {
	tests := []struct {
		env      string
		delegate string
		masq     bool
		mtu      int
	}{
		{envV4, `{}`, false, 1450},
		{envV4NoMasq, `{}`, true, 1450},
		{envV4, `{"ipMasq":true}`, true, 1450},
		{envV4NoMasq, `{"ipMasq":false,"mtu":9000}`, false, 9000},
		{envV4, `{"ipMasq":null,"mtu":null}`, false, 1450},
	}
	for _, tt := range tests {
		c, err := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"linen","delegate":` + tt.delegate + `}`))
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.delegateConf(mustEnv(t, tt.env))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			IPMasq bool `json:"ipMasq"`
			MTU    int  `json:"mtu"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.IPMasq != tt.masq || got.MTU != tt.mtu {
			t.Errorf("env %q delegate %s: ipMasq=%v mtu=%d, want %v %d", strings.Split(tt.env, "\n")[3], tt.delegate, got.IPMasq, got.MTU, tt.masq, tt.mtu)
		}
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(standardPluginConf(t))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{Network: "cbr0", CNIVersion: "0.3.1", SubnetFile: "/run/flannel/subnet.env", DataDir: "/var/lib/cni/flannel",
		DelegateType: "bridge", Delegate: map[string]json.RawMessage{"hairpinMode": json.RawMessage("true"), "isDefaultGateway": json.RawMessage("true")}}
	if diff := cmp.Diff(want, c, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// Every problem is reported at once with its field path; a value of the
// wrong type makes it code 6, anything else code 7.
func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		conf string
		code uint
		want []string
	}{
		{"fields set by the plugin", `{"delegate":{"name":"x","ipam":{},"type":"flannel"},"ipam":{"ranges":[],"subnet":"10.0.0.0/8"},"dataDir":"rel/dir"}`, 7, []string{
			`dataDir: "rel/dir" must be an absolute path`,
			`delegate.type: "flannel" would delegate to this plugin itself`,
			"delegate.name: must not be set: the delegate gets the network's name",
			"delegate.ipam: must not be set: the plugin builds it from subnet.env and the top-level ipam",
			"ipam.ranges: must not be set: the ranges come from subnet.env (FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET)",
			"ipam.subnet: must not be set: the ranges come from subnet.env (FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET)",
		}},
		{"wrong types", `{"subnetFile":5,"delegate":{"type":1,"isGateway":"yes","mtu":"1450","bridge":[]},"ipam":{"type":true,"routes":{}},"runtimeConfig":[],"args":"x"}`, 6, []string{
			"subnetFile: must be a string, not a number",
			"delegate.type: must be a string, not a number",
			"delegate.isGateway: must be a boolean, not a string",
			"delegate.mtu: must be an integer, not a string",
			"delegate.bridge: must be a string, not an array",
			"ipam.type: must be a string, not a boolean",
			"ipam.routes: must be an array, not an object",
			"runtimeConfig: must be an object, not an array",
			"args: must be an object, not a string",
		}},
		{"routes", `{"ipam":{"routes":[{"dst":"10.0.0.0/33"},{},null,5,{"dst":7}]}}`, 6, []string{
			`ipam.routes[0].dst: "10.0.0.0/33" is not a CIDR prefix`,
			"ipam.routes[1].dst: missing",
			"ipam.routes[2]: must be an object, not null",
			"ipam.routes[3]: must be an object, not a number",
			"ipam.routes[4].dst: must be a string, not a number",
		}},
		{"delegate not an object", `{"delegate":"bridge","ipam":[1]}`, 6, []string{
			"delegate: must be an object, not a string", "ipam: must be an object, not an array"}},
		{"empty types", `{"delegate":{"type":""},"ipam":{"type":""}}`, 7, []string{
			`delegate.type: must not be empty (leave it out for "bridge")`, `ipam.type: must not be empty (leave it out for "host-local")`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := `{"cniVersion":"1.1.0","name":"n","type":"linen",` + strings.TrimPrefix(tt.conf, "{")
			_, err := parseConfig([]byte(conf))
			if err == nil {
				t.Fatal("no error")
			}
			te := pluginmain.ToCNI(err)
			if te.Code != tt.code {
				t.Errorf("code %d, want %d (%s)", te.Code, tt.code, te.Msg)
			}
			if diff := cmp.Diff(tt.want, strings.Split(te.Msg, "; ")); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// With an invalid configuration parseConfig still returns the usable
// paths, so that DEL finds what ADD saved.
func TestParseConfigPathsOnError(t *testing.T) {
	c, err := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","dataDir":"/d","subnetFile":"/s","delegate":{"name":"x"}}`))
	if err == nil {
		t.Fatal("no error")
	}
	if c.DataDir != "/d" || c.SubnetFile != "/s" {
		t.Errorf("paths %q %q", c.DataDir, c.SubnetFile)
	}
}

// TestReadmeExamples: every JSON example of README.md is accepted: a
// plugin configuration directly, a conflist plugin by plugin (those of
// type linen or flannel), and each builds a delegate configuration.
func TestReadmeExamples(t *testing.T) {
	n := 0
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		var head struct {
			Name       string            `json:"name"`
			CNIVersion string            `json:"cniVersion"`
			Type       string            `json:"type"`
			Plugins    []json.RawMessage `json:"plugins"`
		}
		if err := json.Unmarshal(ex, &head); err != nil {
			t.Errorf("example %d: %v\n%s", i, err, ex)
			continue
		}
		confs := [][]byte{ex}
		if head.Plugins != nil {
			confs = nil
			for _, p := range head.Plugins {
				var m map[string]any
				if err := json.Unmarshal(p, &m); err != nil {
					t.Fatal(err)
				}
				if m["type"] != "linen" && m["type"] != "flannel" {
					continue
				}
				m["name"], m["cniVersion"] = head.Name, head.CNIVersion
				b, _ := json.Marshal(m)
				confs = append(confs, b)
			}
		} else if head.Type == "bridge" {
			// The generated delegate configuration shown for flannel's
			// standard conflist: it must be what the plugin generates.
			golden, err := os.ReadFile(filepath.Join("testdata", "standard-conflist.json"))
			if err != nil {
				t.Fatal(err)
			}
			var want, got any
			_ = json.Unmarshal(golden, &want)
			_ = json.Unmarshal(ex, &got)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("example %d differs from testdata/standard-conflist.json (-want +got):\n%s", i, diff)
			}
			continue
		}
		for _, conf := range confs {
			n++
			c, err := parseConfig(conf)
			if err != nil {
				t.Errorf("example %d: %v\n%s", i, err, conf)
				continue
			}
			if _, err := c.delegateConf(mustEnv(t, envDual)); err != nil {
				t.Errorf("example %d: %v", i, err)
			}
		}
	}
	if n < 3 {
		t.Errorf("README.md has %d plugin configurations, want at least 3", n)
	}
}

// FuzzParseConfig: any configuration is either rejected with code 6 or 7,
// or accepted and turned into a delegate configuration that is a JSON
// object with the plugin's keys set.
func FuzzParseConfig(f *testing.F) {
	for _, ex := range plugintest.ReadmeExamples(f, "README.md") {
		f.Add(ex)
	}
	f.Add(standardPluginConf(f))
	f.Add([]byte(`{"delegate":{"type":1,"name":"x","mtu":"1"},"ipam":{"routes":[{"dst":"::/0"},null,{"dst":7}],"ranges":[]},"runtimeConfig":[],"dataDir":"x"}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"routes":[{"dst":"10.244.0.0/16","gw":"10.244.7.1"}]},"args":{"cni":{}},"prevResult":{}}`))
	env := mustEnv(f, envDual)
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := parseConfig(stdin)
		if c == nil || c.DataDir == "" || c.SubnetFile == "" {
			t.Fatalf("no usable paths: %+v", c)
		}
		if err != nil {
			if te := pluginmain.ToCNI(err); te.Code != 6 && te.Code != 7 {
				t.Fatalf("code %d: %v", te.Code, te)
			}
			return
		}
		b, err := c.delegateConf(env)
		if err != nil {
			t.Fatalf("accepted configuration gives no delegate configuration: %v", err)
		}
		var d struct {
			Name string         `json:"name"`
			Type string         `json:"type"`
			IPAM map[string]any `json:"ipam"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("delegate configuration %s: %v", b, err)
		}
		if d.Type == "" || d.Type == "linen" || d.Type == "flannel" || d.IPAM["ranges"] == nil || d.Name != c.Network {
			t.Fatalf("delegate configuration %s", b)
		}
	})
}
