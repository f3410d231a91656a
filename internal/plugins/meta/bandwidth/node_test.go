package bandwidth

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/ipam/static"
	"linen.dev/linen/internal/plugins/main/bridge"
	"linen.dev/linen/internal/plugins/main/ptp"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

// node is a test host namespace in which the interface plugins (ptp,
// bridge, with static IPAM, all in process) and the bandwidth plugin run.
type node struct {
	host *netns.NS
	h    *netlink.Handle
	env  *pluginmain.Env
	path string // CNI_PATH with the delegate names
}

type pod struct {
	ns   *netns.NS
	id   string
	addr string // the pod's IPv4 address
	gw   string // the host's address towards it
	prev *current.Result
}

func newNode(t *testing.T) *node {
	t.Helper()
	nstest.RequireRoot(t)
	n := &node{host: nstest.New(t), path: t.TempDir()}
	n.h = nfttest.Handle(t, n.host)
	n.env = plugintest.Env(pluginmain.NewRegistry(ptp.Plugin(), bridge.Plugin(), static.Plugin(), Plugin()))
	if err := os.WriteFile(filepath.Join(n.path, "static"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	lo, err := n.h.LinkByName("lo")
	if err == nil {
		err = n.h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("lo up: %v", err)
	}
	return n
}

// requireIFB skips the test when the kernel cannot create IFB devices.
func requireIFB(t *testing.T, n *node) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = "lbwprobe"
	if err := n.h.LinkAdd(&netlink.Ifb{LinkAttrs: la}); err != nil {
		t.Skipf("skipped: this kernel cannot create IFB devices (%v); egress shaping needs the ifb module", err)
	}
	l, err := n.h.LinkByName(la.Name)
	if err != nil {
		t.Fatal(err)
	}
	n.h.LinkDel(l)
}

// ptpPod creates pod number i with the ptp plugin: 10.79.i.2/24 behind
// the host's 10.79.i.1, default route to the host.
func (n *node) ptpPod(t *testing.T, i int) *pod {
	t.Helper()
	p := &pod{ns: nstest.New(t), id: fmt.Sprintf("pod-%d", i), addr: fmt.Sprintf("10.79.%d.2", i), gw: fmt.Sprintf("10.79.%d.1", i)}
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ltbw","type":"ptp","ipam":{"type":"static",
		"addresses":[{"address":"%s/24","gateway":"%s"}],"routes":[{"dst":"0.0.0.0/0"}]}}`, p.addr, p.gw)
	p.prev = plugintest.Add(t, n.host, n.env, ptp.Plugin(), plugintest.Call{ContainerID: p.id, NS: p.ns, IfName: "eth0", Path: n.path, Conf: []byte(conf)})
	return p
}

// bridgePod creates pod number i on bridge "lbwbr0" (gateway 10.80.0.1).
func (n *node) bridgePod(t *testing.T, i int) *pod {
	t.Helper()
	p := &pod{ns: nstest.New(t), id: fmt.Sprintf("brpod-%d", i), addr: fmt.Sprintf("10.80.0.%d", i+2), gw: "10.80.0.1"}
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"ltbw","type":"bridge","bridge":"lbwbr0","isGateway":true,
		"ipam":{"type":"static","addresses":[{"address":"%s/24","gateway":"%s"}],"routes":[{"dst":"0.0.0.0/0"}]}}`, p.addr, p.gw)
	p.prev = plugintest.Add(t, n.host, n.env, bridge.Plugin(), plugintest.Call{ContainerID: p.id, NS: p.ns, IfName: "eth0", Path: n.path, Conf: []byte(conf)})
	return p
}

// bwConf builds the plugin's stdin in version v: extra are top-level keys
// ("" for none), prev the previous result (nil: none).
func bwConf(t testing.TB, v, extra string, prev *current.Result) []byte {
	t.Helper()
	return plugintest.Conf(t, v, map[string]any{"name": "ltbw", "type": "bandwidth"}, extra, prev)
}

func (n *node) call(cmd string, p *pod, conf []byte) ([]byte, *types.Error) {
	c := plugintest.Call{Command: cmd, ContainerID: p.id, NS: p.ns, IfName: "eth0", Path: n.path, Conf: conf}
	return plugintest.Invoke(n.host, n.env, Plugin(), c)
}

func (n *node) must(t *testing.T, cmd string, p *pod, conf []byte) []byte {
	t.Helper()
	out, err := n.call(cmd, p, conf)
	if err != nil {
		t.Fatalf("%s %s: %v (code %d)", cmd, p.id, err, err.Code)
	}
	return out
}

