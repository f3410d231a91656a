package hostlocal

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
)

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
	return conf, c.Dir()
}

// BenchmarkAdd measures one ADD through the plugin verb (configuration
// parse, lock, index check, reservation, result) with 0 and 300 leases
// present. "no-index" removes the index before every ADD, so the directory
// is read file by file, as the reference plugin always does.
func BenchmarkAdd(b *testing.B) {
	env := testEnv()
	for _, n := range []int{0, 300} {
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

// BenchmarkDel measures one DEL (without prevResult) with 0 and 300 other
// leases present.
func BenchmarkDel(b *testing.B) {
	env := testEnv()
	for _, n := range []int{0, 300} {
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
