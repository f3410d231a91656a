package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"linen.dev/linen/internal/netns"
)

// Endpoint is a pod or a host as a probe source or target.
type Endpoint struct {
	Name  string // "h1/pod1"
	Netns string
	IP    string
}

// Pods lists every pod of the cluster as an endpoint.
func (c *Cluster) Pods() []Endpoint {
	var out []Endpoint
	for _, h := range c.State.Hosts {
		for _, p := range h.Pods {
			out = append(out, Endpoint{Name: fmt.Sprintf("h%d/%s", h.Index, p.Name), Netns: p.Netns, IP: p.IP})
		}
	}
	return out
}

// HostEndpoint is host i on the underlay.
func (c *Cluster) HostEndpoint(i int) Endpoint {
	h := c.State.Host(i)
	return Endpoint{Name: fmt.Sprintf("h%d", i), Netns: nsPath(h.Name), IP: h.Addr}
}

// Exec runs a command from inside ns and returns its combined output.
func Exec(ctx context.Context, nsPath string, timeout time.Duration, argv ...string) (string, error) {
	ns, err := netns.Open(nsPath)
	if err != nil {
		return "", err
	}
	defer ns.Close()
	var out []byte
	var rerr error
	err = ns.Do(func() error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		out, rerr = exec.CommandContext(cctx, argv[0], argv[1:]...).CombinedOutput()
		return nil
	})
	if err != nil {
		return "", err
	}
	return string(out), rerr
}

var pingRTT = regexp.MustCompile(`= [\d.]+/([\d.]+)/`)

// Ping sends count echo requests from src to dst; it returns the average
// round-trip time.
func Ping(ctx context.Context, src Endpoint, dst string, count int) (time.Duration, error) {
	return PingWait(ctx, src, dst, count, time.Second)
}

// PingWait is Ping with a per-reply timeout.
func PingWait(ctx context.Context, src Endpoint, dst string, count int, wait time.Duration) (time.Duration, error) {
	w := strconv.FormatFloat(wait.Seconds(), 'f', 3, 64)
	out, err := Exec(ctx, src.Netns, time.Duration(count+5)*time.Second, "ping", "-c", strconv.Itoa(count), "-i", "0.2", "-W", w, "-q", dst)
	if err != nil {
		return 0, fmt.Errorf("ping %s from %s: %v: %s", dst, src.Name, err, out)
	}
	m := pingRTT.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("ping %s from %s: no statistics in %q", dst, src.Name, out)
	}
	ms, _ := strconv.ParseFloat(m[1], 64)
	return time.Duration(ms * float64(time.Millisecond)), nil
}

// Result is one probe from src to dst.
type Result struct {
	Src, Dst string
	RTT      time.Duration
	Err      error
}

// PingMatrix pings every endpoint from every other one, a few at a time.
func PingMatrix(ctx context.Context, eps []Endpoint) []Result {
	var out []Result
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, s := range eps {
		for _, d := range eps {
			if s.Name == d.Name {
				continue
			}
			wg.Add(1)
			go func(s, d Endpoint) {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				rtt, err := Ping(ctx, s, d.IP, 3)
				mu.Lock()
				out = append(out, Result{Src: s.Name, Dst: d.Name, RTT: rtt, Err: err})
				mu.Unlock()
			}(s, d)
		}
	}
	wg.Wait()
	return out
}

// TCPServer listens on port inside ep's namespace and echoes one line per
// connection until ctx ends.
func TCPServer(ctx context.Context, ep Endpoint, port int) (stop func(), err error) {
	ns, err := netns.Open(ep.Netns)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(ep.IP, strconv.Itoa(port)))
		return err
	}); err != nil {
		return nil, err
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.Copy(conn, io.LimitReader(conn, 1<<20))
			}()
		}
	}()
	cctx, cancel := context.WithCancel(ctx)
	go func() { <-cctx.Done(); ln.Close() }()
	return cancel, nil
}

// TCPProbe connects from src to dst:port, sends a line and reads it back.
func TCPProbe(src Endpoint, dst string, port int) (time.Duration, error) {
	ns, err := netns.Open(src.Netns)
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	var conn net.Conn
	start := time.Now()
	if err := ns.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(dst, strconv.Itoa(port)), 3*time.Second)
		return err
	}); err != nil {
		return 0, fmt.Errorf("tcp %s:%d from %s: %w", dst, port, src.Name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	msg := []byte("linen\n")
	if _, err := conn.Write(msg); err != nil {
		return 0, err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return 0, fmt.Errorf("tcp %s:%d from %s: %w", dst, port, src.Name, err)
	}
	return time.Since(start), nil
}

// Iperf is one iperf3 measurement.
type Iperf struct {
	Gbps        float64
	Retransmits int
	SenderCPU   float64 // % of one core
	ReceiverCPU float64
}

// Iperf3 runs an iperf3 server in dst and a client in src for dur with
// streams parallel streams.
func Iperf3(ctx context.Context, src, dst Endpoint, dur time.Duration, streams int) (*Iperf, error) {
	ns, err := netns.Open(dst.Netns)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	srv := exec.Command("iperf3", "-s", "-1", "-B", dst.IP, "-p", "5201")
	if err := ns.Do(func() error { return srv.Start() }); err != nil {
		return nil, fmt.Errorf("start iperf3 server: %w", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(200 * time.Millisecond)
	secs := strconv.Itoa(int(dur.Seconds()))
	out, err := Exec(ctx, src.Netns, dur+20*time.Second, "iperf3", "-c", dst.IP, "-p", "5201", "-t", secs, "-P", strconv.Itoa(streams), "-J")
	if err != nil {
		return nil, fmt.Errorf("iperf3 %s -> %s: %v: %s", src.Name, dst.Name, err, out)
	}
	var r struct {
		End struct {
			SumSent     struct{ Retransmits int } `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				Host   float64 `json:"host_total"`
				Remote float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, fmt.Errorf("iperf3 output: %w", err)
	}
	return &Iperf{Gbps: r.End.SumReceived.BitsPerSecond / 1e9, Retransmits: r.End.SumSent.Retransmits,
		SenderCPU: r.End.CPU.Host, ReceiverCPU: r.End.CPU.Remote}, nil
}

// Target resolves "hN", "hN/POD" or "sw" to a namespace path.
func (c *Cluster) Target(t string) (string, error) {
	if t == "sw" {
		return nsPath(c.State.Switch), nil
	}
	host, pod, _ := strings.Cut(t, "/")
	i, err := strconv.Atoi(strings.TrimPrefix(host, "h"))
	if err != nil || !strings.HasPrefix(host, "h") {
		return "", fmt.Errorf("target %q: want hN, hN/POD or sw", t)
	}
	h := c.State.Host(i)
	if h == nil {
		return "", fmt.Errorf("target %q: no host %d", t, i)
	}
	if pod == "" {
		return nsPath(h.Name), nil
	}
	for _, p := range h.Pods {
		if p.Name == pod {
			return p.Netns, nil
		}
	}
	return "", fmt.Errorf("target %q: host %d has no pod %q", t, i, pod)
}
