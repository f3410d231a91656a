package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/overlay/backend"
	"linen.dev/linen/internal/overlay/subnet"
	"linen.dev/linen/internal/overlay/subnet/storetest"
	"linen.dev/linen/internal/subnetenv"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-daemon-") }

// node builds a host namespace with eth0 (192.0.2.1/24, default route)
// wired to a peer namespace.
func node(t *testing.T) *netns.NS {
	t.Helper()
	host, peer := nstest.New(t), nstest.New(t)
	nfttest.Veth(t, host, "eth0", peer, "eth0")
	nfttest.Addr(t, host, "eth0", "192.0.2.1/24")
	nfttest.Addr(t, peer, "eth0", "192.0.2.2/24")
	nfttest.Route(t, host, "0.0.0.0/0", "192.0.2.2")
	return host
}

func TestSelectInterface(t *testing.T) {
	host := node(t)
	h := nfttest.Handle(t, host)
	cases := []struct {
		name string
		o    IfaceOptions
		want string // interface name, or error substring prefixed with "!"
	}{
		{"default route", IfaceOptions{IPv4: true}, "eth0"},
		{"by name", IfaceOptions{Ifaces: []string{"nosuch", "eth0"}, IPv4: true}, "eth0"},
		{"by address", IfaceOptions{Ifaces: []string{"192.0.2.1"}, IPv4: true}, "eth0"},
		{"by regex", IfaceOptions{Regexes: []string{"^et"}, IPv4: true}, "eth0"},
		{"by regex on address", IfaceOptions{Regexes: []string{`^192\.0\.2\.`}, IPv4: true}, "eth0"},
		{"no match", IfaceOptions{Ifaces: []string{"nosuch"}, IPv4: true}, "!nosuch"},
		{"bad regex", IfaceOptions{Regexes: []string{"("}, IPv4: true}, "!--iface-regex"},
		{"ipv6 missing", IfaceOptions{IPv4: true, IPv6: true}, "!no global IPv6"},
		{"bad public ip", IfaceOptions{IPv4: true, PublicIP: "x"}, "!--public-ip"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ext, err := SelectInterface(h, tc.o)
			if strings.HasPrefix(tc.want, "!") {
				if err == nil || !strings.Contains(err.Error(), tc.want[1:]) {
					t.Fatalf("got %v, %v; want error with %q", ext, err, tc.want[1:])
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ext.Name != tc.want || ext.IfaceAddr.String() != "192.0.2.1" || ext.ExtAddr != ext.IfaceAddr || ext.MTU != 1500 {
				t.Errorf("got %+v", ext)
			}
		})
	}
	ext, err := SelectInterface(h, IfaceOptions{IPv4: true, PublicIP: "198.51.100.7"})
	if err != nil || ext.ExtAddr.String() != "198.51.100.7" {
		t.Errorf("public ip: %+v %v", ext, err)
	}
}

// Run on a node with an in-memory store: it leases a subnet, writes
// subnet.env, serves /readyz and /metrics, programs a remote node's lease
// (vxlan), installs the masquerade rules, and leaves the data plane in
// place when stopped.
func TestRun(t *testing.T) {
	host := node(t)
	mem := storetest.NewMemory()
	store := mem.Open("/coreos.com/network")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := store.PutConfig(ctx, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ready := make(chan struct{})
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		done <- host.Do(func() error {
			return Run(runCtx, Config{
				Store: store, Iface: IfaceOptions{Ifaces: []string{"eth0"}}, IPMasq: true, ForwardRules: true,
				SubnetFile: filepath.Join(dir, "subnet.env"), RenewMargin: time.Hour,
				HealthzAddr: "192.0.2.1:8081", DataDir: dir, Backends: backend.Registry(),
				Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: ready,
			})
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-ctx.Done():
		t.Fatal("not ready in time")
	}
	env, err := subnetenv.Read(filepath.Join(dir, "subnet.env"))
	if err != nil {
		t.Fatal(err)
	}
	if env.Network.String() != "10.244.0.0/16" || env.Subnet.Bits() != 24 || env.MTU != 1450 || !env.IPMasq {
		t.Errorf("subnet.env: %+v", env)
	}
	if got := httpGet(t, host, "http://192.0.2.1:8081/readyz"); !strings.HasPrefix(got, "200") {
		t.Errorf("/readyz: %s", got)
	}

	// A remote node appears: route, neighbour and FDB entry follow.
	remote := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.200.0/24"), Attrs: subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr("192.0.2.2"), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:00:c8"}`)}}
	if _, err := store.CreateLease(ctx, remote, time.Hour); err != nil {
		t.Fatal(err)
	}
	h := nfttest.Handle(t, host)
	waitRoute(t, h, "10.244.200.0/24", true)
	metrics := httpGet(t, host, "http://192.0.2.1:8081/metrics")
	for _, want := range []string{"linen_ready 1", "linen_leases 2", "linen_reconciles_total"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, metrics)
		}
	}
	if rs := nfttest.Nft(t, host, "list", "table", "inet", "linen_overlay"); !strings.Contains(rs, "masquerade") {
		t.Errorf("no masquerade rules:\n%s", rs)
	}
	if err := store.DeleteLease(ctx, remote); err != nil {
		t.Fatal(err)
	}
	waitRoute(t, h, "10.244.200.0/24", false)

	// Stop: the device stays (a restart drops no traffic).
	stop()
	if err := <-done; err != nil && err != context.Canceled {
		t.Fatalf("Run returned %v", err)
	}
	if _, err := h.LinkByName("flannel.1"); err != nil {
		t.Errorf("flannel.1 gone after stop: %v", err)
	}
}

func waitRoute(t *testing.T, h *netlink.Handle, dst string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		routes, _ := h.RouteList(nil, netlink.FAMILY_V4)
		has := false
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == dst {
				has = true
			}
		}
		if has == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("route to %s present=%v, want %v", dst, has, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// httpGet fetches url from inside ns and returns "<status> <body>".
func httpGet(t *testing.T, ns *netns.NS, url string) string {
	t.Helper()
	hostPort := strings.TrimPrefix(url, "http://")
	path := "/" + strings.SplitN(hostPort, "/", 2)[1]
	hostPort = strings.SplitN(hostPort, "/", 2)[0]
	var out string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", hostPort, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path)
		r := bufio.NewReader(c)
		status, _ := r.ReadString('\n')
		f := strings.Fields(status)
		body, _ := io.ReadAll(r)
		if len(f) > 1 {
			out = f[1] + " " + string(body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHelpers(t *testing.T) {
	if got := firstHost(netip.MustParsePrefix("10.5.52.0/24")); got.String() != "10.5.52.1/24" {
		t.Error(got)
	}
	if HealthzAddr("0.0.0.0", 0) != "" || HealthzAddr("192.0.2.1", 8081) != "192.0.2.1:8081" {
		t.Error("HealthzAddr")
	}
}
