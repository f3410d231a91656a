package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
)

// badCase is one malformed invocation: the plugin must answer with the
// spec's error object carrying code and a message that contains each of
// want, exit non-zero, and leave nothing behind.
type badCase struct {
	name   string
	plugin string
	cmd    string
	env    map[string]string // overrides; "" value removes the variable
	conf   string            // {DIR} is the lease dir, {BR} the bridge name
	code   uint
	want   []string
	setup  func(t *testing.T, w *badWorld) // runs before the call
}

type badWorld struct {
	host, pod *netns.NS
	dir       string
	br        string
}

func bridgeConf(extra, ipam string) string {
	return `{"cniVersion":"1.0.0","name":"badnet","type":"bridge","bridge":"{BR}","isGateway":true` + extra + `,"ipam":` + ipam + `}`
}

const goodIPAM = `{"type":"host-local","dataDir":"{DIR}","ranges":[[{"subnet":"10.88.0.0/24"}]]}`

func hlRanges(ranges string) string {
	return `{"type":"host-local","dataDir":"{DIR}","ranges":` + ranges + `}`
}

func badCases() []badCase {
	good := bridgeConf("", goodIPAM)
	return []badCase{
		// Protocol parameters.
		{name: "no CNI_COMMAND", env: map[string]string{"CNI_COMMAND": ""}, conf: good, code: 4, want: []string{"CNI_COMMAND"}},
		{name: "unknown CNI_COMMAND", env: map[string]string{"CNI_COMMAND": "FROB"}, conf: good, code: 4, want: []string{"CNI_COMMAND", "FROB"}},
		{name: "no CNI_CONTAINERID", env: map[string]string{"CNI_CONTAINERID": ""}, conf: good, code: 4, want: []string{"CNI_CONTAINERID"}},
		{name: "no CNI_NETNS", env: map[string]string{"CNI_NETNS": ""}, conf: good, code: 4, want: []string{"CNI_NETNS"}},
		{name: "no CNI_IFNAME", env: map[string]string{"CNI_IFNAME": ""}, conf: good, code: 4, want: []string{"CNI_IFNAME"}},
		{name: "no CNI_PATH", env: map[string]string{"CNI_PATH": ""}, conf: good, code: 4, want: []string{"CNI_PATH"}},
		{name: "DEL without CNI_CONTAINERID", cmd: "DEL", env: map[string]string{"CNI_CONTAINERID": ""}, conf: good, code: 4, want: []string{"CNI_CONTAINERID"}},
		{name: "IFNAME longer than 15 bytes", env: map[string]string{"CNI_IFNAME": "eth0123456789abc"}, conf: good, code: 4, want: []string{"CNI_IFNAME", "15"}},
		{name: "IFNAME with slash", env: map[string]string{"CNI_IFNAME": "eth/0"}, conf: good, code: 4, want: []string{"CNI_IFNAME", "/"}},
		{name: "IFNAME dot", env: map[string]string{"CNI_IFNAME": ".."}, conf: good, code: 4, want: []string{"CNI_IFNAME"}},
		{name: "IFNAME with space", env: map[string]string{"CNI_IFNAME": "eth 0"}, conf: good, code: 4, want: []string{"CNI_IFNAME"}},
		{name: "CONTAINERID with path characters", env: map[string]string{"CNI_CONTAINERID": "../../etc"}, conf: good, code: 4, want: []string{"CNI_CONTAINERID"}},
		{name: "CONTAINERID with slash", cmd: "DEL", env: map[string]string{"CNI_CONTAINERID": "a/b"}, conf: good, code: 4, want: []string{"CNI_CONTAINERID"}},
		{name: "NETNS is a regular file", env: map[string]string{"CNI_NETNS": "{FILE}"}, conf: good, code: 4, want: []string{"CNI_NETNS", "not a network namespace"}},
		{name: "NETNS does not exist", env: map[string]string{"CNI_NETNS": "/run/netns/lt-integ-no-such"}, conf: good, code: 4, want: []string{"CNI_NETNS", "does not exist"}},
		{name: "NETNS is the plugin's own", env: map[string]string{"CNI_NETNS": "{HOST}"}, conf: good, code: 8, want: []string{"CNI_NETNS", "own"}},
		{name: "NETNS own on DEL", cmd: "DEL", env: map[string]string{"CNI_NETNS": "{HOST}"}, conf: good, code: 8, want: []string{"CNI_NETNS"}},
		{name: "CNI_ARGS without =", env: map[string]string{"CNI_ARGS": "IgnoreUnknown=1;garbage"}, conf: good, code: 4, want: []string{"CNI_ARGS", "garbage"}},
		{name: "CNI_ARGS bad MAC", env: map[string]string{"CNI_ARGS": "MAC=zz:zz"}, conf: good, code: 7, want: []string{"MAC", "zz:zz"}},

		// The configuration document.
		{name: "stdin not JSON", conf: `{"cniVersion":`, code: 6, want: []string{"stdin"}},
		{name: "stdin empty", conf: ``, code: 6, want: []string{"stdin"}},
		{name: "stdin a JSON array", conf: `[1,2]`, code: 6, want: []string{"stdin", "object"}},
		{name: "missing name", conf: `{"cniVersion":"1.0.0","type":"bridge","ipam":{}}`, code: 7, want: []string{"name"}},
		{name: "invalid name", conf: `{"cniVersion":"1.0.0","name":"a/b","type":"bridge"}`, code: 7, want: []string{"name", "a/b"}},
		{name: "unsupported cniVersion", conf: strings.Replace(good, "1.0.0", "9.9.9", 1), code: 1, want: []string{"cniVersion", "9.9.9"}},
		{name: "cniVersion not a version", conf: strings.Replace(good, "1.0.0", "latest", 1), code: 1, want: []string{"cniVersion", "latest"}},
		{name: "CHECK below 0.4.0", cmd: "CHECK", conf: strings.Replace(good, "1.0.0", "0.3.1", 1), code: 1, want: []string{"cniVersion", "CHECK"}},
		{name: "GC below 1.1.0", cmd: "GC", conf: good, code: 1, want: []string{"cniVersion", "GC"}},
		{name: "wrong type: mtu string", conf: bridgeConf(`,"mtu":"1500"`, goodIPAM), code: 6, want: []string{"mtu"}},
		{name: "wrong type: isGateway number", conf: `{"cniVersion":"1.0.0","name":"badnet","type":"bridge","isGateway":1,"ipam":{}}`, code: 6, want: []string{"isGateway"}},
		{name: "wrong type: ranges object", conf: bridgeConf("", hlRanges(`{"subnet":"10.0.0.0/24"}`)), code: 6, want: []string{"ranges"}},
		{name: "bridge name too long", conf: strings.Replace(bridgeConf("", goodIPAM), `"{BR}"`, `"averyveryverylongbridge"`, 1), code: 7, want: []string{"bridge"}},
		{name: "vlan out of range", conf: bridgeConf(`,"vlan":5000`, goodIPAM), code: 7, want: []string{"vlan", "5000"}},
		{name: "hairpin with promisc", conf: bridgeConf(`,"hairpinMode":true,"promiscMode":true`, goodIPAM), code: 7, want: []string{"promiscMode"}},
		{name: "iptables masquerade backend", conf: bridgeConf(`,"ipMasq":true,"ipMasqBackend":"iptables"`, goodIPAM), code: 7, want: []string{"ipMasqBackend"}},
		{name: "unknown IPAM type", conf: bridgeConf("", `{"type":"no-such-ipam"}`), code: 7, want: []string{"ipam.type", "no-such-ipam"}},
		{name: "bad CIDR", conf: bridgeConf("", hlRanges(`[[{"subnet":"10.0.0.0/33"}]]`)), code: 7, want: []string{"ranges[0][0].subnet"}},
		{name: "host bits set", conf: bridgeConf("", hlRanges(`[[{"subnet":"10.0.0.1/24"}]]`)), code: 7, want: []string{"ranges[0][0].subnet"}},
		{name: "overlapping ranges", conf: bridgeConf("", hlRanges(`[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/25"}]]`)), code: 7, want: []string{"ranges[1][0]", "overlap"}},
		{name: "gateway outside subnet", conf: bridgeConf("", hlRanges(`[[{"subnet":"10.0.0.0/24","gateway":"10.0.1.1"}]]`)), code: 7, want: []string{"ranges[0][0].gateway"}},
		{name: "rangeStart outside subnet", conf: bridgeConf("", hlRanges(`[[{"subnet":"10.0.0.0/24","rangeStart":"10.9.0.5"}]]`)), code: 7, want: []string{"ranges[0][0].rangeStart"}},
		{name: "subnet too small", conf: bridgeConf("", hlRanges(`[[{"subnet":"10.0.0.0/32"}]]`)), code: 7, want: []string{"ranges[0][0].subnet"}},
		{name: "exhausted range", conf: bridgeConf("", hlRanges(`[[{"subnet":"10.0.0.0/30"}]]`)), want: []string{"ranges[0]", "10.0.0.0/30"},
			setup: func(t *testing.T, w *badWorld) { w.fillRange(t) }},
		{name: "requested IP outside the range", env: map[string]string{"CNI_ARGS": "IP=10.99.0.5"}, conf: good, want: []string{"10.99.0.5"}},
		{name: "ptp without ipam", plugin: "ptp", conf: `{"cniVersion":"1.0.0","name":"badnet","type":"ptp"}`, code: 7, want: []string{"ipam.type"}},
		{name: "portmap bad host port", plugin: "portmap",
			conf: `{"cniVersion":"1.0.0","name":"badnet","type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":80,"protocol":"tcp"}]},"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.88.0.5/24"}]}}`,
			code: 7, want: []string{"portMappings[0].hostPort", "70000"}},
		{name: "portmap bad protocol", plugin: "portmap",
			conf: `{"cniVersion":"1.0.0","name":"badnet","type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"icmp"}]},"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.88.0.5/24"}]}}`,
			code: 7, want: []string{"portMappings[0].protocol", "icmp"}},
		{name: "static: address without prefix length", plugin: "static", conf: `{"cniVersion":"1.0.0","name":"badnet","type":"static","addresses":[{"address":"10.0.0.1"}]}`,
			code: 7, want: []string{"addresses[0].address"}},
	}
}

