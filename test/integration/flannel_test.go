package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/plugintest"
)

// flannelConflist is flannel's standard CNI configuration (cni-conf.json
// of its manifests), byte for byte.
const flannelConflist = `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`

// flannelWorld is a node for the flannel conflist: its files live in a
// temporary directory. The conflist is flannel's with only the three file
// locations pointed there (subnetFile, dataDir, ipam.dataDir), so that the
// test writes nothing outside it; everything else, the bridge cni0
// included (inside the test's host namespace), is the default.
type flannelWorld struct {
	dir, subnetFile, dataDir, ipamDir string
}

func newFlannelWorld(t *testing.T, subnetEnv string) *flannelWorld {
	t.Helper()
	dir := t.TempDir()
	w := &flannelWorld{dir: dir, subnetFile: filepath.Join(dir, "run", "flannel", "subnet.env"),
		dataDir: filepath.Join(dir, "cni", "flannel"), ipamDir: filepath.Join(dir, "cni", "networks")}
	if subnetEnv != "" {
		os.MkdirAll(filepath.Dir(w.subnetFile), 0o755)
		if err := os.WriteFile(w.subnetFile, []byte(subnetEnv), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// conflist returns flannel's conflist at the given version with the file
// locations moved into the world's directory.
func (w *flannelWorld) conflist(t *testing.T, version string) string {
	t.Helper()
	var l map[string]any
	if err := json.Unmarshal([]byte(flannelConflist), &l); err != nil {
		t.Fatal(err)
	}
	l["cniVersion"] = version
	fl := l["plugins"].([]any)[0].(map[string]any)
	fl["subnetFile"] = w.subnetFile
	fl["dataDir"] = w.dataDir
	fl["ipam"] = map[string]any{"dataDir": w.ipamDir}
	b, _ := json.Marshal(l)
	return string(b)
}

func (w *flannelWorld) leases(network string) []string {
	ents, _ := os.ReadDir(filepath.Join(w.ipamDir, network))
	var out []string
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

func (w *flannelWorld) saved() []string {
	ents, _ := os.ReadDir(w.dataDir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

const flannelEnv = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.%d.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"

// TestFlannelStandardConflist runs flannel's standard conflist (type
// "flannel" then portmap, cniVersion 0.3.1) through libcni with the built
// binary: pods get addresses from FLANNEL_SUBNET on cni0 with FLANNEL_MTU,
// reach each other, the gateway and their host ports (also their own,
// through hairpin); after subnet.env is deleted, DEL still releases every
// lease, veth and rule. The delegates are linen's (in process), or the
// reference bridge and host-local (exec'd).
func TestFlannelStandardConflist(t *testing.T) {
	nstest.RequireRoot(t)
	combos := []struct {
		name                string
		bridge, ipam, pmap  string
		version             string
		wantDelegateInProcs bool
	}{
		{"linen", "linen", "linen", "linen", "0.3.1", true},
		{"linen-1.1.0", "linen", "linen", "linen", "1.1.0", true},
		{"ref-bridge+ref-host-local", "ref", "ref", "linen", "0.3.1", false},
	}
	for i, c := range combos {
		t.Run(c.name, func(t *testing.T) {
			host, client := nstest.New(t), nstest.New(t)
			path := mixDir(t, map[string]string{"flannel": "linen", "bridge": c.bridge, "host-local": c.ipam, "portmap": c.pmap})
			rt := newRuntime(t, host, path)
			w := newFlannelWorld(t, fmt.Sprintf(flannelEnv, 30+i))
			list := confList(t, w.conflist(t, c.version))
			subnet := netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", 30+i))

			nfttest.Veth(t, host, "ltn0", client, "ltc0")
			nfttest.Addr(t, host, "ltn0", "198.51.100.1/24")
			nfttest.Addr(t, client, "ltc0", "198.51.100.2/24")

			pods := []*netns.NS{nstest.New(t), nstest.New(t)}
			rtcs := make([]*libcni.RuntimeConf, len(pods))
			var ips []string
			for k, pod := range pods {
				nfttest.EchoTCP(t, pod, "0.0.0.0:80")
				rtcs[k] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("fl%d-%d", i, k), NetNS: pod.Path(), IfName: "eth0",
					Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", fmt.Sprintf("p%d", k)}},
					CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 18180 + k, "containerPort": 80, "protocol": "tcp"}}}}
				res := rt.add(t, list, rtcs[k])
				if len(res.IPs) != 1 {
					t.Fatalf("pod %d: addresses %v", k, res.IPs)
				}
				a, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
				if !subnet.Contains(a) {
					t.Errorf("pod %d: address %s not in FLANNEL_SUBNET %s", k, a, subnet)
				}
				ips = append(ips, a.String())
				l, err := nfttest.Handle(t, pod).LinkByName("eth0")
				if err != nil || l.Attrs().MTU != 1450 {
					t.Errorf("pod %d: eth0 %v %v, want MTU 1450", k, l, err)
				}
				if c.version == "1.1.0" {
					if err := rt.do(t, "CHECK", list, rtcs[k]); err != nil {
						t.Errorf("CHECK pod %d: %v", k, err)
					}
				}
			}
			if _, err := nfttest.Handle(t, host).LinkByName("cni0"); err != nil {
				t.Errorf("no cni0 on the node: %v", err)
			}
			if got := w.saved(); len(got) != 2 {
				t.Errorf("saved delegate configurations %v, want one per pod", got)
			}
			gw := subnet.Addr().Next().String()
			if err := plugintest.Ping(pods[0], gw); err != nil {
				t.Errorf("pod0 -> gateway %s: %v", gw, err)
			}
			if err := plugintest.Ping(pods[0], ips[1]); err != nil {
				t.Errorf("pod0 -> pod1: %v", err)
			}
			for k := range pods {
				if _, err := nfttest.TCP(client, fmt.Sprintf("198.51.100.1:%d", 18180+k), 3*time.Second); err != nil {
					t.Errorf("client -> host port %d: %v", 18180+k, err)
				}
			}
			if c.bridge == "linen" {
				if _, err := nfttest.TCP(pods[0], "198.51.100.1:18180", 3*time.Second); err != nil {
					t.Errorf("pod0 -> its own host port (hairpin): %v", err)
				}
			}
			if c.version == "1.1.0" {
				if err := rt.do(t, "STATUS", list, nil); err != nil {
					t.Errorf("STATUS: %v", err)
				}
			}

			// The daemon stops and its file goes: DEL works all the same.
			if err := os.Remove(w.subnetFile); err != nil {
				t.Fatal(err)
			}
			if c.version == "1.1.0" {
				err := rt.do(t, "STATUS", list, nil)
				var te *types.Error
				if !errors.As(err, &te) || te.Code != 50 || !strings.Contains(te.Msg, "linen daemon (or flanneld)") {
					t.Errorf("STATUS without subnet.env: %v, want code 50", err)
				}
			}
			for k := range pods {
				for n := 0; n < 2; n++ {
					if err := rt.do(t, "DEL", list, rtcs[k]); err != nil {
						t.Errorf("DEL %d of pod %d: %v", n+1, k, err)
					}
				}
			}
			if l := w.leases("cbr0"); len(l) != 0 {
				t.Errorf("leases left: %v", l)
			}
			if s := w.saved(); len(s) != 0 {
				t.Errorf("saved configurations left: %v", s)
			}
			if _, err := nfttest.TCP(client, "198.51.100.1:18180", time.Second); err == nil {
				t.Error("host port still answers after DEL")
			}
			assertClean(t, host, pods)
		})
	}
}

// TestFlannelGC: through libcni at 1.1.0, GC with one valid attachment
// releases the other's lease and saved configuration.
func TestFlannelGC(t *testing.T) {
	nstest.RequireRoot(t)
	host := nstest.New(t)
	rt := newRuntime(t, host, binDir)
	w := newFlannelWorld(t, fmt.Sprintf(flannelEnv, 40))
	list := confList(t, w.conflist(t, "1.1.0"))
	pods := []*netns.NS{nstest.New(t), nstest.New(t)}
	for k, pod := range pods {
		rt.add(t, list, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("flgc%d", k), NetNS: pod.Path(), IfName: "eth0"})
	}
	// A saved configuration and a lease that no cached attachment knows
	// (as after a crash between ADD and the runtime's cache).
	ghost, _ := os.ReadFile(filepath.Join(w.dataDir, "flgc1"))
	if err := os.WriteFile(filepath.Join(w.dataDir, "ghost"), ghost, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.ipamDir, "cbr0", "10.244.40.200"), []byte("ghost\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rt.gc(t, list, []types.GCAttachment{{ContainerID: "flgc0", IfName: "eth0"}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if l := w.leases("cbr0"); len(l) != 1 {
		t.Errorf("leases after GC: %v, want only flgc0's", l)
	}
	if s := w.saved(); len(s) != 1 || s[0] != "flgc0" {
		t.Errorf("saved configurations after GC: %v, want only flgc0", s)
	}
	_ = rt.do(t, "DEL", list, &libcni.RuntimeConf{ContainerID: "flgc0", NetNS: pods[0].Path(), IfName: "eth0"})
	assertClean(t, host, pods)
}

// TestFlannelBinaryAnswers: the binary run as "flannel" without subnet.env:
// ADD answers code 11 naming the file and the daemon; DEL with nothing
// saved succeeds with a warning on stderr.
func TestFlannelBinaryAnswers(t *testing.T) {
	nstest.RequireRoot(t)
	host, pod := nstest.New(t), nstest.New(t)
	w := newFlannelWorld(t, "")
	var l struct {
		Name       string            `json:"name"`
		CNIVersion string            `json:"cniVersion"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	_ = json.Unmarshal([]byte(w.conflist(t, "1.0.0")), &l)
	var p map[string]any
	_ = json.Unmarshal(l.Plugins[0], &p)
	p["name"], p["cniVersion"] = l.Name, l.CNIVersion
	conf, _ := json.Marshal(p)
	env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "flb", "CNI_NETNS": pod.Path(), "CNI_IFNAME": "eth0", "CNI_PATH": binDir}
	r := runPlugin(t, host, "flannel", env, conf)
	if r.Code == 0 {
		t.Fatalf("ADD without subnet.env succeeded: %s", r.Stdout)
	}
	e := r.CNIError(t)
	if e.Code != 11 || e.Msg != "subnet.env not found: is linen daemon (or flanneld) running?" || !strings.Contains(e.Details, w.subnetFile) {
		t.Errorf("error object %+v", e)
	}
	env["CNI_COMMAND"] = "DEL"
	r = runPlugin(t, host, "flannel", env, conf)
	if r.Code != 0 || !strings.Contains(r.Stderr, "nothing to release") {
		t.Errorf("DEL: exit %d stdout %s stderr %q", r.Code, r.Stdout, r.Stderr)
	}
}