// hostVeth returns the host end of p's veth.
func (n *node) hostVeth(t *testing.T, p *pod) netlink.Link {
	t.Helper()
	l, _, err := hostVeth(n.h, nfttest.Handle(t, p.ns), p.ns, "eth0")
	if err != nil {
		t.Fatalf("host veth of %s: %v", p.id, err)
	}
	return l
}

func (n *node) ifb(p *pod) (netlink.Link, error) {
	return n.h.LinkByName(IFBName("ltbw", p.id, "eth0"))
}

// tcState describes the qdiscs of p's host veth and whether its IFB
// exists, for "nothing changed" comparisons.
func (n *node) tcState(t *testing.T, p *pod) string {
	t.Helper()
	veth := n.hostVeth(t, p)
	qs, err := n.h.QdiscList(veth)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, q := range qs {
		parts = append(parts, fmt.Sprintf("%s %s parent %s", q.Type(), netlink.HandleStr(q.Attrs().Handle), netlink.HandleStr(q.Attrs().Parent)))
	}
	_, err = n.ifb(p)
	parts = append(parts, fmt.Sprintf("ifb present: %v", err == nil))
	return strings.Join(parts, "; ")
}

// tcShow runs tc in the host namespace (to read what the plugin did; the
// plugin itself never runs tc). It skips the test when tc is missing.
func tcShow(t *testing.T, n *node, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("skipped: the tc command is not installed (apt-get install iproute2)")
	}
	out, err := plugintest.Exec(n.host, 10*time.Second, "tc", args...)
	if err != nil {
		t.Fatalf("tc %v: %v", args, err)
	}
	return out
}

// iperfServer runs an iperf3 server in ns on port 5201 until the test
// ends; it returns when the server listens.
func iperfServer(t *testing.T, ns *netns.NS) {
	t.Helper()
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("skipped: iperf3 is not installed (apt-get install iperf3)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, "iperf3", "-s", "-p", "5201")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := ns.Do(cmd.Start); err != nil {
		cancel()
		t.Fatalf("start iperf3 server: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel() // kills the server (by its pid) if still running
		<-done
	})
	for i := 0; i < 100; i++ {
		if listening(ns, 5201) {
			return
		}
		select {
		case <-done:
			t.Fatalf("iperf3 server exited: %s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("iperf3 server not listening after 5 s: %s", out.String())
}

// listening reports whether a TCP socket listens on port in ns.
func listening(ns *netns.NS, port int) bool {
	found := false
	ns.Do(func() error {
		for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			fh, err := os.Open(f)
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(fh)
			for sc.Scan() {
				fields := strings.Fields(sc.Text())
				if len(fields) > 3 && fields[3] == "0A" && strings.HasSuffix(fields[1], fmt.Sprintf(":%04X", port)) {
					found = true
				}
			}
			fh.Close()
		}
		return nil
	})
	return found
}

// iperf measures TCP throughput between a client in ns and the server at
// addr: from the client when reverse is false, to it when true. cap bounds
// the sender (iperf3 -b; "" for none). It returns the bits per second the
// receiver got over 3 s, counted from the start (so a process stalled by
// a busy machine does not move bytes between a warm-up and the count).
func iperf(ns *netns.NS, addr string, reverse bool, cap string) (float64, error) {
	args := []string{"-c", addr, "-p", "5201", "-t", "3", "-J", "--connect-timeout", "3000"}
	if reverse {
		args = append(args, "-R")
	}
	if cap != "" {
		args = append(args, "-b", cap)
	}
	out, err := plugintest.Exec(ns, 30*time.Second, "iperf3", args...)
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil || r.Error != "" || err != nil {
		return 0, fmt.Errorf("iperf3 %v: %v %s", args, err, r.Error)
	}
	return r.End.SumReceived.BitsPerSecond, nil
}

// measure runs iperf until ok accepts a measurement, at most three times:
// the machine is shared, and a run during which the test's processes were
// starved says nothing about the shaper. It returns every measurement and
// whether one was accepted.
func measure(t *testing.T, ns *netns.NS, addr string, reverse bool, cap string, ok func(float64) bool) ([]string, bool) {
	t.Helper()
	var seen []string
	for try := 0; try < 3; try++ {
		got, err := iperf(ns, addr, reverse, cap)
		if err != nil {
			// The server may still be finishing the previous test.
			seen = append(seen, err.Error())
			time.Sleep(500 * time.Millisecond)
			continue
		}
		seen = append(seen, mbit(got))
		if ok(got) {
			return seen, true
		}
	}
	return seen, false
}

func mbit(bps float64) string { return fmt.Sprintf("%.2f Mbit/s", bps/1e6) }
