package macvlan

import (
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-macvlan-") }

func TestReadmeExamples(t *testing.T) {
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		s, err := parseConfig(ex, "")
		if err != nil {
			t.Errorf("example %d: %v\n%s", i, err, ex)
			continue
		}
		if s.Kind != "macvlan" {
			t.Errorf("example %d: kind %q", i, s.Kind)
		}
	}
}

// Bad input: the error has the right code and names every offending field.
func TestParseConfigErrors(t *testing.T) {
	base := `{"cniVersion":"1.0.0","name":"n","type":"macvlan"`
	cases := []struct {
		name, conf, args string
		code             uint
		want             []string
	}{
		{"every problem at once", base + `,"master":"a/b","mode":"fancy","mtu":20,"bcqueuelen":-1}`, "", 7,
			[]string{"master:", "mode:", "mtu:", "bcqueuelen:"}},
		{"master too long", base + `,"master":"sixteen-bytes-xx"}`, "", 7, []string{"master:", "longer than 15"}},
		{"mtu too large", base + `,"mtu":70000}`, "", 7, []string{"mtu:", "68..65535"}},
		{"source mode", base + `,"mode":"source"}`, "", 7, []string{"mode:", "source"}},
		{"mac not a mac", base + `,"mac":"zz:00"}`, "", 7, []string{"mac:", "not an Ethernet MAC"}},
		{"multicast runtime mac", base + `,"runtimeConfig":{"mac":"01:00:5e:00:00:01"}}`, "", 7, []string{"runtimeConfig.mac", "multicast"}},
		{"zero args mac", base + `,"args":{"cni":{"mac":"00:00:00:00:00:00"}}}`, "", 7, []string{"args.cni.mac", "all-zero"}},
		{"infiniband mac", base + `}`, "MAC=00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", 7, []string{"CNI_ARGS MAC"}},
		{"passthru with mac", base + `,"mode":"passthru","runtimeConfig":{"mac":"02:00:00:00:00:01"}}`, "", 7, []string{"runtimeConfig.mac", "passthru"}},
		{"mtu of the wrong type", base + `,"mtu":"1500"}`, "", 6, []string{"mtu"}},
		{"master of the wrong type", base + `,"master":7}`, "", 6, []string{"master"}},
		{"broken CNI_ARGS", base + `}`, "IgnoreUnknown=1;junk", 4, []string{"CNI_ARGS"}},
		{"prevResult of the wrong shape", base + `,"prevResult":{"ips":"x"}}`, "", 6, []string{"prevResult"}},
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

func TestParseConfigDefaults(t *testing.T) {
	s, err := parseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"macvlan"}`), "IgnoreUnknown=1;K8S_POD_NAME=x")
	if err != nil {
		t.Fatal(err)
	}
	if s.Master != "" || s.MTU != 0 || s.MAC != nil || s.IPAMType != "" || s.LinkInContainer {
		t.Errorf("defaults: %+v", s.Common)
	}
	l := s.Desired("eth0", 3, nil).(*netlink.Macvlan)
	if l.Mode != netlink.MACVLAN_MODE_BRIDGE {
		t.Errorf("default mode %v, want bridge", l.Mode)
	}
}

func TestMACPrecedence(t *testing.T) {
	conf := func(extra string) []byte {
		return []byte(`{"cniVersion":"1.0.0","name":"n","type":"macvlan","mac":"02:00:00:00:00:04"` + extra + `}`)
	}
	cases := []struct {
		extra, args, want string
	}{
		{`,"args":{"cni":{"mac":"02:00:00:00:00:02"}},"runtimeConfig":{"mac":"02:00:00:00:00:03"}`, "MAC=02:00:00:00:00:01", "02:00:00:00:00:03"},
		{`,"args":{"cni":{"mac":"02:00:00:00:00:02"}}`, "MAC=02:00:00:00:00:01", "02:00:00:00:00:02"},
		{``, "MAC=02:00:00:00:00:01", "02:00:00:00:00:01"},
		{``, "", "02:00:00:00:00:04"},
	}
	for _, tc := range cases {
		s, err := parseConfig(conf(tc.extra), tc.args)
		if err != nil {
			t.Fatal(err)
		}
		if s.MAC.String() != tc.want {
			t.Errorf("%s %s: MAC %s, want %s", tc.extra, tc.args, s.MAC, tc.want)
		}
	}
}

// The link ADD asks the kernel for: kind, mode, parent, MTU, MAC, target
// namespace, broadcast queue.
func TestDesiredLink(t *testing.T) {
	s, err := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"macvlan","master":"eth1","mode":"vepa","mtu":1400,"mac":"02:00:00:00:00:09","bcqueuelen":64}`), "")
	if err != nil {
		t.Fatal(err)
	}
	got := s.Desired("lnk0", 7, netlink.NsFd(42)).(*netlink.Macvlan)
	want := netlink.NewLinkAttrs()
	want.Name, want.ParentIndex, want.MTU, want.Namespace = "lnk0", 7, 1400, netlink.NsFd(42)
	want.HardwareAddr = net.HardwareAddr{2, 0, 0, 0, 0, 9}
	if diff := cmp.Diff(&netlink.Macvlan{LinkAttrs: want, Mode: netlink.MACVLAN_MODE_VEPA, BCQueueLen: 64}, got); diff != "" {
		t.Error(diff)
	}
	for name, m := range modes {
		s, err := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"macvlan","mode":"`+strings.ToUpper(name)+`"}`), "")
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Desired("x", 1, nil).(*netlink.Macvlan).Mode; got != m {
			t.Errorf("mode %s: %v", name, got)
		}
		if err := s.Verify(&netlink.Macvlan{Mode: m}); err != nil {
			t.Errorf("verify %s: %v", name, err)
		}
		other := netlink.MACVLAN_MODE_PRIVATE
		if m == other {
			other = netlink.MACVLAN_MODE_BRIDGE
		}
		if err := s.Verify(&netlink.Macvlan{Mode: other}); err == nil || !strings.Contains(err.Error(), "mode") {
			t.Errorf("verify %s against %v: %v", name, other, err)
		}
	}
}

// FuzzParseConfig: arbitrary configurations and CNI_ARGS never panic, and
// whatever validates yields a coherent plan.
func FuzzParseConfig(f *testing.F) {
	for _, ex := range plugintest.ReadmeExamples(f, "README.md") {
		f.Add(ex, "")
	}
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","mode":"passthru","mac":"02:00:00:00:00:01","mtu":-1}`), "MAC=x")
	f.Add([]byte(`{"name":"n","bcqueuelen":99999999999,"args":{"cni":{"mac":7}}}`), "IgnoreUnknown=1;MAC=02:00:00:00:00:01")
	f.Add([]byte(`{"name":"n","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"a"}],"ips":[{"address":"10.0.0.2/24","interface":0}]}}`), "")
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
		if s.MAC != nil && (len(s.MAC) != 6 || s.MAC[0]&1 == 1) {
			t.Fatalf("accepted MAC %s", s.MAC)
		}
		l := s.Desired("x", 1, nil).(*netlink.Macvlan)
		if l.Mode == netlink.MACVLAN_MODE_PASSTHRU && s.MAC != nil {
			t.Fatal("passthru with a MAC")
		}
		if l.Mode == netlink.MACVLAN_MODE_DEFAULT || l.Mode == netlink.MACVLAN_MODE_SOURCE {
			t.Fatalf("accepted mode %v", l.Mode)
		}
	})
}
