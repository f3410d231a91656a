package udp

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/overlay/backend/backendtest"
	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/backend/vxlan"
	"linen.dev/linen/internal/overlay/subnet"
)

// EnvBench turns on TestThroughput (it takes a minute or more and measures
// rather than checks): LINEN_UDP_BENCH=1, or a comma-separated list of the
// case names to run.
const EnvBench = "LINEN_UDP_BENCH"

// benchCases are the offload steps measured, from flannel's data path to
// everything on; "underlay" is host to host over the same veth/bridge
// underlay, no backend involved.
var benchCases = []struct{ name, backend string }{
	{"underlay", ""},
	{"kernel-vxlan", "vxlan"},
	{"none", `{"Type":"udp","Offload":{"VnetHdr":false,"TCPGRO":false,"UDPGSO":false,"UDPGRO":false,"Batch":1,"SocketBuffer":0}}`},
	{"batch", `{"Type":"udp","Offload":{"VnetHdr":false,"TCPGRO":false,"UDPGSO":false,"UDPGRO":false,"Batch":64,"SocketBuffer":0}}`},
	{"batch+sockbuf", `{"Type":"udp","Offload":{"VnetHdr":false,"TCPGRO":false,"UDPGSO":false,"UDPGRO":false}}`},
	{"+udpgso/gro", `{"Type":"udp","Offload":{"VnetHdr":false,"TCPGRO":false}}`},
	{"+vnethdr(tso)", `{"Type":"udp","Offload":{"TCPGRO":false}}`},
	{"all(+tcpgro)", `{"Type":"udp"}`},
	{"vnethdr+tcpgro only", `{"Type":"udp","Offload":{"UDPGSO":false,"UDPGRO":false}}`},
}

// TestThroughput measures single-stream TCP throughput with iperf3 (10 s)
// between two pods on different hosts for each offload step, and host to
// host on the underlay, and logs a table: receiver Gbit/s, retransmits,
// iperf3's sender and receiver CPU, and the CPU the two backends used (this
// process), per second of transfer. It asserts nothing about speed.
//
//	LINEN_UDP_BENCH=1 go test -count=1 -run TestThroughput -v ./internal/overlay/backend/udp
func TestThroughput(t *testing.T) {
	sel := os.Getenv(EnvBench)
	if sel == "" {
		t.Skipf("set %s=1 to measure", EnvBench)
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("skipped: iperf3 not installed (apt-get install iperf3)")
	}
	dur := 10
	var rows []string
	for _, bc := range benchCases {
		if sel != "1" && !strings.Contains(","+sel+",", ","+bc.name+",") {
			continue
		}
		t.Run(bc.name, func(t *testing.T) {
			c := backendtest.New(t, 2, false)
			src, dst, dstIP := c.Hosts[0].NS, c.Hosts[1].NS, c.Hosts[1].Ext.IfaceAddr.String()
			var nodes []*node
			if bc.backend == "vxlan" {
				startVXLAN(t, c)
				src, dst, dstIP = c.Hosts[0].Pod, c.Hosts[1].Pod, c.Hosts[1].PodIP.String()
				if err := backendtest.Ping(src, c.Hosts[1].PodIP); err != nil {
					t.Fatal(err)
				}
			} else if bc.backend != "" {
				for _, h := range c.Hosts {
					nodes = append(nodes, start(t, c, h, bc.backend))
				}
				syncAll(t, nodes)
				src, dst, dstIP = c.Hosts[0].Pod, c.Hosts[1].Pod, c.Hosts[1].PodIP.String()
				if err := backendtest.Ping(src, c.Hosts[1].PodIP); err != nil {
					t.Fatal(err)
				}
			}
			rtt := pingRTT(src, dstIP)
			idle := waitIdle(85, 60*time.Second)
			m0 := machineBusy()
			r, err := iperf(src, dst, dstIP, dur)
			if err != nil {
				t.Fatal(err)
			}
			busy := machineBusy().since(m0)
			row := fmt.Sprintf("%-20s %6.2f Gbit/s  retr %6d  rtt %s  iperf3 cpu snd %5.1f%% rcv %5.1f%%  backends %5.1f%%  machine %5.1f%% (idle before %3.0f%%)",
				bc.name, r.gbps, r.retr, rtt, r.cpuSnd, r.cpuRcv, r.backendCPU, busy, idle)
			if len(nodes) > 0 {
				st := nodes[0].b.Stats()
				rst := nodes[1].b.Stats()
				row += fmt.Sprintf("  tx: %d reads %d super %d sends/%d dgrams  rx: %d calls %d gro %d writes/%d pkts",
					st["tun_reads"], st["tun_rx_super_packets"], st["udp_tx_sends"], st["udp_tx_datagrams"],
					rst["udp_rx_calls"], rst["udp_rx_gro_buffers"], rst["tun_writes"], rst["tun_write_packets"])
			}
			t.Log(row)
			rows = append(rows, row)
		})
	}
	t.Logf("single-stream TCP, %d s, iperf3 receiver rate:\n%s", dur, strings.Join(rows, "\n"))
}

