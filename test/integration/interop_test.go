package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/plugintest"
)

// mixDir builds a CNI_PATH directory whose plugins come from linen or from
// the reference package, per name.
func mixDir(t *testing.T, from map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range from {
		var target string
		switch src {
		case "linen":
			target = filepath.Join(binDir, name)
		case "ref":
			requireRef(t, name)
			target = filepath.Join(refDir, name)
		}
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func pmChain(version, br, dataDir, subnet string) string {
	return fmt.Sprintf(`{"cniVersion":%q,"name":"lt-%s","plugins":[
 {"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":true,"hairpinMode":true,
  "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}]}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}`, version, br, br, dataDir, subnet)
}

// TestLibcniChains drives bridge + host-local + portmap through libcni with
// every combination the issue names: all linen, reference bridge with linen
// host-local, linen bridge with reference host-local and portmap. Each pod
// gets an address, reaches its neighbour and, through the host port, a
// client in another namespace; CHECK passes (where the reference plugins
// can); DEL leaves nothing.
func TestLibcniChains(t *testing.T) {
	nstest.RequireRoot(t)
	combos := []struct {
		name             string
		bridge, ipam, pm string
		version          string
	}{
		{"linen", "linen", "linen", "linen", "1.1.0"},
		{"linen-0.4.0", "linen", "linen", "linen", "0.4.0"},
		{"ref-bridge+linen-host-local", "ref", "linen", "linen", "1.0.0"},
		{"linen-bridge+ref-host-local+ref-portmap", "linen", "ref", "ref", "1.0.0"},
	}
	for i, c := range combos {
		t.Run(c.name, func(t *testing.T) {
			host, client := nstest.New(t), nstest.New(t)
			path := mixDir(t, map[string]string{"bridge": c.bridge, "host-local": c.ipam, "portmap": c.pm})
			rt := newRuntime(t, host, path)
			br := fmt.Sprintf("ltix%d", i)
			list := confList(t, pmChain(c.version, br, t.TempDir(), fmt.Sprintf("10.%d.0.0/24", 60+i)))

			// The client reaches the node over 198.51.100.0/24.
			nfttest.Veth(t, host, "ltn0", client, "ltc0")
			nfttest.Addr(t, host, "ltn0", "198.51.100.1/24")
			nfttest.Addr(t, client, "ltc0", "198.51.100.2/24")

			pods := []*netns.NS{nstest.New(t), nstest.New(t)}
			var ips []string
			for k, pod := range pods {
				nfttest.EchoTCP(t, pod, "0.0.0.0:80")
				rtc := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("ix%d-%d", i, k), NetNS: pod.Path(), IfName: "eth0",
					Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", fmt.Sprintf("p%d", k)}},
					CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 18080 + k, "containerPort": 80, "protocol": "tcp"}}}}
				res := rt.add(t, list, rtc)
				if len(res.IPs) == 0 {
					t.Fatalf("pod %d: no IP", k)
				}
				ips = append(ips, res.IPs[0].Address.IP.String())
				if c.pm == "linen" && c.bridge == "linen" {
					if err := rt.do(t, "CHECK", list, rtc); err != nil {
						t.Errorf("CHECK pod %d: %v", k, err)
					}
				}
			}
			if err := plugintest.Ping(pods[0], ips[1]); err != nil {
				t.Errorf("pod0 -> pod1: %v", err)
			}
			if c.pm == "linen" {
				// Hairpin: a pod reaches its own host port through the node.
				if _, err := nfttest.TCP(pods[0], "198.51.100.1:18080", 3*time.Second); err != nil {
					t.Errorf("pod0 -> its own host port: %v", err)
				}
			}
			for k := range pods {
				if _, err := nfttest.TCP(client, fmt.Sprintf("198.51.100.1:%d", 18080+k), 3*time.Second); err != nil {
					t.Errorf("client -> host port %d: %v", 18080+k, err)
				}
			}
			if c.version == "1.1.0" {
				if err := rt.do(t, "STATUS", list, nil); err != nil {
					t.Errorf("STATUS: %v", err)
				}
			}
			for k, pod := range pods {
				rtc := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("ix%d-%d", i, k), NetNS: pod.Path(), IfName: "eth0",
					CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 18080 + k, "containerPort": 80, "protocol": "tcp"}}}}
				if err := rt.do(t, "DEL", list, rtc); err != nil {
					t.Errorf("DEL pod %d: %v", k, err)
				}
				if err := rt.do(t, "DEL", list, rtc); err != nil {
					t.Errorf("second DEL pod %d: %v", k, err)
				}
			}
			if _, err := nfttest.TCP(client, "198.51.100.1:18080", time.Second); err == nil {
				t.Error("host port still answers after DEL")
			}
			assertClean(t, host, pods)
		})
	}
}

