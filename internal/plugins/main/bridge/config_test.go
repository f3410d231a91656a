package bridge

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/plugins/plugintest"
)

func TestReadmeExamples(t *testing.T) {
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		if _, err := parseConfig(ex, ""); err != nil {
			t.Errorf("example %d: %v\n%s", i, err, ex)
		}
	}
}

func TestParseConfig(t *testing.T) {
	base := `{"cniVersion":"1.0.0","name":"n","type":"bridge"`
	cases := []struct {
		name, conf, args string
		want             []string // substrings of the error; nil = valid
	}{
		{"defaults", base + `}`, "", nil},
		{"every problem at once", base + `,"bridge":"this-name-is-too-long","mtu":20,"vlan":-1,"hairpinMode":true,"promiscMode":true}`, "",
			[]string{"bridge:", "mtu:", "vlan:", "promiscMode:"}},
		{"trunk id and range", base + `,"vlanTrunk":[{"id":5,"minID":1,"maxID":2}]}`, "", []string{"vlanTrunk[0]"}},
		{"trunk out of range", base + `,"vlanTrunk":[{"minID":0,"maxID":5000}]}`, "", []string{"vlanTrunk[0].minID"}},
		{"trunk reversed", base + `,"vlanTrunk":[{"minID":9,"maxID":3}]}`, "", []string{"vlanTrunk[0]", "greater"}},
		{"no container interface with ipam", base + `,"disableContainerInterface":true,"ipam":{"type":"host-local"}}`, "", []string{"ipam.type"}},
		{"mac from CNI_ARGS", base + `}`, "IgnoreUnknown=1;MAC=zz", []string{"CNI_ARGS MAC"}},
		{"multicast mac", base + `,"runtimeConfig":{"mac":"01:00:5e:00:00:01"}}`, "", []string{"runtimeConfig.mac", "multicast"}},
		{"backend", base + `,"ipMasqBackend":"xtables"}`, "", []string{"ipMasqBackend"}},
		{"snooping on", base + `,"multicastSnooping":true}`, "", nil},
		{"snooping not a bool", base + `,"multicastSnooping":"yes"}`, "", []string{"multicastSnooping"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.conf), tc.args)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestMACPrecedence(t *testing.T) {
	conf := `{"cniVersion":"1.0.0","name":"n","type":"bridge","args":{"cni":{"mac":"02:00:00:00:00:02"}},"runtimeConfig":{"mac":"02:00:00:00:00:03"}}`
	c, err := parseConfig([]byte(conf), "MAC=02:00:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("02:00:00:00:00:03", c.MAC.String()); diff != "" {
		t.Error(diff)
	}
	c, _ = parseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"bridge","args":{"cni":{"mac":"02:00:00:00:00:02"}}}`), "MAC=02:00:00:00:00:01")
	if c.MAC.String() != "02:00:00:00:00:02" {
		t.Errorf("args over CNI_ARGS: got %s", c.MAC)
	}
}

func TestTrunkExpansion(t *testing.T) {
	c, err := parseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"bridge","vlan":10,"vlanTrunk":[{"id":7},{"minID":20,"maxID":22},{"id":21}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{7, 20, 21, 22}, c.Trunk); diff != "" {
		t.Error(diff)
	}
}
