// Package sublinktest holds what the tests of the stacked-link plugins
// (macvlan, ipvlan, vlan) and host-device share: an environment that runs
// linen's IPAM plugins in process without any installed plugin binaries,
// wiring of test namespaces, kernel capability probes and traffic checks.
// Everything acts only inside namespaces the test created.
package sublinktest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/ipam/hostlocal"
	"linen.dev/linen/internal/plugins/ipam/static"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// Env returns an environment that runs host-local and static in process,
// and a CNI_PATH in which they are found: empty stand-in files, so the tests
// need no plugin binaries installed (the VM that runs them has none). Log
// records what the plugins log.
func Env(t testing.TB) (env *pluginmain.Env, cniPath string, log *Log) {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"host-local", "static"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log = &Log{}
	env = &pluginmain.Env{
		Stderr:    io.Discard,
		Log:       slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry:  pluginmain.NewRegistry(hostlocal.Plugin(), static.Plugin()),
		InProcess: func(string, string) bool { return true },
	}
	return env, dir, log
}

// Log is a concurrency-safe log buffer.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns what was logged.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Static is a static IPAM section with the given addresses (CIDRs).
func Static(cidrs ...string) string {
	var as []string
	for _, c := range cidrs {
		as = append(as, fmt.Sprintf(`{"address":%q}`, c))
	}
	return `{"type":"static","addresses":[` + strings.Join(as, ",") + `]}`
}

// WithPrev adds prevResult, in the configuration's version, to conf.
func WithPrev(t testing.TB, conf []byte, prev *current.Result) []byte {
	t.Helper()
	var head struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(conf, &head); err != nil {
		t.Fatal(err)
	}
	conv, err := prev.GetAsVersion(head.CNIVersion)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(conv)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(conf))
	return []byte(s[:len(s)-1] + `,"prevResult":` + string(b) + `}`)
}

// Wire connects ns a and ns b with a veth pair (aName, bName, both up) and
// puts addrs (CIDRs) on bName.
func Wire(t testing.TB, a *netns.NS, aName string, b *netns.NS, bName string, addrs ...string) {
	t.Helper()
	nfttest.Veth(t, a, aName, b, bName)
	for _, c := range addrs {
		nfttest.Addr(t, b, bName, c)
	}
}

// Links lists the names of the links in ns.
func Links(t testing.TB, ns *netns.NS) []string {
	t.Helper()
	ls, err := nfttest.Handle(t, ns).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		out = append(out, l.Attrs().Name)
	}
	return out
}

// Link returns the link name in ns, failing the test when it is missing.
func Link(t testing.TB, ns *netns.NS, name string) netlink.Link {
	t.Helper()
	l, err := nfttest.Handle(t, ns).LinkByName(name)
	if err != nil {
		t.Fatalf("link %q in %s: %v", name, ns.Path(), err)
	}
	return l
}

// OnlyLinks fails the test unless ns holds exactly the named links.
func OnlyLinks(t testing.TB, ns *netns.NS, want ...string) {
	t.Helper()
	got := Links(t, ns)
	if strings.Join(sorted(got), ",") != strings.Join(sorted(want), ",") {
		t.Errorf("links in %s: %v, want %v", ns.Path(), got, want)
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// Serve runs a TCP echo server on addr ("ip:port") inside ns for the rest
// of the test.
func Serve(t testing.TB, ns *netns.NS, addr string) { t.Helper(); nfttest.EchoTCP(t, ns, addr) }

// Reach connects from ns to addr and returns the source address the server
// saw; the exchange is bounded by 3 s.
func Reach(from *netns.NS, addr string) (netip.Addr, error) {
	ans, err := nfttest.TCP(from, addr, 3*time.Second)
	if err != nil {
		return netip.Addr{}, err
	}
	a := nfttest.From(ans)
	if !a.IsValid() {
		return a, fmt.Errorf("unexpected answer %q", ans)
	}
	return a, nil
}

// MustReach fails the test unless from reaches addr with source src.
func MustReach(t testing.TB, from *netns.NS, addr, src string) {
	t.Helper()
	got, err := Reach(from, addr)
	if err != nil {
		t.Errorf("%s -> %s: %v", from.Path(), addr, err)
		return
	}
	if got.String() != src {
		t.Errorf("%s -> %s: server saw source %s, want %s", from.Path(), addr, got, src)
	}
}

// MustNotReach fails the test when from reaches addr within a second.
func MustNotReach(t testing.TB, from *netns.NS, addr string) {
	t.Helper()
	if ans, err := nfttest.TCP(from, addr, time.Second); err == nil {
		t.Errorf("%s -> %s answered %q; want no connectivity", from.Path(), addr, ans)
	}
}

// RequireKind skips the test unless the kernel can create a link of the
// kind build makes, stacked on a veth, inside ns. The probe is removed.
func RequireKind(t testing.TB, ns *netns.NS, kind string, build func(la netlink.LinkAttrs) netlink.Link) {
	t.Helper()
	h := nfttest.Handle(t, ns)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ltprobe0"}, PeerName: "ltprobe1"}
	if err := h.LinkAdd(v); err != nil {
		t.Fatalf("probe veth: %v", err)
	}
	defer h.LinkDel(v)
	parent, err := h.LinkByName("ltprobe0")
	if err != nil {
		t.Fatal(err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = "ltprobe2"
	la.ParentIndex = parent.Attrs().Index
	l := build(la)
	if err := h.LinkAdd(l); err != nil {
		t.Skipf("skipped: kernel lacks %s: %v", kind, err)
	}
	_ = h.LinkDel(l)
}
