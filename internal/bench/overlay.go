package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/sim"
)

// OverlayOptions configure RunOverlay.
type OverlayOptions struct {
	Backends  []string      // default vxlan, host-gw, udp
	Duration  time.Duration // per iperf3 run (default 10 s)
	Pings     int           // per RTT measurement (default 50)
	Linen     string        // linen binary ("" = this executable)
	BackendJS map[string]string
	Out       io.Writer // progress
}

// OverlayResult is one backend's figures.
type OverlayResult struct {
	Backend              string
	Underlay1, Underlay4 *sim.Iperf
	Pod1, Pod4           *sim.Iperf
	UnderlayRTT, PodRTT  time.Duration
	DaemonCPU            float64 // CPU seconds of both daemons per second of the 1-stream pod run
	StartToSubnetEnv     time.Duration
	LeaseToRoute         time.Duration
	DaemonRSSKiB         int
	Errors               []string
}

// RunOverlay measures each backend on a fresh 2-host cluster.
func RunOverlay(ctx context.Context, o OverlayOptions) ([]*OverlayResult, error) {
	if len(o.Backends) == 0 {
		o.Backends = []string{"vxlan", "host-gw", "udp"}
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Pings == 0 {
		o.Pings = 50
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	var out []*OverlayResult
	for _, be := range o.Backends {
		fmt.Fprintf(o.Out, "backend %s ...\n", be)
		r, err := overlayOne(ctx, o, be)
		if err != nil {
			return out, fmt.Errorf("backend %s: %w", be, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func overlayOne(ctx context.Context, o OverlayOptions, be string) (*OverlayResult, error) {
	cl, err := sim.Up(ctx, sim.Options{Prefix: "lbo-", Hosts: 2, PodsPerHost: 1, Backend: be, BackendJSON: o.BackendJS[be],
		IPMasq: true, Linen: o.Linen})
	if err != nil {
		return nil, err
	}
	defer cl.Down(context.Background())
	r := &OverlayResult{Backend: be}
	note := func(what string, err error) {
		if err != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", what, err))
		}
	}
	h1, h2 := cl.HostEndpoint(1), cl.HostEndpoint(2)
	pods := cl.Pods()
	p1, p2 := pods[0], pods[1]

	r.UnderlayRTT, err = sim.Ping(ctx, h1, h2.IP, o.Pings)
	note("underlay ping", err)
	r.PodRTT, err = sim.Ping(ctx, p1, p2.IP, o.Pings)
	note("pod ping", err)
	r.Underlay1, err = sim.Iperf3(ctx, h1, h2, o.Duration, 1)
	note("underlay iperf3 1 stream", err)
	r.Underlay4, err = sim.Iperf3(ctx, h1, h2, o.Duration, 4)
	note("underlay iperf3 4 streams", err)
	cpu0 := daemonsCPU(cl)
	start := time.Now()
	r.Pod1, err = sim.Iperf3(ctx, p1, p2, o.Duration, 1)
	note("pod iperf3 1 stream", err)
	r.DaemonCPU = (daemonsCPU(cl) - cpu0) / time.Since(start).Seconds()
	r.Pod4, err = sim.Iperf3(ctx, p1, p2, o.Duration, 4)
	note("pod iperf3 4 streams", err)
	r.DaemonRSSKiB = rssKiB(cl.State.Host(1).Daemon.Pid)

	// Start to subnet.env: restart host 2's daemon without its subnet.env.
	h := cl.State.Host(2)
	if err := cl.StopDaemon(2); err != nil {
		return nil, err
	}
	os.Remove(h.SubnetFile)
	t0 := time.Now()
	if err := cl.StartDaemon(2); err != nil {
		return nil, err
	}
	for {
		if _, err := os.Stat(h.SubnetFile); err == nil {
			r.StartToSubnetEnv = time.Since(t0)
			break
		}
		if time.Since(t0) > 30*time.Second {
			note("start to subnet.env", fmt.Errorf("no subnet.env after 30 s"))
			break
		}
		time.Sleep(time.Millisecond)
	}

	// Lease to route: host 2's lease is removed (its daemon stopped), host
	// 1 drops the route; host 2 starts again and leases; the time from its
	// "leased subnet" log line to host 1's route (for udp, whose routes live
	// in the daemon, to the first answered ping, polled every ~20 ms).
	d, err := leaseToRoute(ctx, cl)
	r.LeaseToRoute = d
	note("lease to route", err)
	return r, nil
}

func leaseToRoute(ctx context.Context, cl *sim.Cluster) (time.Duration, error) {
	h2 := cl.State.Host(2)
	sub := h2.Pods[0].IP
	if err := cl.StopDaemon(2); err != nil {
		return 0, err
	}
	if out, err := sim.Exec(ctx, "/run/netns/"+cl.State.Switch, 30*time.Second, cl.Linen(), "leases", "delete",
		subnetOf(sub), "--etcd-endpoints", sim.EtcdEndpoint()); err != nil {
		return 0, fmt.Errorf("delete lease: %v: %s", err, out)
	}
	ns, err := netns.Open("/run/netns/" + cl.State.Host(1).Name)
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		return 0, err
	}
	defer h.Close()
	has := func() bool {
		if cl.State.Backend == "udp" {
			// Routes live in the daemon: probe forwarding instead.
			_, err := sim.PingWait(ctx, cl.Pods()[0], sub, 1, 20*time.Millisecond)
			return err == nil
		}
		routes, _ := h.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == subnetOf(sub) {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(20 * time.Second)
	for has() {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("host 1 kept its route to %s", subnetOf(sub))
		}
		time.Sleep(10 * time.Millisecond)
	}
	logSize := fileSize(h2.Daemon.Log)
	if err := cl.StartDaemon(2); err != nil {
		return 0, err
	}
	deadline = time.Now().Add(30 * time.Second)
	for !has() {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("host 1 did not learn %s again", subnetOf(sub))
		}
		time.Sleep(time.Millisecond)
	}
	seen := time.Now()
	leased, err := logTime(h2.Daemon.Log, logSize, "leased subnet")
	if err != nil {
		return 0, err
	}
	return seen.Sub(leased), nil
}

func subnetOf(ip string) string {
	parts := strings.Split(ip, ".")
	return strings.Join(parts[:3], ".") + ".0/24"
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTime finds the first line containing msg after offset in a slog text
// log and returns its time= value.
func logTime(path string, offset int64, msg string) (time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return time.Time{}, err
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, msg) {
			continue
		}
		for _, field := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(field, "time="); ok {
				return time.Parse(time.RFC3339Nano, v)
			}
		}
	}
	return time.Time{}, fmt.Errorf("no %q line in %s", msg, path)
}

// daemonsCPU is the CPU time (s) both daemons have used so far.
func daemonsCPU(cl *sim.Cluster) float64 {
	total := 0.0
	for _, h := range cl.State.Hosts {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.Daemon.Pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 12 {
			ut, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			total += (ut + st) / 100 // USER_HZ
		}
	}
	return total
}

func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// PrintOverlay writes the results as a Markdown table.
func PrintOverlay(w io.Writer, rs []*OverlayResult) {
	g := func(i *sim.Iperf) string {
		if i == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f", i.Gbps)
	}
	retr := func(i *sim.Iperf) string {
		if i == nil {
			return "-"
		}
		return strconv.Itoa(i.Retransmits)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| backend\t underlay 1 / 4 streams (Gbit/s)\t pod to pod 1 / 4 streams (Gbit/s)\t pod/underlay (1 stream)\t retransmits pod 1 stream\t RTT underlay / pod (µs)\t daemon CPU during pod run (cores)\t start to subnet.env (ms)\t lease to route (ms)\t daemon RSS (MiB) |")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t--- |")
	for _, r := range rs {
		ratio := "-"
		if r.Underlay1 != nil && r.Pod1 != nil && r.Underlay1.Gbps > 0 {
			ratio = fmt.Sprintf("%.2f", r.Pod1.Gbps/r.Underlay1.Gbps)
		}
		fmt.Fprintf(tw, "| %s\t %s / %s\t %s / %s\t %s\t %s\t %d / %d\t %.2f\t %.0f\t %.1f\t %.1f |\n",
			r.Backend, g(r.Underlay1), g(r.Underlay4), g(r.Pod1), g(r.Pod4), ratio, retr(r.Pod1),
			r.UnderlayRTT.Microseconds(), r.PodRTT.Microseconds(), r.DaemonCPU,
			float64(r.StartToSubnetEnv)/float64(time.Millisecond), float64(r.LeaseToRoute)/float64(time.Millisecond),
			float64(r.DaemonRSSKiB)/1024)
	}
	tw.Flush()
	for _, r := range rs {
		for _, e := range r.Errors {
			fmt.Fprintf(w, "- %s: %s\n", r.Backend, e)
		}
	}
}
