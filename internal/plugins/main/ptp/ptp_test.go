package ptp

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-ptp-") }

func TestReadmeExamples(t *testing.T) {
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		if _, err := parseConfig(ex); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	_, err := parseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"ptp","mtu":10,"ipMasqBackend":"iptables"}`))
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"ipam.type", "mtu", "ipMasqBackend"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q lacks %q", err, w)
		}
	}
}

// A ptp pod reaches the host (its gateway) and another ptp pod through the
// host's routes; DEL removes the host route and the veth.
func TestTraffic(t *testing.T) {
	host, p1, p2 := nstest.New(t), nstest.New(t), nstest.New(t)
	plugintest.RequireRef(t, "host-local")
	env := plugintest.Env(pluginmain.NewRegistry())
	dir := t.TempDir()
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ltptp","type":"ptp","ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.78.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}`, dir))
	r1 := plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "p1", NS: p1, IfName: "eth0", Conf: conf})
	r2 := plugintest.Add(t, host, env, Plugin(), plugintest.Call{ContainerID: "p2", NS: p2, IfName: "eth0", Conf: conf})
	if err := plugintest.Ping(p1, "10.78.0.1"); err != nil {
		t.Errorf("pod -> host gateway: %v", err)
	}
	if err := plugintest.Ping(p1, r2.IPs[0].Address.IP.String()); err != nil {
		t.Errorf("pod -> pod: %v", err)
	}
	if err := plugintest.Ping(host, r1.IPs[0].Address.IP.String()); err != nil {
		t.Errorf("host -> pod: %v", err)
	}
	prev, _ := json.Marshal(r1)
	check := []byte(strings.TrimSuffix(string(conf), "}") + `,"prevResult":` + string(prev) + `}`)
	plugintest.Must(t, host, env, Plugin(), "CHECK", plugintest.Call{ContainerID: "p1", NS: p1, IfName: "eth0", Conf: check})
	for i := 0; i < 2; i++ {
		plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "p1", NS: p1, IfName: "eth0", Conf: conf})
	}
	h, _ := netlink.NewHandleAt(host.Handle())
	defer h.Close()
	if _, err := h.LinkByName(r1.Interfaces[0].Name); err == nil {
		t.Error("host veth left behind")
	}
	routes, _ := h.RouteList(nil, netlink.FAMILY_V4)
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP.Equal(r1.IPs[0].Address.IP) {
			t.Errorf("host route %v left behind", r)
		}
	}
	// A DEL whose configuration does not validate (mtu out of range)
	// still removes the pod's veth and its lease.
	bad := []byte(strings.Replace(string(conf), `"type":"ptp"`, `"type":"ptp","mtu":10`, 1))
	if _, cerr := plugintest.Invoke(host, env, Plugin(), plugintest.Call{Command: "CHECK", ContainerID: "p2", NS: p2, IfName: "eth0", Conf: bad}); cerr == nil {
		t.Fatal("the configuration validates; the test needs one that does not")
	}
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "p2", NS: p2, IfName: "eth0", Conf: bad})
	if _, err := h.LinkByName(r2.Interfaces[0].Name); err == nil {
		t.Error("host veth left behind by a DEL with an invalid configuration")
	}
	if _, err := os.Stat(filepath.Join(dir, "ltptp", r2.IPs[0].Address.IP.String())); !os.IsNotExist(err) {
		t.Errorf("lease not released by a DEL with an invalid configuration: %v", err)
	}
}
