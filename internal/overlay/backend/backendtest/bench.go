package backendtest

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

// FakeLeases returns n leases of remote nodes 10.5.<i>.0/24 (i from 2) with
// public IPs 192.0.2.<100+i> on the underlay's L2 network; for vxlan they
// carry BackendData with VtepMAC 0a:00:00:00:<i/256>:<i%256>.
func FakeLeases(n int, backendType string) []subnet.Lease {
	var ls []subnet.Lease
	for i := 2; i < n+2; i++ {
		l := subnet.Lease{
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(i), 0}), 24),
			Attrs: subnet.LeaseAttrs{BackendType: backendType,
				PublicIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)})},
		}
		if backendType == "vxlan" {
			l.Attrs.BackendData = json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"0a:00:00:00:%02x:%02x"}`, i/256, i%256))
		}
		ls = append(ls, l)
	}
	return ls
}

// BenchSync measures Sync of 100 remote leases on one host running the
// backend: "steady" (nothing changed: dumps only), "one-change" (the lease
// set alternates by one lease), "from-empty" (all entries written).
func BenchSync(b *testing.B, newFn NewFunc, backendType, backendJSON string) {
	c := New(b, 1, false)
	n := Start(b, c, c.Hosts[0], newFn, backendType, backendJSON, dataplane.Options{})
	leases := append(FakeLeases(100, backendType), n.Lease)
	fewer := append(FakeLeases(99, backendType), n.Lease)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(n.B.Sync(leases))
	b.Run("steady", func(b *testing.B) {
		w := n.B.Writes()
		for b.Loop() {
			must(n.B.Sync(leases))
		}
		if d := n.B.Writes() - w; d != 0 {
			b.Fatalf("%d writes for unchanged leases", d)
		}
	})
	b.Run("one-change", func(b *testing.B) {
		w := n.B.Writes()
		i := 0
		for b.Loop() {
			if i%2 == 0 {
				must(n.B.Sync(fewer))
			} else {
				must(n.B.Sync(leases))
			}
			i++
		}
		b.ReportMetric(float64(n.B.Writes()-w)/float64(i), "writes/op")
	})
	b.Run("from-empty", func(b *testing.B) {
		w := uint64(0)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			must(n.B.Sync([]subnet.Lease{n.Lease}))
			before := n.B.Writes()
			b.StartTimer()
			must(n.B.Sync(leases))
			w += n.B.Writes() - before
		}
		b.ReportMetric(float64(w)/float64(b.N), "writes/op")
	})
}
