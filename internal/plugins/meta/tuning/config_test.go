package tuning

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func conf(extra string) []byte {
	return []byte(`{"cniVersion":"1.1.0","name":"net1","type":"tuning"` + extra + `}`)
}

func ptr[T any](v T) *T { return &v }

// summary flattens a Config for comparison.
type summary struct {
	DataDir           string
	MAC, MACField     string
	MTU, TxQLen       *int
	MTUField          string
	Promisc, Allmulti *bool
	Sysctls           map[string]string // key as written -> value
	SysctlFields      []string
}

func summarize(c *Config) summary {
	s := summary{DataDir: c.DataDir, MTU: c.MTU, TxQLen: c.TxQLen, Promisc: c.Promisc, Allmulti: c.Allmulti, MACField: c.macField, MTUField: c.mtuField}
	if c.MAC != nil {
		s.MAC = c.MAC.String()
	}
	for _, x := range c.Sysctls {
		if s.Sysctls == nil {
			s.Sysctls = map[string]string{}
		}
		s.Sysctls[x.Key()] = x.Value
		s.SysctlFields = append(s.SysctlFields, x.Field)
	}
	return s
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		cniArgs string
		want    summary
	}{
		{"nothing", conf(""), "", summary{DataDir: DefaultDataDir, MTUField: "mtu"}},
		{"everything", conf(`,"mac":"c2:11:22:33:44:55","mtu":1400,"promisc":true,"allmulti":false,"txQLen":0,"dataDir":"/tmp/x",
			"sysctl":{"net.ipv4.conf.IFNAME.arp_notify":"1","net/core/somaxconn":"512"}`), "",
			summary{DataDir: "/tmp/x", MAC: "c2:11:22:33:44:55", MACField: "mac", MTU: ptr(1400), MTUField: "mtu", TxQLen: ptr(0),
				Promisc: ptr(true), Allmulti: ptr(false),
				Sysctls:      map[string]string{"net.ipv4.conf.IFNAME.arp_notify": "1", "net/core/somaxconn": "512"},
				SysctlFields: []string{`sysctl["net.ipv4.conf.IFNAME.arp_notify"]`, `sysctl["net/core/somaxconn"]`}}},
		{"mtu 0 is not set", conf(`,"mtu":0,"args":{"cni":{"mtu":0}}`), "", summary{DataDir: DefaultDataDir, MTUField: "args.cni.mtu"}},
		{"CNI_ARGS MAC over mac", conf(`,"mac":"c2:00:00:00:00:01"`), "IgnoreUnknown=1;MAC=c2:00:00:00:00:02",
			summary{DataDir: DefaultDataDir, MAC: "c2:00:00:00:00:02", MACField: "CNI_ARGS MAC", MTUField: "mtu"}},
		{"args.cni over CNI_ARGS and the configuration", conf(`,"mac":"c2:00:00:00:00:01","mtu":1400,"promisc":true,
			"sysctl":{"net.core.somaxconn":"1","net.ipv4.conf.IFNAME.arp_notify":"1"},
			"args":{"cni":{"mac":"c2:00:00:00:00:03","mtu":1300,"promisc":false,"allmulti":true,"txQLen":7,"sysctl":{"net/core/somaxconn":"2"}}}`),
			"MAC=c2:00:00:00:00:02",
			summary{DataDir: DefaultDataDir, MAC: "c2:00:00:00:00:03", MACField: "args.cni.mac", MTU: ptr(1300), MTUField: "args.cni.mtu",
				Promisc: ptr(false), Allmulti: ptr(true), TxQLen: ptr(7),
				Sysctls:      map[string]string{"net/core/somaxconn": "2", "net.ipv4.conf.IFNAME.arp_notify": "1"},
				SysctlFields: []string{`sysctl["net.ipv4.conf.IFNAME.arp_notify"]`, `args.cni.sysctl["net/core/somaxconn"]`}}},
		{"runtimeConfig.mac over everything", conf(`,"mac":"c2:00:00:00:00:01","args":{"cni":{"mac":"c2:00:00:00:00:03"}},"runtimeConfig":{"mac":"C2:00:00:00:00:04"}`),
			"MAC=c2:00:00:00:00:02",
			summary{DataDir: DefaultDataDir, MAC: "c2:00:00:00:00:04", MACField: "runtimeConfig.mac", MTUField: "mtu"}},
		{"one key written twice with one value", conf(`,"sysctl":{"net.core.somaxconn":"5","net/core/somaxconn":" 5 "}`), "",
			summary{DataDir: DefaultDataDir, MTUField: "mtu", Sysctls: map[string]string{"net.core.somaxconn": "5"},
				SysctlFields: []string{`sysctl["net.core.somaxconn"]`}}},
		{"CNI_ARGS without MAC", conf(""), "K8S_POD_NAME=x;IgnoreUnknown=1", summary{DataDir: DefaultDataDir, MTUField: "mtu"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.in, tt.cniArgs)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, summarize(c)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// Every problem is reported at once, each with its field path.
func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		cniArgs string
		code    uint
		want    []string
	}{
		{"attributes", conf(`,"mac":"zz","mtu":67,"txQLen":-1,"dataDir":"rel/dir"`), "", 7,
			[]string{`mac: "zz" is not an Ethernet MAC address`, "mtu: 67 is outside 68..65535", "txQLen: -1 is outside 0..", `dataDir: "rel/dir" is not an absolute path`}},
		{"multicast and zero MAC", conf(`,"runtimeConfig":{"mac":"01:00:5e:00:00:01"},"args":{"cni":{"mtu":70000}}`), "", 7,
			[]string{`runtimeConfig.mac: "01:00:5e:00:00:01" is a multicast address`, "args.cni.mtu: 70000 is outside"}},
		{"zero MAC from CNI_ARGS", conf(""), "MAC=00:00:00:00:00:00", 7, []string{`CNI_ARGS MAC: "00:00:00:00:00:00" is the all-zero address`}},
		{"long MAC", conf(`,"args":{"cni":{"mac":"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"}}`), "", 7,
			[]string{"args.cni.mac: \"00:00:00:00:fe:80"}},
		{"sysctl keys", conf(`,"sysctl":{"kernel.hostname":"x","net/../kernel/hostname":"x","net.ipv4..ip_forward":"1","/proc/sys/net/core/somaxconn":"1",
			"net":"1","net.core.somaxconn":"","net.ipv4.ip_forward":"1\n2","net. core":"1","":"1"}`), "", 7,
			[]string{`sysctl["kernel.hostname"]: is not under net.`, `sysctl["net/../kernel/hostname"]: must not have empty, "." or ".." components`,
				`sysctl["net.ipv4..ip_forward"]: must not have empty`, `sysctl["/proc/sys/net/core/somaxconn"]: must be relative to /proc/sys`,
				`sysctl["net"]: is not under net.`, `sysctl["net.core.somaxconn"]: value "" is empty`,
				`sysctl["net.ipv4.ip_forward"]: value "1\n2" must be one line`, `sysctl["net. core"]: must not contain whitespace`,
				`sysctl[""]: is empty`}},
		{"conflicting spellings", conf(`,"sysctl":{"net.core.somaxconn":"5","net/core/somaxconn":"6"}`), "", 7,
			[]string{`sysctl["net/core/somaxconn"]: sets the same sysctl as sysctl["net.core.somaxconn"] to a different value`}},
		{"args sysctl checked", conf(`,"args":{"cni":{"sysctl":{"vm.swappiness":"1"}}}`), "", 7,
			[]string{`args.cni.sysctl["vm.swappiness"]: is not under net.`}},
		{"types", conf(`,"mtu":"1500"`), "", 6, []string{"mtu"}},
		{"sysctl value type", conf(`,"sysctl":{"net.core.somaxconn":5}`), "", 6, []string{"sysctl"}},
		{"CNI_ARGS", conf(""), "garbage", 4, []string{"CNI_ARGS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.in, tt.cniArgs)
			te := pluginmain.ToCNI(err)
			if te == nil {
				t.Fatal("no error")
			}
			if te.Code != tt.code {
				t.Errorf("code %d, want %d: %s", te.Code, tt.code, te.Msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(te.Msg, w) {
					t.Errorf("message lacks %q:\n%s", w, te.Msg)
				}
			}
		})
	}
}

func TestSysctlsFor(t *testing.T) {
	c, err := parseConfig(conf(`,"sysctl":{"net.ipv4.conf.IFNAME.arp_notify":"1","net/ipv6/conf/IFNAME/accept_ra":"0","net.core.somaxconn":"9"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := c.sysctlsFor("eth0.100", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs {
		got = append(got, r.Path+"="+r.Value)
	}
	want := []string{"net/core/somaxconn=9", "net/ipv4/conf/eth0.100/arp_notify=1", "net/ipv6/conf/eth0.100/accept_ra=0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	// Keys that meet only once the interface name is in.
	c, err = parseConfig(conf(`,"sysctl":{"net.ipv4.conf.IFNAME.arp_notify":"1","net.ipv4.conf.eth0.arp_notify":"0","net/ipv4/conf/eth0/arp_filter":"1","net.ipv4.conf.IFNAME.arp_filter":"1"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.sysctlsFor("eth0", nil)
	if err == nil || !strings.Contains(err.Error(), `sets net/ipv4/conf/eth0/arp_notify, as sysctl["net.ipv4.conf.IFNAME.arp_notify"] does, to a different value`) ||
		strings.Contains(err.Error(), "arp_filter") {
		t.Errorf("got %v", err)
	}
	if _, err := c.sysctlsFor("eth1", nil); err != nil {
		t.Errorf("other interface: %v", err)
	}

	// The allow-list: whole-key matches, with the placeholder or the name.
	al, err := parseAllowlist("allow.conf", []byte("# pod-tunable keys\n\n^net\\.ipv4\\.conf\\.IFNAME\\.arp_notify$\n  net\\.core\\.somaxconn  \nnet\\.ipv6\\.conf\\.eth0\\.accept_ra\nnet\\.ipv4\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err = parseConfig(conf(`,"sysctl":{"net.ipv4.conf.IFNAME.arp_notify":"1","net/core/somaxconn":"9","net.ipv6.conf.IFNAME.accept_ra":"0","net.ipv4.ip_forward":"1","net.core.somaxconnx":"1"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.sysctlsFor("eth0", al)
	for _, w := range []string{`sysctl["net.ipv4.ip_forward"]: is not allowed by the node's sysctl allow-list allow.conf`, `sysctl["net.core.somaxconnx"]: is not allowed`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v lacks %q", err, w)
		}
	}
	if strings.Count(err.Error(), "not allowed") != 2 {
		t.Errorf("want exactly two refusals: %v", err)
	}
	if _, err := parseAllowlist("bad.conf", []byte("ok\n(unclosed\n")); err == nil || !strings.Contains(err.Error(), "bad.conf line 2") {
		t.Errorf("bad allow-list: %v", err)
	}
	if al, err := loadAllowlist(t.TempDir() + "/none"); al != nil || err != nil {
		t.Errorf("missing allow-list: %v %v", al, err)
	}
}

func TestParseKey(t *testing.T) {
	for k, want := range map[string][]string{
		"net.ipv4.conf.IFNAME.arp_notify":   {"net", "ipv4", "conf", "IFNAME", "arp_notify"},
		"net/ipv4/conf/eth0.100/arp_notify": {"net", "ipv4", "conf", "eth0.100", "arp_notify"},
		"net/core/somaxconn":                {"net", "core", "somaxconn"},
	} {
		got, why := parseKey(k)
		if why != "" || !cmp.Equal(got.parts, want) {
			t.Errorf("parseKey(%q) = %v %q", k, got.parts, why)
		}
	}
	for _, bad := range []string{"net/..", "net/./x", "net//x", "net.", ".net.x", "net/x/", "netx/core", "net\x00.x", "net.é\u200b", "kernel/net/x"} {
		if _, why := parseKey(bad); why == "" {
			t.Errorf("parseKey(%q) accepted", bad)
		}
	}
	for p, want := range map[string]bool{"net/core/x": true, "net/../x": false, "net": false, "kernel/x": false, "net//x": false} {
		if validPath(p) != want {
			t.Errorf("validPath(%q) = %v", p, !want)
		}
	}
}

func TestReadmeExamples(t *testing.T) {
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		c, err := parseConfig(ex, "")
		if err != nil {
			t.Errorf("example %d: %v\n%s", i, err, ex)
			continue
		}
		if _, err := c.sysctlsFor("eth0", nil); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
	}
}
