package hostlocal

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// benchLeases are the numbers of leases present in the benchmarks: an empty
// node, a full node (300 pods) and well beyond.
var benchLeases = []int{0, 300, 1000}

// benchNetwork prepares a /16 network with n leases and returns the config
// bytes and the network directory.
func benchNetwork(b *testing.B, n int) ([]byte, string) {
	b.Helper()
	data := b.TempDir()
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"bench","ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.30.0.0/16"}]]}}`, data))
	c, err := ParseConfig(conf, "")
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := Allocate(context.Background(), nil, c, fmt.Sprintf("pod-%d", i), "eth0"); err != nil {
			b.Fatal(err)
		}
	}
	// On a node the reservation files are old and written back. Right
	// after creating hundreds of them, ext4 here took 0.3-0.6 ms instead
	// of ~25 µs for each further file creation in the directory, until a
	// sync: a cost of the setup, not of the plugin.
	d, err := os.Open(data)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		b.Fatal(err)
	}
	return conf, c.Dir()
}

// BenchmarkAdd measures one ADD through the plugin verb (configuration
// parse, lock, index check, reservation, result) with 0, 300 and 1000
// leases present. "no-index" removes the index before every ADD, so the directory
// is read file by file, as the reference plugin always does.
func BenchmarkAdd(b *testing.B) {
	env := testEnv()
	for _, n := range benchLeases {
		for _, cold := range []bool{false, true} {
			name := fmt.Sprintf("index/leases=%d", n)
			if cold {
				name = fmt.Sprintf("no-index/leases=%d", n)
			}
			b.Run(name, func(b *testing.B) {
				conf, dir := benchNetwork(b, n)
				ctx := context.Background()
				a := &pluginmain.Args{Command: "ADD", ContainerID: "bench", IfName: "eth0", StdinData: conf}
				for b.Loop() {
					if cold {
						b.StopTimer()
						os.Remove(filepath.Join(dir, indexName))
						b.StartTimer()
					}
					if _, err := cmdAdd(ctx, env, a); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := cmdDel(ctx, env, a); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
		}
	}
}

// BenchmarkDel measures one DEL (without prevResult) with 0, 300 and 1000
// other leases present.
func BenchmarkDel(b *testing.B) {
	env := testEnv()
	for _, n := range benchLeases {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			conf, _ := benchNetwork(b, n)
			ctx := context.Background()
			a := &pluginmain.Args{Command: "DEL", ContainerID: "bench", IfName: "eth0", StdinData: conf}
			for b.Loop() {
				b.StopTimer()
				if _, err := cmdAdd(ctx, env, a); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := cmdDel(ctx, env, a); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReferenceAdd execs the reference binary for the same ADD, for a
// ratio measured in the same run (most of it is the process start).
func BenchmarkReferenceAdd(b *testing.B) {
	if _, err := os.Stat(referenceBin); err != nil {
		b.Skipf("skipped: %s not installed", referenceBin)
	}
	ns := nstest.New(b)
	for _, n := range []int{0, 300} {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			data := b.TempDir()
			conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench","ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.30.0.0/16"}]]}}`, data)
			c, _ := ParseConfig([]byte(conf), "")
			for i := range n {
				if _, err := Allocate(context.Background(), nil, c, fmt.Sprintf("pod-%d", i), "eth0"); err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			for b.Loop() {
				if out, err := reference(ctx, "ADD", "bench", "eth0", ns.Path(), conf).CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				b.StopTimer()
				if out, err := reference(ctx, "DEL", "bench", "eth0", "", conf).CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkScale runs ADD and DEL in networks with 0, 300 and 1000 leases
// in turn, within one loop, so that all three see the same disk and CPU
// load (file creation on a busy ext4 varies by several times from one
// second to the next), and reports each one's mean time as a metric
// (add-0-ns, del-1000-ns, ...). The loop's own ns/op is the sum of all six.
func BenchmarkScale(b *testing.B) {
	env := testEnv()
	ctx := context.Background()
	confs := make([][]byte, len(benchLeases))
	for i, n := range benchLeases {
		confs[i], _ = benchNetwork(b, n)
	}
	add := make([]time.Duration, len(benchLeases))
	del := make([]time.Duration, len(benchLeases))
	for b.Loop() {
		for i, conf := range confs {
			a := &pluginmain.Args{Command: "ADD", ContainerID: "bench", IfName: "eth0", StdinData: conf}
			t0 := time.Now()
			if _, err := cmdAdd(ctx, env, a); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := cmdDel(ctx, env, a); err != nil {
				b.Fatal(err)
			}
			add[i] += t1.Sub(t0)
			del[i] += time.Since(t1)
		}
	}
	for i, n := range benchLeases {
		b.ReportMetric(float64(add[i].Nanoseconds())/float64(b.N), fmt.Sprintf("add-%d-ns", n))
		b.ReportMetric(float64(del[i].Nanoseconds())/float64(b.N), fmt.Sprintf("del-%d-ns", n))
	}
}
