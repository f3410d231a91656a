package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"linen.dev/linen/internal/bench"
	"linen.dev/linen/internal/demo"
)

func runBench(ctx context.Context, c *cli, args []string) error {
	return dispatch(ctx, c, "linen bench", []command{
		{"cni", "ADD/DEL latency of linen-cni against the reference plugins", runBenchCNI},
		{"overlay", "cross-host throughput, RTT and control-plane timings per backend", runBenchOverlay},
	}, args)
}

func runBenchCNI(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen bench cni", "[flags]", `
Measure CNI ADD and DEL latency of linen's plugins and of the reference
plugins side by side, in one run, through the same runtime code (libcni, as
containerd links it), and print medians, p90, p99 and the ratios.

Chains: (a) bridge + host-local; (b) bridge with ipMasq + host-local +
portmap with one hostPort per pod, also with many pods already present.
Cases: sequential ADDs then DELs; rounds of concurrent ADDs, then DELs,
each round started after --settle; churn: --concurrency workers at once,
each adding then deleting a pod --rounds times back to back; and for
(b) --scale-sample ADDs (then DELs) onto an empty node and onto a node
with --scale pods already present; the node alternates between the two
states --scale-rounds times, so that a drift of the machine's speed during
the run does not read as growth.

Everything runs inside a network namespace the benchmark creates (lb-*),
removed at the end. Needs root and Debian's containernetworking-plugins.`)
	pods := fs.Int("pods", 200, "sequential ADDs (then DELs) per chain and implementation")
	conc := fs.Int("concurrency", 20, "operations launched at once")
	rounds := fs.Int("rounds", 5, "concurrent rounds")
	scale := fs.Int("scale", 300, "pods present for the scale case of chain (b)")
	sample := fs.Int("scale-sample", 50, "ADDs (then DELs) measured on an empty node and with --scale pods present")
	settle := fs.Duration("settle", time.Second, "pause before each concurrent phase, so that it starts on a settled machine (negative: none)")
	scaleRounds := fs.Int("scale-rounds", 3, "times the node goes from empty to --scale pods and back, --scale-sample split among them")
	chains := fs.String("chains", "a,b", "chains to run: a, b or a,b")
	from := fs.String("linen-cni", defaultFrom(), "linen-cni `binary` to measure")
	ref := fs.String("ref-dir", "/usr/lib/cni", "reference plugin `directory`")
	stateDir := fs.String("state-dir", bench.DefaultStateDir(), "`directory` for the files written per pod (IPAM reservations, result cache, records); a tmpfs keeps the file system's history out of the figures")
	verbose := fs.Bool("v", false, "log failed operations")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("linen bench cni: unexpected argument %q", pos[0])
	}
	o := bench.CNIOptions{
		Pods: *pods, Concurrency: *conc, Rounds: *rounds, ScalePods: *scale, ScaleSample: *sample, ScaleRounds: *scaleRounds, Settle: *settle,
		Chains: strings.Split(*chains, ","), LinenCNI: *from, RefDir: *ref, StateDir: *stateDir, Out: c.stderr,
	}
	if *verbose {
		o.Log = slog.New(slog.NewTextHandler(c.stderr, nil))
	}
	rep, err := bench.RunCNI(ctx, o)
	if rep != nil {
		rep.Print(c.stdout)
	}
	return err
}

func runDemo(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen demo", "[flags]", `
Show linen end to end on this machine: a cluster of hosts simulated with
network namespaces on an underlay switch, one etcd, "linen daemon" on every
host, pods created through the CNI chain on each host. Prints the
pod-to-pod connectivity matrix across hosts and the throughput pod to pod
beside host to host, then removes everything (unless --keep, which leaves
it for "linen cluster"). Needs root, iproute2 and iperf3.`)
	hosts := fs.Int("hosts", 3, "hosts")
	pods := fs.Int("pods", 2, "pods per host")
	be := fs.String("backend", "vxlan", "backend: vxlan, host-gw or udp")
	keep := fs.Bool("keep", false, "leave the cluster in place (linen cluster status --name ldemo)")
	iperf := fs.Duration("iperf-time", 5*time.Second, "iperf3 duration (0 or less: skip)")
	from := fs.String("linen-cni", defaultFrom(), "linen-cni `binary` to install on the hosts")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("linen demo: unexpected argument %q", pos[0])
	}
	it := *iperf
	if it <= 0 {
		it = -1
	}
	if err := demo.Run(ctx, demo.Options{Hosts: *hosts, PodsPerHost: *pods, Backend: *be, LinenCNI: *from,
		Out: c.stdout, Keep: *keep, IperfTime: it}); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}

func runBenchOverlay(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen bench overlay", "[flags]", `
For each backend, build a 2-host simulated cluster (linen cluster) and
measure, in the same run: iperf3 TCP throughput host to host over the
underlay and pod to pod across the hosts (1 and 4 streams), ping RTT of
both, the daemons' CPU time during the pod transfer, the time from a
daemon start to subnet.env, the time from a peer's lease landing in etcd
to its route on the other host, and the daemon's RSS. Needs root and
iperf3.`)
	backends := fs.String("backends", "vxlan,host-gw,udp", "comma-separated backends")
	dur := fs.Duration("time", 10*time.Second, "iperf3 duration per run")
	pings := fs.Int("pings", 50, "pings per RTT figure")
	udpOpts := fs.String("udp-options", "", "extra Backend keys for udp, as JSON members (e.g. '\"Offload\":{\"VnetHdr\":false}')")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("linen bench overlay: unexpected argument %q", pos[0])
	}
	rs, err := bench.RunOverlay(ctx, bench.OverlayOptions{Backends: strings.Split(*backends, ","), Duration: *dur, Pings: *pings,
		BackendJS: map[string]string{"udp": *udpOpts}, Out: c.stderr})
	bench.PrintOverlay(c.stdout, rs)
	return err
}