// pingRTT returns ping's "min/avg/max" of 50 echo requests 20 ms apart.
func pingRTT(ns *netns.NS, ip string) string {
	out, err := backendtest.Exec(ns, 20*time.Second, "ping", "-n", "-q", "-c", "50", "-i", "0.02", ip)
	if err != nil {
		return "?"
	}
	_, after, ok := strings.Cut(out, " = ")
	if !ok {
		return "?"
	}
	v, _, _ := strings.Cut(after, "/")
	rest := strings.Fields(strings.TrimPrefix(after, v+"/"))
	if len(rest) == 0 {
		return "?"
	}
	parts := strings.Split(rest[0], "/") // avg/max/mdev
	return v + "/" + parts[0] + "/" + parts[1] + "ms"
}

// startVXLAN runs linen's vxlan backend (the kernel's VXLAN data path) on
// every host of c, for a reference measured in the same run.
func startVXLAN(t *testing.T, c *backendtest.Cluster) {
	var all []subnet.Lease
	var bs []*vxlan.Backend
	for _, h := range c.Hosts {
		err := h.NS.Do(func() error {
			b, err := vxlan.New(c.NetConfig("vxlan", `{"Type":"vxlan"}`), h.Ext, dataplane.Options{Resync: -1})
			if err != nil {
				return err
			}
			t.Cleanup(func() { b.Close() })
			attrs, err := b.Prepare(context.Background())
			if err != nil {
				return err
			}
			l := h.Lease(attrs)
			all = append(all, l)
			bs = append(bs, b)
			return b.Configure(l)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range bs {
		if err := c.Hosts[i].NS.Do(func() error { return b.Sync(all) }); err != nil {
			t.Fatal(err)
		}
	}
}

type iperfResult struct {
	gbps           float64
	retr           int
	cpuSnd, cpuRcv float64
	backendCPU     float64 // % of one core used by this process during the run
}

// iperf runs an iperf3 server in dst and a client in src for dur seconds.
func iperf(src, dst *netns.NS, dstIP string, dur int) (iperfResult, error) {
	var res iperfResult
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(dur+30)*time.Second)
	defer cancel()
	srv := exec.CommandContext(ctx, "iperf3", "-s", "-1", "-B", dstIP)
	if err := dst.Do(srv.Start); err != nil {
		return res, err
	}
	defer srv.Wait()
	defer srv.Process.Kill()
	var j iperfJSON
	for try := 0; ; try++ {
		var out []byte
		var runErr error
		var ru0, ru1 unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru0)
		start := time.Now()
		if err := src.Do(func() error {
			out, runErr = exec.CommandContext(ctx, "iperf3", "-c", dstIP, "-t", fmt.Sprint(dur), "-J").Output()
			return nil
		}); err != nil {
			return res, err
		}
		unix.Getrusage(unix.RUSAGE_SELF, &ru1)
		cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
		res.backendCPU = 100 * cpu.Seconds() / time.Since(start).Seconds()
		j = iperfJSON{}
		jerr := json.Unmarshal(out, &j)
		msg := j.Error + string(out)
		if try < 50 && (strings.Contains(msg, "Connection refused") || strings.Contains(msg, "unable to connect")) {
			time.Sleep(100 * time.Millisecond) // the server is not listening yet
			continue
		}
		if jerr != nil {
			return res, fmt.Errorf("iperf3 client: %v, JSON: %v: %s", runErr, jerr, out)
		}
		if j.Error != "" {
			return res, fmt.Errorf("iperf3: %s", j.Error)
		}
		break
	}
	res.gbps = j.End.SumReceived.BitsPerSecond / 1e9
	res.retr = j.End.SumSent.Retransmits
	res.cpuSnd, res.cpuRcv = j.End.CPU.HostTotal, j.End.CPU.RemoteTotal
	return res, nil
}

// iperfJSON is the part of iperf3 -J's output used here.
type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		CPU struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
}

// cpuSample is a reading of /proc/stat's first line.
type cpuSample struct{ busy, total uint64 }

func machineBusy() cpuSample {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var s cpuSample
	for i, f := range strings.Fields(line)[1:] {
		var v uint64
		fmt.Sscan(f, &v)
		s.total += v
		if i != 3 && i != 4 { // idle, iowait
			s.busy += v
		}
	}
	return s
}

// since returns the machine's busy share in percent of all CPUs between
// two samples (100 = every core busy).
func (s cpuSample) since(old cpuSample) float64 {
	if s.total == old.total {
		return 0
	}
	return 100 * float64(s.busy-old.busy) / float64(s.total-old.total)
}

// waitIdle waits (at most limit) until the machine was at least pct % idle
// over one second, and returns the idle share it saw last.
func waitIdle(pct float64, limit time.Duration) float64 {
	deadline := time.Now().Add(limit)
	for {
		a := machineBusy()
		time.Sleep(time.Second)
		idle := 100 - machineBusy().since(a)
		if idle >= pct || time.Now().After(deadline) {
			return idle
		}
	}
}
