package nft

import (
	"errors"
	"net"
	"testing"
	"time"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
)

const answerWithin = 2 * time.Second

// Masquerading with real traffic: pod -> host (router) -> outside.
func TestMasqTraffic(t *testing.T) {
	host, podNS, out := nstest.New(t), nstest.New(t), nstest.New(t)
	nfttest.Veth(t, host, "hp0", podNS, "eth0")
	nfttest.Veth(t, host, "ho0", out, "eth0")
	nfttest.Addr(t, host, "hp0", "10.1.0.1/24")
	nfttest.Addr(t, host, "hp0", "fd01::1/64")
	nfttest.Addr(t, host, "ho0", "192.0.2.1/24")
	nfttest.Addr(t, host, "ho0", "2001:db8:2::1/64")
	nfttest.Addr(t, podNS, "eth0", "10.1.0.2/24")
	nfttest.Addr(t, podNS, "eth0", "fd01::2/64")
	nfttest.Addr(t, out, "eth0", "192.0.2.2/24")
	nfttest.Addr(t, out, "eth0", "2001:db8:2::2/64")
	nfttest.Route(t, podNS, "default4", "10.1.0.1")
	nfttest.Route(t, podNS, "default6", "fd01::1")
	// The outside can route back, so both outcomes are observable.
	nfttest.Route(t, out, "10.1.0.0/24", "192.0.2.1")
	nfttest.Route(t, out, "fd01::/64", "2001:db8:2::1")
	nfttest.Forwarding(t, host)
	nfttest.EchoTCP(t, out, "[::]:7000")

	c := dialIn(t, host)
	entries := func(sub4, sub6 string) []MasqEntry {
		return []MasqEntry{
			{Network: "n", ContainerID: "p", IfName: "eth0", IP: mustAddr("10.1.0.2"), Subnet: mustPrefix(sub4)},
			{Network: "n", ContainerID: "p", IfName: "eth0", IP: mustAddr("fd01::2"), Subnet: mustPrefix(sub6)},
		}
	}
	steps := []struct {
		name         string
		do           func() error
		want4, want6 string // source address the outside sees
	}{
		{"no masquerade", func() error { return nil }, "10.1.0.2", "fd01::2"},
		{"masquerade", func() error { return AddMasq(c, entries("10.1.0.0/24", "fd01::/64")) }, "192.0.2.1", "2001:db8:2::1"},
		{"deleted", func() error { return DelMasq(c, "n", "p", "eth0", entries("10.1.0.0/24", "fd01::/64")) }, "10.1.0.2", "fd01::2"},
		{"destination in the pod's subnet", func() error { return AddMasq(c, entries("192.0.2.0/24", "2001:db8:2::/64")) }, "10.1.0.2", "fd01::2"},
		{"deleted by tag", func() error { return DelMasq(c, "n", "p", "eth0", nil) }, "10.1.0.2", "fd01::2"},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for _, x := range []struct{ to, want string }{{"192.0.2.2:7000", s.want4}, {"[2001:db8:2::2]:7000", s.want6}} {
			ans, err := nfttest.TCP(podNS, x.to, answerWithin)
			if err != nil {
				t.Errorf("%s: pod -> %s: %v", s.name, x.to, err)
				continue
			}
			if got := nfttest.From(ans); got != mustAddr(x.want) {
				t.Errorf("%s: pod -> %s: the server saw %s, want %s", s.name, x.to, got, x.want)
			}
		}
	}
}

// The spoof check with real frames across a bridge.
func TestSpoofCheckTraffic(t *testing.T) {
	host, a, b := nstest.New(t), nstest.New(t), nstest.New(t)
	nfttest.Bridge(t, host, "br0")
	nfttest.Veth(t, host, "va", a, "eth0")
	nfttest.Veth(t, host, "vb", b, "eth0")
	nfttest.Enslave(t, host, "va", "br0")
	nfttest.Enslave(t, host, "vb", "br0")
	nfttest.Addr(t, a, "eth0", "10.2.0.2/24")
	nfttest.Addr(t, b, "eth0", "10.2.0.3/24")
	nfttest.EchoUDP(t, b, "10.2.0.3:7001")
	link, err := nfttest.Handle(t, a).LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	realMAC := link.Attrs().HardwareAddr
	wrongMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}

	c := dialIn(t, host)
	entry := func(mac net.HardwareAddr) SpoofEntry {
		return SpoofEntry{Network: "n", ContainerID: "a", IfName: "eth0", HostIf: "va", MAC: mac}
	}
	right, wrong := entry(realMAC), entry(wrongMAC)
	steps := []struct {
		name    string
		do      func() error
		answers bool
	}{
		{"no check", func() error { return nil }, true},
		{"check with the pod's MAC", func() error { return AddSpoofCheck(c, right) }, true},
		{"check with another MAC", func() error {
			if err := DelSpoofCheck(c, "n", "a", "eth0", &right); err != nil {
				return err
			}
			return AddSpoofCheck(c, wrong)
		}, false},
		{"deleted", func() error { return DelSpoofCheck(c, "n", "a", "eth0", nil) }, true},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		wait := answerWithin
		if !s.answers {
			wait = 300 * time.Millisecond
		}
		ans, err := nfttest.UDP(a, "", "10.2.0.3:7001", wait)
		switch {
		case s.answers && err != nil:
			t.Errorf("%s: no answer: %v", s.name, err)
		case !s.answers && !errors.Is(err, nfttest.ErrNoAnswer):
			t.Errorf("%s: frames with a foreign MAC got through (answer %q, %v)", s.name, ans, err)
		}
	}
}
