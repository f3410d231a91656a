package dhcp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/plugins/ipam/dhcp/dhcp4"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"macvlan","ipam":{"type":"dhcp"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.SocketPath != DefaultSocketPath || c.Network != "n" || len(c.Provide) != 0 || c.Priority != 0 {
		t.Errorf("config %+v", c)
	}
	if diff := cmp.Diff(DefaultParams, c.Params); diff != "" {
		t.Errorf("params: %s", diff)
	}
}

func TestParseConfigRequestAndProvide(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"dhcp","daemonSocketPath":"/run/x.sock","priority":7,
		"request":[{"skipDefault":true,"option":"subnet-mask"},{"option":"routers"},{"option":"42"},{"option":"routers"}],
		"provide":[{"option":"host-name","fromArg":"K8S_POD_NAME","value":"fallback"},{"option":"vendor-class-identifier","value":"linen"},
		           {"option":"224","value":"0x0aff"},{"option":"interface-mtu","value":"1400"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint8{1, 3, 42}, c.Params); diff != "" {
		t.Errorf("params (-want +got): %s", diff)
	}
	if c.SocketPath != "/run/x.sock" || c.Priority != 7 {
		t.Errorf("socket %q priority %d", c.SocketPath, c.Priority)
	}
	args, _ := pluginmain.ParseCNIArgs("K8S_POD_NAME=web-0;IgnoreUnknown=1")
	got, err := c.ProvidedOptions(args)
	if err != nil {
		t.Fatal(err)
	}
	want := dhcp4.Options{{Code: 12, Data: []byte("web-0")}, {Code: 60, Data: []byte("linen")}, {Code: 224, Data: []byte{0x0a, 0xff}}, {Code: 26, Data: []byte{5, 120}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("provided (-want +got): %s", diff)
	}
	// Without the CNI_ARGS key the fixed value is the fallback.
	got, _ = c.ProvidedOptions(pluginmain.CNIArgs{})
	if string(got.Get(12)) != "fallback" {
		t.Errorf("fallback host name %q", got.Get(12))
	}
	// A fromArg value that does not fit its option is code 4, naming it.
	c2, err := ParseConfig([]byte(`{"name":"n","ipam":{"type":"dhcp","provide":[{"option":"ntp-servers","fromArg":"NTP"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.ProvidedOptions(pluginmain.CNIArgs{"NTP": "not-an-ip"}); err == nil || pluginmain.ToCNI(err).Code != 4 || !strings.Contains(err.Error(), "CNI_ARGS NTP") {
		t.Errorf("bad fromArg value: %v", err)
	}
	if o, _ := c2.ProvidedOptions(pluginmain.CNIArgs{}); len(o) != 0 {
		t.Errorf("absent fromArg without value sent %v", o)
	}
}

func TestParseConfigErrors(t *testing.T) {
	_, err := ParseConfig([]byte(`{"name":"n","ipam":{"type":"dhcp","daemonSocketPath":"rel.sock","priority":-1,
		"request":[{"option":"no-such"}],
		"provide":[{"option":"dhcp-client-identifier","value":"x"},{"option":"routers","value":"not-ip"},{"option":"host-name"},
		           {},{"option":"host-name","value":"a"},{"option":"host-name","value":"b"},{"option":"0","value":"x"}]}}`))
	if err == nil {
		t.Fatal("no error")
	}
	te := pluginmain.ToCNI(err)
	for _, want := range []string{
		"ipam.daemonSocketPath: \"rel.sock\" is not an absolute path",
		"ipam.priority: -1 is negative",
		"ipam.request[0].option: \"no-such\"",
		"ipam.provide[0].option: dhcp-client-identifier (61) cannot be provided",
		"ipam.provide[1].value: routers wants",
		"ipam.provide[2]: give a value or fromArg",
		"ipam.provide[3].option: missing",
		"ipam.provide[4].option: host-name is already provided by ipam.provide[2]",
		"ipam.provide[6].option: \"0\"",
	} {
		if !strings.Contains(te.Msg, want) {
			t.Errorf("error lacks %q:\n%s", want, te.Msg)
		}
	}
	if te.Code != pluginmain.CodeInvalidConfig {
		t.Errorf("code %d", te.Code)
	}
	for in, code := range map[string]uint{
		`{"name":"n"}`: 7,
		`{"name":"n","ipam":{"request":{"x":1}}}`:       6,
		`{"name":"n","ipam":{"provide":[{"value":1}]}}`: 6,
	} {
		if _, err := ParseConfig([]byte(in)); pluginmain.ToCNI(err).Code != code {
			t.Errorf("%s: %v, want code %d", in, err, code)
		}
	}
	// Run directly, the top level is the ipam section, without prefix.
	_, err = ParseConfig([]byte(`{"name":"n","type":"dhcp","priority":-2}`))
	if err == nil || !strings.Contains(err.Error(), "priority: -2") || strings.Contains(err.Error(), "ipam.") {
		t.Errorf("top-level form: %v", err)
	}
}

func TestClientID(t *testing.T) {
	id := clientID("c1", "net", "eth0")
	if !bytes.Equal(id, append([]byte{0}, "c1/net/eth0"...)) {
		t.Errorf("client id %q", id)
	}
	long := clientID(strings.Repeat("a", 300), "net", "eth0")
	if len(long) != 255 || long[0] != 0 {
		t.Errorf("long client id has %d bytes", len(long))
	}
	if bytes.Equal(long, clientID(strings.Repeat("a", 300), "net", "eth1")) {
		t.Error("long client ids of two interfaces collide")
	}
}

func wlease(addr string, opts ...dhcp4.Option) *WireLease {
	return &WireLease{Address: addr, Server: "10.0.0.1", State: StateBound, Options: wireOptions(opts)}
}

func TestBuildResult(t *testing.T) {
	classless := dhcp4.EncodeClasslessRoutes([]dhcp4.Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Router: netip.MustParseAddr("10.0.0.254")},
		{Dst: netip.MustParsePrefix("10.50.0.0/16"), Router: netip.MustParseAddr("0.0.0.0")},
	})
	search, _ := dhcp4.EncodeDomainSearch([]string{"a.test", "b.test"})
	r, err := BuildResult(wlease("10.0.0.9",
		dhcp4.Option{Code: 1, Data: []byte{255, 255, 255, 0}},
		dhcp4.Option{Code: 3, Data: []byte{10, 0, 0, 1, 10, 0, 0, 2}},
		dhcp4.Option{Code: 33, Data: []byte{192, 168, 1, 0, 10, 0, 0, 3}},
		dhcp4.Option{Code: 121, Data: classless},
		dhcp4.Option{Code: 6, Data: []byte{10, 0, 0, 53}},
		dhcp4.Option{Code: 15, Data: []byte("pods.test\x00")},
		dhcp4.Option{Code: 119, Data: search},
	), 50)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	var got map[string]any
	json.Unmarshal(b, &got)
	want := map[string]any{
		"cniVersion": "1.1.0",
		"ips":        []any{map[string]any{"address": "10.0.0.9/24", "gateway": "10.0.0.1"}},
		"routes": []any{
			map[string]any{"dst": "0.0.0.0/0", "gw": "10.0.0.254", "priority": 50.0},
			map[string]any{"dst": "10.50.0.0/16", "gw": "0.0.0.0", "priority": 50.0, "scope": 253.0},
		},
		"dns": map[string]any{"nameservers": []any{"10.0.0.53"}, "domain": "pods.test", "search": []any{"a.test", "b.test"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("classless routes replace routers and static routes (-want +got):\n%s", diff)
	}

	// Without option 121: static routes, then the default via the first
	// router; without a mask, the class's.
	r, err = BuildResult(wlease("172.16.5.9",
		dhcp4.Option{Code: 3, Data: []byte{172, 16, 0, 1}},
		dhcp4.Option{Code: 33, Data: []byte{192, 168, 1, 0, 172, 16, 0, 3}}), 0)
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, rt := range r.Routes {
		routes = append(routes, rt.Dst.String()+" via "+rt.GW.String())
	}
	if diff := cmp.Diff([]string{"192.168.1.0/24 via 172.16.0.3", "0.0.0.0/0 via 172.16.0.1"}, routes); diff != "" || r.IPs[0].Address.String() != "172.16.5.9/16" {
		t.Errorf("routes %v address %s: %s", routes, r.IPs[0].Address.String(), diff)
	}
	if !r.DNS.IsEmpty() {
		t.Errorf("DNS without options: %+v", r.DNS)
	}

	for name, l := range map[string]*WireLease{
		"bad mask":      wlease("10.0.0.9", dhcp4.Option{Code: 1, Data: []byte{255, 0, 255, 0}}),
		"bad routers":   wlease("10.0.0.9", dhcp4.Option{Code: 3, Data: []byte{10, 0, 0}}),
		"bad classless": wlease("10.0.0.9", dhcp4.Option{Code: 121, Data: []byte{40, 1}}),
		"bad static":    wlease("10.0.0.9", dhcp4.Option{Code: 33, Data: []byte{1}}),
		"bad dns":       wlease("10.0.0.9", dhcp4.Option{Code: 6, Data: []byte{1, 2}}),
		"bad search":    wlease("10.0.0.9", dhcp4.Option{Code: 119, Data: []byte{5, 'a'}}),
		"bad address":   wlease("fe80::1"),
	} {
		if _, err := BuildResult(l, 0); err == nil {
			t.Errorf("%s: no error", name)
		} else if name != "bad address" && !strings.Contains(err.Error(), "option") {
			t.Errorf("%s: error does not name the option: %v", name, err)
		}
	}
}

func TestDecodeRequest(t *testing.T) {
	good := `{"version":1,"op":"allocate","containerID":"c","network":"n","ifName":"eth0","netns":"/run/netns/x","params":[1,3]}`
	req, werr := DecodeRequest([]byte(good))
	if werr != nil || req.Key != (Key{"c", "n", "eth0"}) || !bytes.Equal(req.Params, []byte{1, 3}) {
		t.Fatalf("%+v %v", req, werr)
	}
	for in, want := range map[string]string{
		`{`:                           "request:",
		`{"version":2,"op":"status"}`: "protocol version 2",
		`{"version":1,"op":"gc"}`:     "network is empty",
		`{"version":1,"op":"release","network":"n"}`:                                "required",
		`{"version":1,"op":"check","containerID":"c","network":"n","ifName":"a/b"}`: "ifName",
	} {
		if _, werr := DecodeRequest([]byte(in)); werr == nil || !strings.Contains(werr.Msg, want) {
			t.Errorf("%s: %v, want %q", in, werr, want)
		}
	}
	if _, err := readLine(strings.NewReader(strings.Repeat("x", maxMessage+10))); err == nil {
		t.Error("oversized message accepted")
	}
	if b, err := readLine(strings.NewReader("{}\nrest")); err != nil || string(b) != "{}\n" {
		t.Errorf("readLine: %q %v", b, err)
	}
}

func TestReadmeExamples(t *testing.T) {
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		c, err := ParseConfig(ex)
		if err != nil {
			t.Errorf("example %d does not parse: %v\n%s", i, err, ex)
			continue
		}
		var head types.NetConf
		if err := json.Unmarshal(ex, &head); err != nil || head.IPAM.Type != "dhcp" {
			t.Errorf("example %d: ipam.type %q (%v)", i, head.IPAM.Type, err)
		}
		if len(c.Params) == 0 {
			t.Errorf("example %d requests nothing", i)
		}
	}
}

func ExampleBuildResult() {
	r, _ := BuildResult(&WireLease{Address: "192.0.2.10", Options: []WireOption{{Code: 1, Data: []byte{255, 255, 255, 0}}, {Code: 3, Data: []byte{192, 0, 2, 1}}}}, 0)
	fmt.Println(r.IPs[0].Address.String(), r.IPs[0].Gateway, r.Routes[0].Dst.String(), r.Routes[0].GW)
	// Output: 192.0.2.10/24 192.0.2.1 0.0.0.0/0 192.0.2.1
}
