package linen

// Namespace tests: the meta-plugin with linen's bridge and host-local in
// process, run from a thread inside a test "host" namespace.

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/ipam/hostlocal"
	"linen.dev/linen/internal/plugins/main/bridge"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

// node is one test's node: a host namespace, subnet.env, the plugin's and
// host-local's directories, and a CNI_PATH that names the delegates (they
// run in process).
type node struct {
	host       *netns.NS
	env        *pluginmain.Env
	path       string
	subnetFile string
	dataDir    string
	ipamDir    string
	bridge     string
}

func newNode(t *testing.T, br, subnetEnv string) *node {
	t.Helper()
	nstest.RequireRoot(t)
	dir := t.TempDir()
	n := &node{
		host: nstest.New(t), env: plugintest.Env(pluginmain.NewRegistry(bridge.Plugin(), hostlocal.Plugin())),
		path: filepath.Join(dir, "bin"), subnetFile: filepath.Join(dir, "subnet.env"),
		dataDir: filepath.Join(dir, "flannel"), ipamDir: filepath.Join(dir, "ipam"), bridge: br,
	}
	os.MkdirAll(n.path, 0o755)
	for _, p := range []string{"bridge", "host-local"} {
		if err := os.WriteFile(filepath.Join(n.path, p), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(n.subnetFile, []byte(subnetEnv), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *node) conf(version string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"ltflan","type":"flannel","subnetFile":%q,"dataDir":%q,
		"delegate":{"bridge":%q,"hairpinMode":true,"isDefaultGateway":true},"ipam":{"dataDir":%q}}`,
		version, n.subnetFile, n.dataDir, n.bridge, n.ipamDir))
}

func (n *node) call(id string, pod *netns.NS, conf []byte) plugintest.Call {
	return plugintest.Call{ContainerID: id, NS: pod, IfName: "eth0", Path: n.path, Conf: conf}
}

// leases lists host-local's reservations of the network.
func (n *node) leases(t *testing.T) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(n.ipamDir, "ltflan"))
	var out []string
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

func withPrevResult(t *testing.T, conf []byte, res *current.Result) []byte {
	t.Helper()
	var head struct {
		CNIVersion string `json:"cniVersion"`
	}
	_ = json.Unmarshal(conf, &head)
	conv, err := res.GetAsVersion(head.CNIVersion)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(conv)
	s := strings.TrimSpace(string(conf))
	return []byte(s[:len(s)-1] + `,"prevResult":` + string(b) + `}`)
}

func linkIn(t *testing.T, ns *netns.NS, name string) netlink.Link {
	t.Helper()
	l, err := nfttest.Handle(t, ns).LinkByName(name)
	if err != nil {
		return nil
	}
	return l
}

// TestPodsOnNodeSubnet: pods get addresses from FLANNEL_SUBNET on the
// bridge, with FLANNEL_MTU, a route to FLANNEL_NETWORK and a default
// route; they reach the gateway and each other; CHECK and STATUS pass;
// DEL releases everything, also after subnet.env was deleted; STATUS then
// says code 50.
func TestPodsOnNodeSubnet(t *testing.T) {
	tests := []struct {
		name, br, env string
		want          []string // subnets of the pod's addresses
		gws           []string
	}{
		{"ipv4", "ltfl4", "FLANNEL_NETWORK=10.80.0.0/16\nFLANNEL_SUBNET=10.80.7.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n",
			[]string{"10.80.7.0/24"}, []string{"10.80.7.1"}},
		{"dual-stack", "ltfl6", "FLANNEL_NETWORK=10.81.0.0/16\nFLANNEL_SUBNET=10.81.3.1/24\nFLANNEL_IPV6_NETWORK=fd00:81::/56\nFLANNEL_IPV6_SUBNET=fd00:81:0:3::1/64\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n",
			[]string{"10.81.3.0/24", "fd00:81:0:3::/64"}, []string{"10.81.3.1", "fd00:81:0:3::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, tt.br, tt.env)
			conf := n.conf("1.1.0")
			pods := []*netns.NS{nstest.New(t), nstest.New(t)}
			var res []*current.Result
			for k, pod := range pods {
				r := plugintest.Add(t, n.host, n.env, Plugin(), n.call(fmt.Sprintf("p%d", k), pod, conf))
				res = append(res, r)
				if len(r.IPs) != len(tt.want) {
					t.Fatalf("pod %d: %d addresses, want %d: %v", k, len(r.IPs), len(tt.want), r.IPs)
				}
				for i, ip := range r.IPs {
					p, _ := netip.ParsePrefix(ip.Address.String())
					if p.Masked().String() != tt.want[i] {
						t.Errorf("pod %d: address %s not in %s", k, p, tt.want[i])
					}
					if ip.Gateway.String() != tt.gws[i] {
						t.Errorf("pod %d: gateway %s, want %s", k, ip.Gateway, tt.gws[i])
					}
				}
			}
			// The bridge carries the gateways; the pods have the MTU and
			// the routes.
			br := linkIn(t, n.host, tt.br)
			if br == nil {
				t.Fatalf("no bridge %s", tt.br)
			}
			addrs, _ := nfttest.Handle(t, n.host).AddrList(br, netlink.FAMILY_ALL)
			for _, gw := range tt.gws {
				found := false
				for _, a := range addrs {
					found = found || a.IP.String() == gw
				}
				if !found {
					t.Errorf("bridge lacks gateway %s: %v", gw, addrs)
				}
			}
			eth0 := linkIn(t, pods[0], "eth0")
			if eth0 == nil || eth0.Attrs().MTU != 1400 {
				t.Errorf("pod eth0 %v, want MTU 1400", eth0)
			}
			routes, _ := nfttest.Handle(t, pods[0]).RouteList(eth0, netlink.FAMILY_V4)
			var dsts []string
			for _, r := range routes {
				if ones, _ := r.Dst.Mask.Size(); r.Dst == nil || ones == 0 {
					dsts = append(dsts, "default")
				} else {
					dsts = append(dsts, r.Dst.String())
				}
			}
			net4 := strings.TrimPrefix(strings.Split(tt.env, "\n")[0], "FLANNEL_NETWORK=")
			if !contains(dsts, net4) || !contains(dsts, "default") {
				t.Errorf("pod routes %v, want %s and default", dsts, net4)
			}
			for _, gw := range tt.gws {
				if err := plugintest.Ping(pods[0], gw); err != nil {
					t.Errorf("pod0 -> gateway %s: %v", gw, err)
				}
			}
			for _, ip := range res[1].IPs {
				if err := plugintest.Ping(pods[0], ip.Address.IP.String()); err != nil {
					t.Errorf("pod0 -> pod1 %s: %v", ip.Address.IP, err)
				}
			}
			for k, pod := range pods {
				plugintest.Must(t, n.host, n.env, Plugin(), "CHECK", n.call(fmt.Sprintf("p%d", k), pod, withPrevResult(t, conf, res[k])))
			}
			plugintest.Must(t, n.host, n.env, Plugin(), "STATUS", plugintest.Call{Path: n.path, Conf: conf})
			if got := len(n.leases(t)); got != 2*len(tt.want) {
				t.Errorf("%d leases, want %d", got, 2*len(tt.want))
			}

			// pod0: an ordinary DEL.
			hostVeth0 := res[0].Interfaces[1].Name
			plugintest.Must(t, n.host, n.env, Plugin(), "DEL", n.call("p0", pods[0], withPrevResult(t, conf, res[0])))
			if linkIn(t, pods[0], "eth0") != nil || linkIn(t, n.host, hostVeth0) != nil {
				t.Error("pod0's veth survived DEL")
			}
			if _, err := os.Stat(filepath.Join(n.dataDir, "p0")); err == nil {
				t.Error("pod0's saved configuration survived DEL")
			}

			// pod1: the daemon is gone; DEL still releases the lease and
			// the veth, from the saved configuration.
			if err := os.Remove(n.subnetFile); err != nil {
				t.Fatal(err)
			}
			hostVeth1 := res[1].Interfaces[1].Name
			plugintest.Must(t, n.host, n.env, Plugin(), "DEL", n.call("p1", pods[1], conf))
			if linkIn(t, pods[1], "eth0") != nil || linkIn(t, n.host, hostVeth1) != nil {
				t.Error("pod1's veth survived DEL without subnet.env")
			}
			if l := n.leases(t); len(l) != 0 {
				t.Errorf("leases left: %v", l)
			}
			// Repeated DELs, one without the namespace, succeed.
			plugintest.Must(t, n.host, n.env, Plugin(), "DEL", n.call("p1", pods[1], conf))
			plugintest.Must(t, n.host, n.env, Plugin(), "DEL", plugintest.Call{ContainerID: "p0", IfName: "eth0", Path: n.path, Conf: conf})

			_, cerr := plugintest.Invoke(n.host, n.env, Plugin(), plugintest.Call{Command: "STATUS", Path: n.path, Conf: conf})
			if cerr == nil || cerr.Code != 50 {
				t.Errorf("STATUS without subnet.env: %v, want code 50", cerr)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestGCReleasesInvalid: GC with only pod0 valid releases pod1's lease and
// saved configuration (pod1's veth is left to the runtime's DEL, as for
// the bridge plugin) and keeps pod0's.
func TestGCReleasesInvalid(t *testing.T) {
	n := newNode(t, "ltflgc", "FLANNEL_NETWORK=10.82.0.0/16\nFLANNEL_SUBNET=10.82.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
	conf := n.conf("1.1.0")
	pods := []*netns.NS{nstest.New(t), nstest.New(t)}
	var ips []string
	for k, pod := range pods {
		r := plugintest.Add(t, n.host, n.env, Plugin(), n.call(fmt.Sprintf("g%d", k), pod, conf))
		ips = append(ips, r.IPs[0].Address.IP.String())
	}
	s := strings.TrimSpace(string(conf))
	gc := []byte(s[:len(s)-1] + `,"cni.dev/valid-attachments":[{"containerID":"g0","ifname":"eth0"}]}`)
	plugintest.Must(t, n.host, n.env, Plugin(), "GC", plugintest.Call{Path: n.path, Conf: gc})
	if l := n.leases(t); len(l) != 1 || l[0] != ips[0] {
		t.Errorf("leases after GC %v, want only %s", l, ips[0])
	}
	ids, _ := savedIDs(n.dataDir)
	if len(ids) != 1 || ids[0] != "g0" {
		t.Errorf("saved configurations after GC: %v", ids)
	}
	if err := plugintest.Ping(pods[0], "10.82.5.1"); err != nil {
		t.Errorf("the valid pod lost its network: %v", err)
	}
	for k, pod := range pods {
		plugintest.Must(t, n.host, n.env, Plugin(), "DEL", n.call(fmt.Sprintf("g%d", k), pod, conf))
	}
	if l := n.leases(t); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
}