// TestGCReleasesStale: with cniVersion 1.1.0, libcni's GC DELs cached
// attachments that are not valid and then sends GC to every plugin, which
// releases what no DEL reached (a lease written behind the cache's back).
func TestGCReleasesStale(t *testing.T) {
	nstest.RequireRoot(t)
	host := nstest.New(t)
	rt := newRuntime(t, host, binDir)
	dataDir := t.TempDir()
	list := confList(t, pmChain("1.1.0", "ltgc0", dataDir, "10.70.0.0/24"))
	pods := []*netns.NS{nstest.New(t), nstest.New(t)}
	for k, pod := range pods {
		rt.add(t, list, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("gc%d", k), NetNS: pod.Path(), IfName: "eth0"})
	}
	// A lease nobody knows about (as after a crash between IPAM and cache).
	leak := filepath.Join(dataDir, "lt-ltgc0", "10.70.0.200")
	if err := os.WriteFile(leak, []byte("ghost\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rt.gc(t, list, []types.GCAttachment{{ContainerID: "gc0", IfName: "eth0"}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if _, err := os.Stat(leak); err == nil {
		t.Error("GC left the unknown lease")
	}
	ents, _ := os.ReadDir(filepath.Join(dataDir, "lt-ltgc0"))
	var leases []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "10.") {
			leases = append(leases, e.Name())
		}
	}
	if len(leases) != 1 {
		t.Errorf("leases after GC: %v, want only gc0's", leases)
	}
	h := nfttest.Handle(t, pods[1])
	if _, err := h.LinkByName("eth0"); err == nil {
		t.Error("GC did not delete the invalid attachment's interface")
	}
	_ = rt.do(t, "DEL", list, &libcni.RuntimeConf{ContainerID: "gc0", NetNS: pods[0].Path(), IfName: "eth0"})
	assertClean(t, host, pods)
}

// TestParallelBinaries: 32 pods added through the binaries at once get
// distinct addresses; 32 DELs at once release them all.
func TestParallelBinaries(t *testing.T) {
	nstest.RequireRoot(t)
	host := nstest.New(t)
	rt := newRuntime(t, host, binDir)
	dataDir := t.TempDir()
	list := confList(t, pmChain("1.1.0", "ltpar0", dataDir, "10.71.0.0/24"))
	const n = 32
	pods := make([]*netns.NS, n)
	for k := range pods {
		pods[k] = nstest.New(t)
	}
	ips := make([]string, n)
	var wg sync.WaitGroup
	for k := range pods {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			res, err := rt.tryAdd(list, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("par%d", k), NetNS: pods[k].Path(), IfName: "eth0",
				CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 19000 + k, "containerPort": 80}}}})
			if err != nil {
				t.Errorf("pod %d: %v", k, err)
				return
			}
			ips[k] = res.IPs[0].Address.IP.String()
		}(k)
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, ip := range ips {
		if ip == "" {
			continue
		}
		if seen[ip] {
			t.Errorf("address %s given twice", ip)
		}
		seen[ip] = true
	}
	for k := range pods {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			if err := rt.do(t, "DEL", list, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("par%d", k), NetNS: pods[k].Path(), IfName: "eth0"}); err != nil {
				t.Errorf("DEL %d: %v", k, err)
			}
		}(k)
	}
	wg.Wait()
	ents, _ := os.ReadDir(filepath.Join(dataDir, "lt-ltpar0"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "10.") {
			t.Errorf("lease %s left", e.Name())
		}
	}
	assertClean(t, host, pods)
}

// assertClean: no veth in the host or the pods, no nftables element.
func assertClean(t *testing.T, host *netns.NS, pods []*netns.NS) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for _, ns := range append([]*netns.NS{host}, pods...) {
			h := nfttest.Handle(t, ns)
			links, _ := h.LinkList()
			for _, l := range links {
				if _, ok := l.(*netlink.Veth); ok && !strings.HasPrefix(l.Attrs().Name, "ltn") {
					left = append(left, l.Attrs().Name)
				}
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("veths left: %v", left)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rs := nfttest.Nft(t, host, "list", "ruleset"); strings.Contains(rs, "elements = {") {
		t.Errorf("nftables elements left:\n%s", rs)
	}
}

// When CNI_PATH resolves the IPAM type to linen-cni itself, bridge runs
// host-local in process; a reference host-local in CNI_PATH is exec'd.
func TestInProcessDelegation(t *testing.T) {
	nstest.RequireRoot(t)
	for _, tc := range []struct {
		ipam, want string
	}{{"linen", "delegate in process"}, {"ref", "delegate by exec"}} {
		t.Run(tc.ipam, func(t *testing.T) {
			host, pod := nstest.New(t), nstest.New(t)
			path := mixDir(t, map[string]string{"bridge": "linen", "host-local": tc.ipam})
			conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ltdel","type":"bridge","bridge":"ltdel0","ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.72.0.0/24"}]]}}`, t.TempDir())
			env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "d1", "CNI_NETNS": pod.Path(), "CNI_IFNAME": "eth0", "CNI_PATH": path, "LINEN_LOG": "debug"}
			r := runPlugin(t, host, "bridge", env, []byte(conf))
			if r.Code != 0 {
				t.Fatalf("ADD: %s %s", r.Stdout, r.Stderr)
			}
			if !strings.Contains(r.Stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, r.Stderr)
			}
			env["CNI_COMMAND"] = "DEL"
			if r := runPlugin(t, host, "bridge", env, []byte(conf)); r.Code != 0 {
				t.Fatalf("DEL: %s %s", r.Stdout, r.Stderr)
			}
		})
	}
}
