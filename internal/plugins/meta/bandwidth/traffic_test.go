package bandwidth

import (
	"math"
	"testing"

	"linen.dev/linen/internal/nft/nfttest"
)

// Real traffic through a shaped ptp pod, measured with iperf3: each
// direction gets its configured rate within 10 %.
func TestTrafficRate(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: measures throughput for ~12 s")
	}
	n := newNode(t)
	requireIFB(t, n)
	p := n.ptpPod(t, 1)
	iperfServer(t, n.host)
	const rate = 50_000_000
	// A burst of 1 Mbit is 20 ms of the rate: it inflates a 3 s average
	// by less than 1 %.
	conf := bwConf(t, "1.1.0", `"ingressRate": 50000000, "ingressBurst": 1000000, "egressRate": 50000000, "egressBurst": 1000000`, p.prev)
	n.must(t, "ADD", p, conf)
	near := func(got float64) bool { return math.Abs(got-rate) <= 0.1*rate }
	for _, dir := range []struct {
		name    string
		reverse bool
	}{{"egress (pod to host)", false}, {"ingress (host to pod)", true}} {
		seen, ok := measure(t, p.ns, p.gw, dir.reverse, "", near)
		t.Logf("%s: %v (limit %s)", dir.name, seen, mbit(rate))
		if !ok {
			t.Errorf("%s: measured %v, want %s ± 10 %%", dir.name, seen, mbit(rate))
		}
	}
	// After DEL the pod is not limited: the sender's own cap (200 Mbit/s)
	// goes through.
	n.must(t, "DEL", p, conf)
	for _, reverse := range []bool{false, true} {
		seen, ok := measure(t, p.ns, p.gw, reverse, "200M", func(got float64) bool { return got > 2*rate })
		if !ok {
			t.Errorf("after DEL (reverse=%v): measured %v, want well above %s", reverse, seen, mbit(rate))
		}
	}
}

// With subnet lists only the selected traffic is shaped, in both
// directions: the host has two addresses, one inside the listed subnet
// and one outside, and the pod talks to each.
func TestTrafficSubnets(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: measures throughput for ~24 s")
	}
	n := newNode(t)
	requireIFB(t, n)
	p := n.ptpPod(t, 1)
	nfttest.Addr(t, n.host, "lo", "192.0.2.1/32")
	nfttest.Addr(t, n.host, "lo", "198.51.100.1/32")
	iperfServer(t, n.host)
	const rate = 20_000_000
	// The unshaped traffic is capped by the sender at twice the limit, so
	// that the test costs little CPU and still tells the two apart.
	const cap = "40M"
	// A burst of 1 Mbit is 50 ms of the rate: enough to ride out a busy
	// machine's scheduling delays, and 2 % of a 3 s average.
	limits := `"ingressRate": 20000000, "ingressBurst": 1000000, "egressRate": 20000000, "egressBurst": 1000000`
	for _, tc := range []struct {
		key              string
		shaped, unshaped string // host addresses
	}{
		{"unshapedSubnets", "198.51.100.1", "192.0.2.1"},
		{"shapedSubnets", "192.0.2.1", "198.51.100.1"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			conf := bwConf(t, "1.1.0", limits+`, "`+tc.key+`": ["192.0.2.0/24", "2001:db8::/32"]`, p.prev)
			n.must(t, "ADD", p, conf)
			defer n.must(t, "DEL", p, conf)
			for _, reverse := range []bool{false, true} {
				dir := map[bool]string{false: "egress", true: "ingress"}[reverse]
				seen, ok := measure(t, p.ns, tc.shaped, reverse, cap, func(got float64) bool { return math.Abs(got-rate) <= 0.1*rate })
				t.Logf("%s to shaped %s: %v", dir, tc.shaped, seen)
				if !ok {
					t.Errorf("%s with %s: measured %v, want %s ± 10 %%", dir, tc.shaped, seen, mbit(rate))
				}
				seen, ok = measure(t, p.ns, tc.unshaped, reverse, cap, func(got float64) bool { return got > 1.5*rate })
				t.Logf("%s to unshaped %s: %v", dir, tc.unshaped, seen)
				if !ok {
					t.Errorf("%s with %s: measured %v, want the sender's 40 Mbit/s, well above the limit", dir, tc.unshaped, seen)
				}
			}
		})
	}
}
