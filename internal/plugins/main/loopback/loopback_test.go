package loopback

import (
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-lo-") }

func TestReadmeExamples(t *testing.T) {
	for _, ex := range plugintest.ReadmeExamples(t, "README.md") {
		var c types.NetConf
		if err := pluginmain.DecodeConf(ex, &c); err != nil || c.Type != "loopback" {
			t.Errorf("%s: %v", ex, err)
		}
	}
}

func TestVerbs(t *testing.T) {
	host, pod := nstest.New(t), nstest.New(t)
	env := plugintest.Env(nil)
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		conf := []byte(`{"cniVersion":"` + v + `","name":"lo","type":"loopback"}`)
		call := plugintest.Call{ContainerID: "c", NS: pod, IfName: "lo", Conf: conf}
		out, cerr := plugintest.Invoke(host, env, Plugin(), withCmd(call, "ADD"))
		if cerr != nil {
			t.Fatalf("%s ADD: %v", v, cerr)
		}
		if len(out) == 0 {
			t.Fatalf("%s: empty result", v)
		}
		if !up(t, pod) {
			t.Fatalf("%s: lo is down after ADD", v)
		}
		if v >= "0.4.0" {
			plugintest.Must(t, host, env, Plugin(), "CHECK", call)
		}
		plugintest.Must(t, host, env, Plugin(), "DEL", call)
		plugintest.Must(t, host, env, Plugin(), "DEL", call)
		if up(t, pod) {
			t.Fatalf("%s: lo is up after DEL", v)
		}
	}
	// DEL with the namespace gone.
	plugintest.Must(t, host, env, Plugin(), "DEL", plugintest.Call{ContainerID: "c", NetnsPath: "/run/netns/lt-lo-gone", IfName: "lo",
		Conf: []byte(`{"cniVersion":"1.0.0","name":"lo","type":"loopback"}`)})
}

func withCmd(c plugintest.Call, cmd string) plugintest.Call { c.Command = cmd; return c }

func up(t *testing.T, ns *netns.NS) bool {
	t.Helper()
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Flags&net.FlagUp != 0
}
