package sublink

import (
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
	"linen.dev/linen/internal/plugins/pluginmain"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-sublink-") }

func TestWireValidate(t *testing.T) {
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	(&Wire{MTU: 67}).Validate(fe, true)
	(&Wire{Master: "a b", MTU: 65536}).Validate(fe, false)
	got := fe.Err().Error()
	for _, w := range []string{"master: missing", "mtu: 67", `master: "a b"`, "mtu: 65536"} {
		if !strings.Contains(got, w) {
			t.Errorf("%q lacks %q", got, w)
		}
	}
	fe = pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	w := &Wire{Master: "eth1", MTU: 68, LinkInContainer: true}
	w.IPAM.Type = "static"
	c := w.Validate(fe, true)
	if fe.Len() != 0 || c.Master != "eth1" || c.MTU != 68 || !c.LinkInContainer || c.IPAMType != "static" {
		t.Errorf("valid wire: %+v, %v", c, fe.Err())
	}
}

func TestTempName(t *testing.T) {
	re := regexp.MustCompile(`^lnk[0-9a-f]{8}$`)
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		n := TempName()
		if !re.MatchString(n) || pluginmain.ValidateIfName(n) != "" {
			t.Fatalf("bad temporary name %q", n)
		}
		seen[n] = true
	}
	if len(seen) < 99 {
		t.Errorf("temporary names repeat: %d distinct of 100", len(seen))
	}
}

// The default route's interface: lowest metric, IPv4 before IPv6, first
// next hop of a multipath route; none without a default route.
func TestDefaultRouteLink(t *testing.T) {
	ns, other := nstest.New(t), nstest.New(t)
	h := nfttest.Handle(t, ns)
	if _, err := DefaultRouteLink(h); !errors.Is(err, ErrNoDefaultRoute) {
		t.Fatalf("no routes: %v", err)
	}
	for i, name := range []string{"ltd0", "ltd1", "ltd2"} {
		nfttest.Veth(t, ns, name, other, "ltdp"+name[3:])
		nfttest.Addr(t, ns, name, []string{"10.1.0.1/24", "10.2.0.1/24", "fd00:3::1/64"}[i])
	}
	idx := func(name string) int {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Index
	}
	_, v6all, _ := net.ParseCIDR("::/0")
	if err := h.RouteAdd(&netlink.Route{Dst: v6all, Gw: net.ParseIP("fd00:3::2"), LinkIndex: idx("ltd2")}); err != nil {
		t.Fatal(err)
	}
	expect := func(want string) {
		t.Helper()
		l, err := DefaultRouteLink(h)
		if err != nil || l.Attrs().Name != want {
			t.Errorf("default route link %v (%v), want %s", l, err, want)
		}
	}
	expect("ltd2")
	_, v4all, _ := net.ParseCIDR("0.0.0.0/0")
	if err := h.RouteAdd(&netlink.Route{Dst: v4all, MultiPath: []*netlink.NexthopInfo{
		{LinkIndex: idx("ltd1"), Gw: net.ParseIP("10.2.0.2")},
		{LinkIndex: idx("ltd0"), Gw: net.ParseIP("10.1.0.2")},
	}, Priority: 50}); err != nil {
		t.Fatal(err)
	}
	expect("ltd1")
	if err := h.RouteAdd(&netlink.Route{Dst: v4all, Gw: net.ParseIP("10.1.0.2"), LinkIndex: idx("ltd0"), Priority: 10}); err != nil {
		t.Fatal(err)
	}
	expect("ltd0")
}
