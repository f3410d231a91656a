package cri

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nft/nfttest"
)

// bridgeConflist is the usual node conflist: bridge with masquerade and
// host-local, then portmap, all of them linen's.
func bridgeConflist(network, bridge, subnet, ipamDir string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[
 {"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":true,"hairpinMode":true,
  "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}]}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}`, network, bridge, ipamDir, subnet)
}

// TestBridgePod: RunPodSandbox through containerd gives the pod an address
// from host-local, eth0 and its routes, a veth on the bridge and nftables
// elements for its host port and masquerade; a client in another namespace
// reaches a server in the pod through the host port; StopPodSandbox (DEL
// with the netns) and RemovePodSandbox (DEL with an empty netns and no
// prevResult) release all of it.
func TestBridgePod(t *testing.T) {
	requireSetup(t)
	ctx := context.Background()
	host, client := newNS(t), newNS(t)
	const network, bridge, subnet = prefix + "br", "lcri0", "10.88.0.0/24"
	ipamDir := filepath.Join(instanceDir("br"), "ipam")
	c := startContainerd(t, containerdOptions{Name: "br", Host: host, Conflist: bridgeConflist(network, bridge, subnet, ipamDir)})

	// The client's link to the host: 198.51.100.2 -> 198.51.100.1.
	nfttest.Veth(t, host, "lcric0", client, "eth0")
	nfttest.Addr(t, host, "lcric0", "198.51.100.1/24")
	nfttest.Addr(t, client, "eth0", "198.51.100.2/24")

	id, took, err := c.runPod(ctx, "web", tcpPort(8080, 18080))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RunPodSandbox took %v", took)
	sb, err := c.status(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if sb.State != criv1.PodSandboxState_SANDBOX_READY {
		t.Fatalf("sandbox state %v, want ready", sb.State)
	}
	if !netip.MustParsePrefix(subnet).Contains(sb.IP) {
		t.Fatalf("pod address %v is not in %s", sb.IP, subnet)
	}
	if !strings.HasPrefix(sb.Netns, c.netnsDir()+"/") {
		t.Errorf("pod netns %s is not under containerd's state %s", sb.Netns, c.netnsDir())
	}

	pod := inspectPod(t, sb.Netns)
	if want := netip.PrefixFrom(sb.IP, 24); len(pod.Addrs) != 1 || pod.Addrs[0] != want {
		t.Errorf("eth0 addresses %v, want [%v]", pod.Addrs, want)
	}
	if gw := pod.Routes["0.0.0.0/0"]; gw != "10.88.0.1" {
		t.Errorf("default route via %q, want 10.88.0.1 (routes %v)", gw, pod.Routes)
	}
	if !pod.LoUp {
		t.Error("lo is down in the pod (containerd's loopback call went to linen-cni's loopback)")
	}
	if l := leases(t, filepath.Join(ipamDir, network)); !strings.HasPrefix(l[sb.IP.String()], id) {
		t.Errorf("lease of %v holds %q, want the sandbox id %s", sb.IP, l[sb.IP.String()], id)
	}
	if len(podCgroups(c, id)) == 0 {
		t.Errorf("no cgroup of the sandbox under %s", cgroupParent(c.name))
	}
	if p := bridgePorts(t, host, bridge); len(p) != 1 {
		t.Errorf("ports of %s: %v, want the pod's veth", bridge, p)
	}
	rs := ruleset(t, host)
	// The host port's map element and the masquerade set's element, each
	// tagged with its owner.
	tag := fmt.Sprintf("comment %q", "net="+network+" id="+id+" if=eth0")
	for _, want := range []string{"tcp . 18080 " + tag + " : " + sb.IP.String() + " . 8080", sb.IP.String() + " " + tag} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rs)
		}
	}

	t.Run("host port", func(t *testing.T) {
		podNS, err := netns.Open(sb.Netns)
		if err != nil {
			t.Fatal(err)
		}
		defer podNS.Close()
		nfttest.EchoTCP(t, podNS, ":8080")
		// From another namespace, through the host's prerouting DNAT: the
		// pod sees the client's own address.
		got, err := nfttest.TCP(client, "198.51.100.1:18080", 3*time.Second)
		if err != nil {
			t.Fatalf("client -> 198.51.100.1:18080: %v", err)
		}
		if from := nfttest.From(got); from != netip.MustParseAddr("198.51.100.2") {
			t.Errorf("pod saw the connection from %v, want 198.51.100.2", from)
		}
		// From the host itself, through the output chain.
		if _, err := nfttest.TCP(host, "198.51.100.1:18080", 3*time.Second); err != nil {
			t.Errorf("host -> 198.51.100.1:18080: %v", err)
		}
		// A port nobody mapped is not forwarded.
		if _, err := nfttest.TCP(client, "198.51.100.1:18081", time.Second); err == nil {
			t.Error("198.51.100.1:18081 answered, but only 18080 is mapped")
		}
	})

	if err := c.stopPod(ctx, id); err != nil {
		t.Fatal(err)
	}
	// After the first DEL (with the netns): the address, the veth and the
	// elements are gone, and so is the namespace.
	if l := leases(t, filepath.Join(ipamDir, network)); len(l) != 0 {
		t.Errorf("leases after StopPodSandbox: %v", l)
	}
	if p := bridgePorts(t, host, bridge); len(p) != 0 {
		t.Errorf("ports of %s after StopPodSandbox: %v", bridge, p)
	}
	if _, err := os.Stat(sb.Netns); !os.IsNotExist(err) {
		t.Errorf("pod netns %s after StopPodSandbox: %v", sb.Netns, err)
	}
	if err := c.removePod(ctx, id); err != nil {
		t.Fatal(err)
	}
	released(t, c, host, bridge, filepath.Join(ipamDir, network), []string{id}, "lcric0")
}

