package nl

import (
	"testing"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/sysctl"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-nl-") }

// The netlink view of the IPv4 settings agrees with /proc/sys, both ways.
func TestIPv4DevConf(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t)
	err := ns.Do(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = "ltnl0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "ltnl1"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName("ltnl0")
		if err != nil {
			return err
		}
		idx := l.Attrs().Index
		for _, tc := range []struct {
			c   DevConf
			key string
		}{
			{DevConfArpNotify, "net/ipv4/conf/ltnl0/arp_notify"},
			{DevConfRouteLocalnet, "net/ipv4/conf/ltnl0/route_localnet"},
			{DevConfForwarding, "net/ipv4/conf/ltnl0/forwarding"},
		} {
			if v, err := IPv4DevConf(idx, tc.c); err != nil || v != 0 {
				t.Errorf("%s before: %d, %v; want 0", tc.key, v, err)
			}
			if err := SetIPv4DevConf(idx, tc.c, 1); err != nil {
				t.Fatal(err)
			}
			if got, err := sysctl.Get(tc.key); err != nil || got != "1" {
				t.Errorf("%s after netlink set: %q, %v; want 1", tc.key, got, err)
			}
			if err := sysctl.Set(tc.key, "0"); err != nil {
				t.Fatal(err)
			}
			if v, err := IPv4DevConf(idx, tc.c); err != nil || v != 0 {
				t.Errorf("%s after sysctl 0: %d, %v", tc.key, v, err)
			}
		}
		if _, err := IPv4DevConf(idx, 1000); err == nil {
			t.Error("setting 1000: no error")
		}
		if _, err := IPv4DevConf(99999, DevConfArpNotify); err == nil {
			t.Error("missing link: no error")
		}
		for _, want := range []string{"0", "1", "0"} {
			if err := sysctl.Set("net/ipv4/ip_forward", want); err != nil {
				return err
			}
			on, err := IPv4Forwarding()
			if err != nil {
				return err
			}
			if on != (want == "1") {
				t.Errorf("ip_forward %s: IPv4Forwarding() = %v", want, on)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
