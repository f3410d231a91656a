package ipvlan

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-ipvlan-") }

func TestReadmeExamples(t *testing.T) {
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		s, err := parseConfig(ex, "")
		if err != nil {
			t.Errorf("example %d: %v\n%s", i, err, ex)
			continue
		}
		if _, err := s.MasterName("eth0"); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	base := `{"cniVersion":"1.0.0","name":"n","type":"ipvlan"`
	cases := []struct {
		name, conf, args string
		code             uint
		want             []string
	}{
		{"every problem at once", base + `,"master":"a:b","mode":"l4","mtu":65536}`, "", 7, []string{"master:", "mode:", "mtu:"}},
		{"mode of the wrong type", base + `,"mode":2}`, "", 6, []string{"mode"}},
		{"linkInContainer of the wrong type", base + `,"linkInContainer":"yes"}`, "", 6, []string{"linkInContainer"}},
		{"broken CNI_ARGS", base + `}`, "=x", 4, []string{"CNI_ARGS"}},
		{"broken prevResult", base + `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"nope"}]}}`, "", 6, []string{"prevResult"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.conf), tc.args)
			if err == nil {
				t.Fatal("no error")
			}
			te := pluginmain.ToCNI(err)
			if te.Code != tc.code {
				t.Errorf("code %d, want %d (%v)", te.Code, tc.code, te)
			}
			for _, w := range tc.want {
				if !strings.Contains(te.Msg, w) {
					t.Errorf("%q lacks %q", te.Msg, w)
				}
			}
		})
	}
}

// The link ADD asks for: an ipvlan in the configured mode, without a MAC
// (whatever CNI_ARGS says), with the configured MTU, in the pod.
func TestDesiredLink(t *testing.T) {
	for name, mode := range map[string]netlink.IPVlanMode{"": netlink.IPVLAN_MODE_L2, "l2": netlink.IPVLAN_MODE_L2, "L3": netlink.IPVLAN_MODE_L3, "l3s": netlink.IPVLAN_MODE_L3S} {
		s, err := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"ipvlan","master":"eth1","mtu":9000,"mode":"`+name+`"}`), "IgnoreUnknown=1;MAC=02:00:00:00:00:01")
		if err != nil {
			t.Fatal(err)
		}
		if s.MAC != nil || s.Kind != "ipvlan" || !s.Chained {
			t.Errorf("spec %+v", s)
		}
		got := s.Desired("lnk1", 4, netlink.NsFd(9))
		want := netlink.NewLinkAttrs()
		want.Name, want.ParentIndex, want.MTU, want.Namespace = "lnk1", 4, 9000, netlink.NsFd(9)
		if diff := cmp.Diff(&netlink.IPVlan{LinkAttrs: want, Mode: mode}, got); diff != "" {
			t.Errorf("mode %q: %s", name, diff)
		}
		if err := s.Verify(&netlink.IPVlan{Mode: mode}); err != nil {
			t.Errorf("verify %q: %v", name, err)
		}
		if err := s.Verify(&netlink.IPVlan{Mode: (mode + 1) % netlink.IPVLAN_MODE_MAX}); err == nil || !strings.Contains(err.Error(), "mode") {
			t.Errorf("verify %q against another mode: %v", name, err)
		}
	}
}

// Chained: the master is the single interface of prevResult other than
// the pod interface; anything else is an error naming master.
func TestChainedMaster(t *testing.T) {
	prev := func(ifs string) []byte {
		return []byte(`{"cniVersion":"1.0.0","name":"n","type":"ipvlan","prevResult":{"cniVersion":"1.0.0","interfaces":[` + ifs + `]}}`)
	}
	cases := []struct {
		ifs, want string
	}{
		{`{"name":"eth1"}`, "eth1"},
		{`{"name":"eth1"},{"name":"eth0","sandbox":"/run/netns/x"}`, "eth1"},
		{``, ""},
		{`{"name":"eth1"},{"name":"eth2"}`, ""},
		{`{"name":""}`, ""},
	}
	for _, tc := range cases {
		s, err := parseConfig(prev(tc.ifs), "")
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.MasterName("eth0")
		if tc.want == "" {
			if te := pluginmain.ToCNI(err); err == nil || te.Code != 7 || !strings.Contains(te.Msg, "master") {
				t.Errorf("%s: master %q, error %v", tc.ifs, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: master %q (%v), want %s", tc.ifs, got, err, tc.want)
		}
	}
	s, _ := parseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"ipvlan","master":"eth5","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth1"}]}}`), "")
	if got, _ := s.MasterName("eth0"); got != "eth5" {
		t.Errorf("configured master loses to prevResult: %q", got)
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, ex := range plugintest.ReadmeExamples(f, "README.md") {
		f.Add(ex, "")
	}
	f.Add([]byte(`{"name":"n","mode":"L3S","mtu":68,"linkInContainer":true}`), "MAC=1")
	f.Add([]byte(`{"name":"n","prevResult":{"interfaces":[{"name":"a"},{"name":"b","sandbox":"x"}],"ips":[{"address":"10.0.0.1/8","interface":5}]}}`), "")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		s, err := parseConfig(stdin, cniArgs)
		if err != nil {
			if te := pluginmain.ToCNI(err); te.Code == 0 || te.Code == pluginmain.CodeInternal {
				t.Fatalf("error without a proper code: %v", te)
			}
			return
		}
		if s.MTU != 0 && (s.MTU < 68 || s.MTU > 65535) {
			t.Fatalf("accepted mtu %d", s.MTU)
		}
		if m := s.Desired("x", 1, nil).(*netlink.IPVlan).Mode; m >= netlink.IPVLAN_MODE_MAX {
			t.Fatalf("accepted mode %v", m)
		}
		if name, err := s.MasterName("eth0"); err == nil && name != "" && pluginmain.ValidateIfName(name) != "" && s.Master != "" {
			t.Fatalf("accepted master %q", name)
		}
	})
}
