package vlan

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-vlan-") }

func TestReadmeExamples(t *testing.T) {
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		if _, err := parseConfig(ex, ""); err != nil {
			t.Errorf("example %d: %v\n%s", i, err, ex)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	base := `{"cniVersion":"1.0.0","name":"n","type":"vlan"`
	cases := []struct {
		name, conf, args string
		code             uint
		want             []string
	}{
		{"missing master and id", base + `}`, "", 7, []string{"master: missing", "vlanId: missing"}},
		{"id 0", base + `,"master":"eth1","vlanId":0}`, "", 7, []string{"vlanId: 0 is outside 1..4094"}},
		{"id 4095", base + `,"master":"eth1","vlanId":4095}`, "", 7, []string{"vlanId: 4095"}},
		{"negative id", base + `,"master":"eth1","vlanId":-3}`, "", 7, []string{"vlanId: -3"}},
		{"every problem at once", base + `,"master":"has space","vlanId":5000,"mtu":12}`, "", 7, []string{"master:", "vlanId:", "mtu:"}},
		{"id as a string", base + `,"master":"eth1","vlanId":"100"}`, "", 6, []string{"vlanId"}},
		{"id fractional", base + `,"master":"eth1","vlanId":1.5}`, "", 6, []string{"vlanId"}},
		{"broken CNI_ARGS", base + `,"master":"eth1","vlanId":5}`, "a", 4, []string{"CNI_ARGS"}},
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

// The link ADD asks for, what CHECK accepts, and how a VLAN id already in
// use on the master is reported.
func TestDesiredLink(t *testing.T) {
	s, err := parseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"vlan","master":"eth1","vlanId":4094,"mtu":1496}`), "")
	if err != nil {
		t.Fatal(err)
	}
	want := netlink.NewLinkAttrs()
	want.Name, want.ParentIndex, want.MTU, want.Namespace = "lnk2", 3, 1496, netlink.NsFd(5)
	if diff := cmp.Diff(&netlink.Vlan{LinkAttrs: want, VlanId: 4094, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}, s.Desired("lnk2", 3, netlink.NsFd(5))); diff != "" {
		t.Error(diff)
	}
	if err := s.Verify(&netlink.Vlan{VlanId: 4094, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}); err != nil {
		t.Error(err)
	}
	if err := s.Verify(&netlink.Vlan{VlanId: 7}); err == nil || !strings.Contains(err.Error(), "VLAN id is 7") {
		t.Errorf("other id: %v", err)
	}
	if err := s.Verify(&netlink.Vlan{VlanId: 4094, VlanProtocol: netlink.VLAN_PROTOCOL_8021AD}); err == nil {
		t.Error("802.1ad accepted")
	}
	e := pluginmain.ToCNI(s.Explain(unix.EEXIST, "eth1"))
	if e.Code != 7 || !strings.Contains(e.Msg, "vlanId: VLAN 4094 already exists on master \"eth1\"") {
		t.Errorf("EEXIST explained as %v", e)
	}
	if s.Explain(errors.New("other"), "eth1") != nil {
		t.Error("other errors must keep the generic explanation")
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, ex := range plugintest.ReadmeExamples(f, "README.md") {
		f.Add(ex, "")
	}
	f.Add([]byte(`{"name":"n","master":"x","vlanId":1e3}`), "")
	f.Add([]byte(`{"name":"n","master":"","vlanId":null,"ipam":{"type":7}}`), "K=V")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		s, err := parseConfig(stdin, cniArgs)
		if err != nil {
			if te := pluginmain.ToCNI(err); te.Code == 0 || te.Code == pluginmain.CodeInternal {
				t.Fatalf("error without a proper code: %v", te)
			}
			return
		}
		v := s.Desired("x", 1, nil).(*netlink.Vlan)
		if v.VlanId < 1 || v.VlanId > 4094 || s.Master == "" || pluginmain.ValidateIfName(s.Master) != "" {
			t.Fatalf("accepted id %d master %q", v.VlanId, s.Master)
		}
		if s.MTU != 0 && (s.MTU < 68 || s.MTU > 65535) {
			t.Fatalf("accepted mtu %d", s.MTU)
		}
	})
}