// TestChurn: 50 pods, ten at a time started concurrently and then stopped
// and removed concurrently, each with a host port, on a /27 so that
// addresses are reused; every sandbox gets its own address and nothing is
// left at the end.
func TestChurn(t *testing.T) {
	requireSetup(t)
	ctx := context.Background()
	host := newNS(t)
	const network, bridge, subnet = prefix + "churn", "lcri1", "10.89.0.0/27"
	ipamDir := filepath.Join(instanceDir("churn"), "ipam")
	c := startContainerd(t, containerdOptions{Name: "churn", Host: host, Conflist: bridgeConflist(network, bridge, subnet, ipamDir)})

	const total, batch = 50, 10
	var all []string
	seen := map[netip.Addr]int{}
	for round := 0; round < total/batch; round++ {
		ids := make([]string, batch)
		errs := make([]error, batch)
		var wg sync.WaitGroup
		for i := range batch {
			n := round*batch + i
			wg.Go(func() {
				ids[i], _, errs[i] = c.runPod(ctx, fmt.Sprintf("churn%d", n), tcpPort(80, int32(20000+n)))
			})
		}
		wg.Wait()
		addrs := map[netip.Addr]string{}
		for i, id := range ids {
			if errs[i] != nil {
				t.Fatalf("round %d: %v", round, errs[i])
			}
			all = append(all, id)
			sb, err := c.status(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if !netip.MustParsePrefix(subnet).Contains(sb.IP) || sb.State != criv1.PodSandboxState_SANDBOX_READY {
				t.Fatalf("round %d: sandbox %s: %v %v", round, id, sb.IP, sb.State)
			}
			if other, dup := addrs[sb.IP]; dup {
				t.Fatalf("round %d: %v given to %s and %s", round, sb.IP, other, id)
			}
			addrs[sb.IP] = id
			seen[sb.IP]++
		}
		if p := bridgePorts(t, host, bridge); len(p) != batch {
			t.Errorf("round %d: %d ports on %s, want %d", round, len(p), bridge, batch)
		}
		if l := leases(t, filepath.Join(ipamDir, network)); len(l) != batch {
			t.Errorf("round %d: %d leases, want %d", round, len(l), batch)
		}
		for i, id := range ids {
			wg.Go(func() {
				errs[i] = c.stopPod(ctx, id)
				if errs[i] == nil {
					errs[i] = c.removePod(ctx, id)
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	reused := 0
	for _, n := range seen {
		if n > 1 {
			reused++
		}
	}
	t.Logf("%d pods, %d distinct addresses, %d of them reused", total, len(seen), reused)
	if reused == 0 {
		t.Errorf("no address of the /27 was handed out twice in %d pods", total)
	}
	released(t, c, host, bridge, filepath.Join(ipamDir, network), all)
}