// fillRange takes the only free address of a /30 (gateway .1, pod .2) with
// another container, so the case's ADD finds the range exhausted.
func (w *badWorld) fillRange(t *testing.T) {
	t.Helper()
	conf := strings.NewReplacer("{DIR}", w.dir, "{BR}", w.br).Replace(bridgeConf("", hlRanges(`[[{"subnet":"10.0.0.0/30"}]]`)))
	other := nstest.New(t)
	r := runPlugin(t, w.host, "bridge", map[string]string{
		"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "filler", "CNI_NETNS": other.Path(), "CNI_IFNAME": "eth0", "CNI_PATH": binDir,
	}, []byte(conf))
	if r.Code != 0 {
		t.Fatalf("fill range: %s %s", r.Stdout, r.Stderr)
	}
}

func TestBadInput(t *testing.T) {
	nstest.RequireRoot(t)
	cases := badCases()
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := &badWorld{host: nstest.New(t), pod: nstest.New(t), dir: t.TempDir(), br: "ltbad0"}
			file := filepath.Join(t.TempDir(), "not-a-netns")
			if err := os.WriteFile(file, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(t, w)
			}
			before := snapshot(t, w)
			plugin := tc.plugin
			if plugin == "" {
				plugin = "bridge"
			}
			cmd := tc.cmd
			if cmd == "" {
				cmd = "ADD"
			}
			env := map[string]string{
				"CNI_COMMAND": cmd, "CNI_CONTAINERID": "ctr-bad", "CNI_NETNS": w.pod.Path(),
				"CNI_IFNAME": "eth0", "CNI_PATH": binDir,
			}
			for k, v := range tc.env {
				v = strings.NewReplacer("{FILE}", file, "{HOST}", w.host.Path()).Replace(v)
				if v == "" {
					delete(env, k)
				} else {
					env[k] = v
				}
			}
			conf := strings.NewReplacer("{DIR}", w.dir, "{BR}", w.br).Replace(tc.conf)
			r := runPlugin(t, w.host, plugin, env, []byte(conf))
			if r.Code == 0 {
				t.Fatalf("exit status 0, stdout %s", r.Stdout)
			}
			e := r.CNIError(t)
			if tc.code != 0 && e.Code != tc.code {
				t.Errorf("code %d, want %d (msg %q)", e.Code, tc.code, e.Msg)
			}
			if e.Code == 0 {
				t.Errorf("code 0 (msg %q)", e.Msg)
			}
			full := e.Msg + " " + e.Details
			for _, wnt := range tc.want {
				if !strings.Contains(full, wnt) {
					t.Errorf("message %q does not mention %q", full, wnt)
				}
			}
			if after := snapshot(t, w); after != before {
				t.Errorf("state changed:\nbefore: %s\nafter:  %s", before, after)
			}
		})
	}
}

