package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/sim"
	"linen.dev/linen/internal/subnetenv"
)

// flannelConflist is flannel's standard conflist, pointed at the host's
// subnet.env and private directories.
func flannelConflist(network, subnetFile, dir string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[
 {"type":"flannel","subnetFile":%q,"dataDir":%q,"delegate":{"hairpinMode":true,"isDefaultGateway":true},
  "ipam":{"dataDir":%q}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}`,
		network, subnetFile, filepath.Join(dir, "flannel"), filepath.Join(dir, "ipam"))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestFlannelTwoHosts: two simulated hosts on one underlay switch share an
// etcd (linen-etcd); each runs `linen daemon` (vxlan) and its own
// containerd with flannel's conflist. A pod on each host gets an address
// of its host's leased subnet and the lease's MTU, and the pods reach each
// other over vxlan with their own addresses (no masquerade inside the
// cluster network). Removing the pods releases their leases and the
// meta-plugin's saved delegate configurations.
func TestFlannelTwoHosts(t *testing.T) {
	requireSetup(t)
	ctx := context.Background()
	cl, err := sim.Up(ctx, sim.Options{Prefix: prefix + "sim-", StateDir: simStateDir(), Hosts: 2, PodsPerHost: 0,
		Backend: "vxlan", IPMasq: true, Linen: filepath.Join(binDir, "linen"), Out: testWriter{t}})
	if err != nil {
		t.Fatalf("cluster up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range cl.State.Hosts {
				if b, err := os.ReadFile(h.Daemon.Log); err == nil {
					t.Logf("daemon log of %s:\n%s", h.Name, b)
				}
			}
		}
		cl.Down(context.Background())
	})

	const network = prefix + "flannel"
	type node struct {
		c    *containerd
		host *netns.NS
		env  *subnetenv.Env
		dir  string
		id   string
		sb   *sandbox
	}
	var nodes []*node
	for i := 1; i <= 2; i++ {
		h := cl.State.Host(i)
		path, err := cl.Target(fmt.Sprintf("h%d", i))
		if err != nil {
			t.Fatal(err)
		}
		host, err := netns.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { host.Close() })
		env, err := subnetenv.Read(h.SubnetFile)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("h%d", i)
		dir := filepath.Join(instanceDir(name), "cni")
		n := &node{host: host, env: env, dir: dir}
		n.c = startContainerd(t, containerdOptions{Name: name, Host: host, Conflist: flannelConflist(network, h.SubnetFile, dir)})
		if n.id, _, err = n.c.runPod(ctx, fmt.Sprintf("pod%d", i)); err != nil {
			t.Fatal(err)
		}
		if n.sb, err = n.c.status(ctx, n.id); err != nil {
			t.Fatal(err)
		}
		if n.sb.State != criv1.PodSandboxState_SANDBOX_READY || !env.Subnet.Masked().Contains(n.sb.IP) {
			t.Fatalf("host %d: pod %v (%v), want an address of the host's subnet %v", i, n.sb.IP, n.sb.State, env.Subnet)
		}
		view := inspectPod(t, n.sb.Netns)
		if view.MTU != env.MTU {
			t.Errorf("host %d: pod eth0 MTU %d, want FLANNEL_MTU %d", i, view.MTU, env.MTU)
		}
		if gw := view.Routes["0.0.0.0/0"]; gw != env.Subnet.Addr().String() {
			t.Errorf("host %d: default route via %q, want %v (routes %v)", i, gw, env.Subnet.Addr(), view.Routes)
		}
		t.Logf("host %d (subnet %v, MTU %d): pod %s %v", i, env.Subnet, env.MTU, n.id[:12], n.sb.IP)
		nodes = append(nodes, n)
	}

	for _, pair := range [][2]*node{{nodes[0], nodes[1]}, {nodes[1], nodes[0]}} {
		src, dst := pair[0], pair[1]
		dstNS, err := netns.Open(dst.sb.Netns)
		if err != nil {
			t.Fatal(err)
		}
		srcNS, err := netns.Open(src.sb.Netns)
		if err != nil {
			dstNS.Close()
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("%v to %v", src.sb.IP, dst.sb.IP), func(t *testing.T) {
			addr := fmt.Sprintf("%v:7000", dst.sb.IP)
			nfttest.EchoTCP(t, dstNS, addr)
			// The vxlan data plane converges within moments of the leases.
			var got string
			var err error
			for deadline := time.Now().Add(10 * time.Second); ; {
				if got, err = nfttest.TCP(srcNS, addr, time.Second); err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("pod %v -> %s: %v", src.sb.IP, addr, err)
			}
			if from := nfttest.From(got); from != src.sb.IP {
				t.Errorf("the pod on the other host saw %v, want the source pod's own %v", from, src.sb.IP)
			}
		})
		srcNS.Close()
		dstNS.Close()
	}

	for i, n := range nodes {
		if err := n.c.stopPod(ctx, n.id); err != nil {
			t.Fatal(err)
		}
		if err := n.c.removePod(ctx, n.id); err != nil {
			t.Fatal(err)
		}
		released(t, n.c, n.host, "cni0", filepath.Join(n.dir, "ipam", network), []string{n.id}, "eth0")
		if saved, _ := os.ReadDir(filepath.Join(n.dir, "flannel")); len(saved) > 0 {
			t.Errorf("host %d: saved delegate configurations left: %v", i+1, saved)
		}
	}
}
