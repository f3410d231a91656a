package portmap

import (
	"fmt"
	"net"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// The plugin in process (inside the test's host namespace): ADD and DEL of
// one pod with one host port, with 0 and 300 other pods' mappings present.
// Each call opens and releases its own netfilter socket, as a plugin
// process does; in process nothing is detached, so DEL includes the
// kernel's wait on the socket's release after a delete (~13 ms here),
// which a plugin process hands to a helper.
func BenchmarkPlugin(b *testing.B) {
	for _, existing := range []int{0, 300} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			n := newNode(b)
			p := n.addPod(b, 1)
			for i := range existing {
				other := &pod{ns: p.ns, id: fmt.Sprintf("bench-%d", i), hostIf: "none"}
				one := 0
				ip := net.IPv4(10, 128, byte(i>>8), byte(i))
				prev := &current.Result{CNIVersion: "1.1.0",
					Interfaces: []*current.Interface{{Name: "eth0", Sandbox: p.ns.Path()}},
					IPs:        []*current.IPConfig{{Address: net.IPNet{IP: ip, Mask: net.CIDRMask(16, 32)}, Interface: &one}}}
				n.must(b, "ADD", other, config(b, "1.1.0", "", fmt.Sprintf(`[{"hostPort": %d, "containerPort": 80}]`, 20000+i), prev))
			}
			conf := config(b, "1.1.0", "", `[{"hostPort": 8080, "containerPort": 80}]`, p.prevResult())
			for _, op := range []string{"ADD", "DEL"} {
				undo := map[string]string{"ADD": "DEL", "DEL": "ADD"}[op]
				b.Run(op, func(b *testing.B) {
					if op == "DEL" {
						n.must(b, "ADD", p, conf)
					}
					for i := 0; i < b.N; i++ {
						n.must(b, op, p, conf)
						b.StopTimer()
						n.must(b, undo, p, conf)
						b.StartTimer()
					}
					if op == "ADD" {
						n.must(b, "DEL", p, conf)
					}
				})
			}
		})
	}
}
