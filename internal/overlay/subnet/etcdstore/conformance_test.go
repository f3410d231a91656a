package etcdstore_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"linen.dev/linen/internal/overlay/subnet"
	"linen.dev/linen/internal/overlay/subnet/etcdstore"
	"linen.dev/linen/internal/overlay/subnet/etcdstore/etcdtest"
	"linen.dev/linen/internal/overlay/subnet/storetest"
)

// TestConformance: the Store against the embedded etcd (restarts and
// compaction included).
func TestConformance(t *testing.T) {
	storetest.Run(t, etcdtest.Harness)
}

// TestConformanceProcess: the Store against an etcd binary run as a child
// process (LINEN_ETCD_BIN, else etcd in PATH, e.g. Debian's etcd-server
// 3.4): another server version in another process, restarts and
// compaction included.
func TestConformanceProcess(t *testing.T) {
	bin := os.Getenv("LINEN_ETCD_BIN")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("etcd"); err != nil {
			t.Skip("no etcd binary (LINEN_ETCD_BIN or etcd in PATH)")
		}
	}
	storetest.Run(t, etcdtest.ProcessHarness(bin))
}

// TestConformanceExternal: the Store against an etcd server of its own
// (another version, another process), when LINEN_ETCD_ENDPOINTS names one
// (comma-separated client URLs, loopback). Every case works below a key
// prefix of its own, deleted afterwards; the restart case is skipped.
func TestConformanceExternal(t *testing.T) {
	env := os.Getenv("LINEN_ETCD_ENDPOINTS")
	if env == "" {
		t.Skip("LINEN_ETCD_ENDPOINTS not set")
	}
	eps := strings.Split(env, ",")
	storetest.Run(t, func(t *testing.T) *storetest.Harness {
		c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		root := fmt.Sprintf("/linen-conformance/%d", time.Now().UnixNano())
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = c.Delete(ctx, root+"/", clientv3.WithPrefix())
			c.Close()
		})
		return &storetest.Harness{
			Open: func(t *testing.T, prefix string) subnet.Store {
				s, err := etcdstore.New(etcdstore.Options{Endpoints: eps, Prefix: root + prefix})
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			Compact: func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				r, err := c.Get(ctx, "/")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Compact(ctx, r.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
					t.Fatal(err)
				}
			},
			PutRaw: func(t *testing.T, prefix, key, value string) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := c.Put(ctx, root+prefix+"/subnets/"+key, value); err != nil {
					t.Fatal(err)
				}
			},
			TTL: 2 * time.Second,
		}
	})
}
