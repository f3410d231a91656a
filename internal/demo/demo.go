// Package demo shows linen end to end on one machine: a simulated cluster
// (internal/sim) of hosts as network namespaces on an underlay switch, one
// etcd, `linen daemon` on every host, pods created through the CNI chain on
// each host; then every pod pings every other pod across hosts, TCP is
// probed, and iperf3 measures pod-to-pod throughput beside host-to-host on
// the same underlay. Everything is removed at the end unless Keep; a
// crashed run is swept by the next one.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"text/tabwriter"
	"time"

	"linen.dev/linen/internal/sim"
)

// Options configure Run.
type Options struct {
	Hosts       int
	PodsPerHost int
	Backend     string // vxlan (default), host-gw, udp
	Linen       string // the linen binary ("" = this executable)
	LinenCNI    string // the linen-cni binary
	Out         io.Writer
	Keep        bool          // leave the cluster for `linen cluster`
	IperfTime   time.Duration // 0 = 5 s; negative = skip
}

// Prefix names the demo's cluster.
const Prefix = "ldemo-"

// Run builds the cluster, probes it, prints the results and tears it down.
func Run(ctx context.Context, o Options) (err error) {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Hosts == 0 {
		o.Hosts = 3
	}
	if o.PodsPerHost == 0 {
		o.PodsPerHost = 2
	}
	if o.Backend == "" {
		o.Backend = "vxlan"
	}
	if o.IperfTime == 0 {
		o.IperfTime = 5 * time.Second
	}
	fmt.Fprintf(o.Out, "linen demo: %d hosts x %d pods, backend %s\n", o.Hosts, o.PodsPerHost, o.Backend)
	start := time.Now()
	cl, err := sim.Up(ctx, sim.Options{Prefix: Prefix, Hosts: o.Hosts, PodsPerHost: o.PodsPerHost, Backend: o.Backend,
		IPMasq: true, Linen: o.Linen, LinenCNI: o.LinenCNI, Out: o.Out})
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "==> cluster up in %s\n", time.Since(start).Round(10*time.Millisecond))
	defer func() {
		if o.Keep {
			fmt.Fprintf(o.Out, "==> kept: linen cluster status --name %s; remove with linen cluster down --name %s\n", Prefix[:len(Prefix)-1], Prefix[:len(Prefix)-1])
			return
		}
		cl.Down(context.Background())
		fmt.Fprintln(o.Out, "==> torn down: pods, daemons, etcd and namespaces removed")
	}()

	pods := cl.Pods()
	fmt.Fprintf(o.Out, "==> ping: every pod to every other pod (%d pairs)\n", len(pods)*(len(pods)-1))
	res := sim.PingMatrix(ctx, pods)
	failures := printMatrix(o.Out, pods, res)

	fmt.Fprintln(o.Out, "==> tcp: every pod connects to every other pod")
	tcpFail := 0
	for _, p := range pods {
		stop, err := sim.TCPServer(ctx, p, 7000)
		if err != nil {
			return err
		}
		defer stop()
	}
	for _, s := range pods {
		for _, d := range pods {
			if s.Name == d.Name {
				continue
			}
			if _, err := sim.TCPProbe(s, d.IP, 7000); err != nil {
				tcpFail++
				fmt.Fprintf(o.Out, "    FAIL %v\n", err)
			}
		}
	}
	fmt.Fprintf(o.Out, "    %d/%d connections ok\n", len(pods)*(len(pods)-1)-tcpFail, len(pods)*(len(pods)-1))

	if o.IperfTime > 0 && len(cl.State.Hosts) >= 2 {
		if _, err := exec.LookPath("iperf3"); err != nil {
			fmt.Fprintln(o.Out, "==> throughput: skipped (iperf3 not installed)")
		} else {
			fmt.Fprintf(o.Out, "==> throughput: iperf3, %s, 1 TCP stream\n", o.IperfTime)
			h1, h2 := cl.HostEndpoint(1), cl.HostEndpoint(2)
			var p1, p2 sim.Endpoint
			for _, p := range pods {
				if p.Name[:3] == "h1/" && p1.Name == "" {
					p1 = p
				}
				if p.Name[:3] == "h2/" && p2.Name == "" {
					p2 = p
				}
			}
			tw := tabwriter.NewWriter(o.Out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "    path\tGbit/s\tretransmits\tsender CPU %")
			for _, c := range []struct {
				name     string
				src, dst sim.Endpoint
			}{{"host h1 -> host h2 (underlay)", h1, h2}, {fmt.Sprintf("pod %s -> pod %s (%s)", p1.Name, p2.Name, o.Backend), p1, p2}} {
				r, err := sim.Iperf3(ctx, c.src, c.dst, o.IperfTime, 1)
				if err != nil {
					fmt.Fprintf(tw, "    %s\tfailed: %v\n", c.name, err)
					continue
				}
				fmt.Fprintf(tw, "    %s\t%.1f\t%d\t%.0f\n", c.name, r.Gbps, r.Retransmits, r.SenderCPU)
			}
			tw.Flush()
		}
	}
	if failures+tcpFail > 0 {
		return fmt.Errorf("%d ping and %d TCP probes failed", failures, tcpFail)
	}
	fmt.Fprintf(o.Out, "all %d pods on %d hosts reach each other\n", len(pods), len(cl.State.Hosts))
	return nil
}

// printMatrix prints who reaches whom with the RTT, and returns the number
// of failures.
func printMatrix(w io.Writer, pods []sim.Endpoint, res []sim.Result) int {
	byPair := map[[2]string]sim.Result{}
	for _, r := range res {
		byPair[[2]string{r.Src, r.Dst}] = r
	}
	names := make([]string, len(pods))
	for i, p := range pods {
		names[i] = p.Name
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "    from \\ to")
	for _, n := range names {
		fmt.Fprintf(tw, "\t%s", n)
	}
	fmt.Fprintln(tw)
	failures := 0
	for _, s := range names {
		fmt.Fprintf(tw, "    %s", s)
		for _, d := range names {
			if s == d {
				fmt.Fprint(tw, "\t-")
				continue
			}
			r := byPair[[2]string{s, d}]
			if r.Err != nil {
				failures++
				fmt.Fprint(tw, "\tFAIL")
				continue
			}
			fmt.Fprintf(tw, "\t%.3fms", float64(r.RTT)/float64(time.Millisecond))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	return failures
}
