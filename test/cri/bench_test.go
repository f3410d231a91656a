package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"linen.dev/linen/internal/runtime"
)

// refPluginDir holds the reference plugins (Debian's
// containernetworking-plugins).
const refPluginDir = "/usr/lib/cni"

// TestBenchRunPodSandbox measures RunPodSandbox and Stop+Remove through
// containerd with linen's plugins and with the reference plugins, in the
// same run against the same containerd and the same conflist (bridge with
// masquerade + host-local + portmap with one host port per pod; loopback
// too, which containerd always calls). Only the CNI bin_dir changes: it is
// a symbolic link switched between linen's installation and the reference
// directory, in alternating rounds so that drift in the machine's load
// hits both sides alike. It prints a table; it asserts only that every pod
// got an address and that nothing is left.
//
//	LINEN_CRI_BENCH=200 go test -count=1 -run TestBenchRunPodSandbox -v ./test/cri
func TestBenchRunPodSandbox(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("LINEN_CRI_BENCH"))
	if n <= 0 {
		t.Skip("skipped: a benchmark; set LINEN_CRI_BENCH=<pods per implementation> to run it")
	}
	requireSetup(t)
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(refPluginDir, p)); err != nil {
			t.Skipf("skipped: reference plugin %s not in %s (apt-get install containernetworking-plugins)", p, refPluginDir)
		}
	}
	ctx := context.Background()
	host := newNS(t)
	// Outside the containerd's directory, which is swept when it starts;
	// sweepAll removes it after a crash.
	work := instanceDir("bench-cni")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	linenDir := filepath.Join(work, "linen")
	if _, err := runtime.Install(ctx, runtime.InstallOptions{BinDir: linenDir, From: filepath.Join(binDir, "linen-cni")}); err != nil {
		t.Fatal(err)
	}
	binLink := filepath.Join(work, "cni-bin")
	point := func(target string) {
		tmp := binLink + ".tmp"
		os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, binLink); err != nil {
			t.Fatal(err)
		}
	}
	point(linenDir)
	const network, bridge, subnet = prefix + "bench", "lcri2", "10.90.0.0/22"
	ipamDir := filepath.Join(instanceDir("bench"), "ipam")
	c := startContainerd(t, containerdOptions{Name: "bench", Host: host, BinDir: binLink,
		Conflist: bridgeConflist(network, bridge, subnet, ipamDir)})

	type side struct {
		name     string
		dir      string
		run, del []time.Duration
	}
	sides := []*side{{name: "linen", dir: linenDir}, {name: "reference", dir: refPluginDir}}
	var ids []string
	pod := 0
	cycle := func(s *side, record bool) {
		pod++
		id, took, err := c.runPod(ctx, fmt.Sprintf("b%d", pod), tcpPort(80, int32(20000+pod%10000)))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		ids = append(ids, id)
		if sb, err := c.status(ctx, id); err != nil || !sb.IP.IsValid() {
			t.Fatalf("%s: sandbox %s has no address (%v)", s.name, id, err)
		}
		start := time.Now()
		if err := c.stopPod(ctx, id); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if err := c.removePod(ctx, id); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if record {
			s.run = append(s.run, took)
			s.del = append(s.del, time.Since(start))
		}
	}
	// Warm-up: the first sandboxes after start pay for caches on both sides.
	for _, s := range sides {
		point(s.dir)
		for range 3 {
			cycle(s, false)
		}
	}
	const rounds = 10
	for r := range rounds {
		for k := range sides {
			s := sides[(r+k)%len(sides)] // alternate which side goes first
			point(s.dir)
			for i := r * n / rounds; i < (r+1)*n/rounds; i++ {
				cycle(s, true)
			}
		}
	}
	point(linenDir)

	var b strings.Builder
	fmt.Fprintf(&b, "RunPodSandbox and Stop+Remove through containerd %s, %d pods per side, %d alternating rounds\n", "1.6", n, rounds)
	fmt.Fprintf(&b, "chain: bridge (ipMasq) + host-local + portmap (1 hostPort), loopback\n\n")
	fmt.Fprintf(&b, "| plugins | RunPodSandbox median | p90 | min | max | Stop+Remove median | p90 |\n|---|---|---|---|---|---|---|\n")
	for _, s := range sides {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", s.name, ms(quantile(s.run, 0.5)), ms(quantile(s.run, 0.9)),
			ms(quantile(s.run, 0)), ms(quantile(s.run, 1)), ms(quantile(s.del, 0.5)), ms(quantile(s.del, 0.9)))
	}
	l, r := sides[0], sides[1]
	fmt.Fprintf(&b, "\nlinen / reference: RunPodSandbox median %.2f, p90 %.2f; Stop+Remove median %.2f\n",
		ratio(quantile(l.run, 0.5), quantile(r.run, 0.5)), ratio(quantile(l.run, 0.9), quantile(r.run, 0.9)),
		ratio(quantile(l.del, 0.5), quantile(r.del, 0.5)))
	t.Log("\n" + b.String())

	released(t, c, host, bridge, filepath.Join(ipamDir, network), ids)
}

// quantile is the q-quantile (nearest rank) of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