// snapshot describes what a failed call must not change: veths and
// addresses in both namespaces, lease files, nftables elements.
func snapshot(t *testing.T, w *badWorld) string {
	t.Helper()
	var b strings.Builder
	for _, ns := range []*netns.NS{w.host, w.pod} {
		h, err := netlink.NewHandleAt(ns.Handle())
		if err != nil {
			t.Fatal(err)
		}
		links, _ := h.LinkList()
		for _, l := range links {
			if l.Type() == "veth" {
				fmt.Fprintf(&b, "veth %s; ", l.Attrs().Name)
			}
			addrs, _ := h.AddrList(l, netlink.FAMILY_ALL)
			for _, a := range addrs {
				if !a.IP.IsLinkLocalUnicast() {
					fmt.Fprintf(&b, "addr %s %s; ", l.Attrs().Name, a.IPNet)
				}
			}
		}
		h.Close()
	}
	_ = filepath.Walk(w.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !strings.HasPrefix(fi.Name(), "last_reserved_ip") && fi.Name() != "lock" && !strings.HasPrefix(fi.Name(), ".") {
			fmt.Fprintf(&b, "lease %s; ", fi.Name())
		}
		return nil
	})
	out, _ := nftRuleset(w.host)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "elements") || strings.Contains(line, "dnat") {
			fmt.Fprintf(&b, "nft %s; ", strings.TrimSpace(line))
		}
	}
	return b.String()
}

// nftRuleset lists the ruleset of a namespace with the nft tool (tests
// only; linen itself talks netlink).
func nftRuleset(ns *netns.NS) (string, error) {
	var out []byte
	var rerr error
	err := ns.Do(func() error {
		out, rerr = execOutput("nft", "list", "ruleset")
		return nil
	})
	if err != nil {
		return "", err
	}
	return string(out), rerr
}
