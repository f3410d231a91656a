package nft

import (
	"net/netip"
	"strings"
	"testing"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
)

// The kernel lists the overlay rules as the documented ruleset, replacing
// them is atomic and repeatable, and deleting twice is fine.
func TestOverlayRules(t *testing.T) {
	ns := nstest.New(t)
	nets := []OverlayNet{
		{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.0/24")},
		{Network: netip.MustParsePrefix("fd00:244::/48"), Subnet: netip.MustParsePrefix("fd00:244:0:3::/64")},
	}
	err := ns.Do(func() error {
		c, sock, err := Dial(-1)
		if err != nil {
			return err
		}
		defer sock.Close()
		defer c.Close()
		for i := 0; i < 2; i++ {
			if err := SetOverlayRules(c, nets, true); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := nfttest.Nft(t, ns, "list", "table", "inet", OverlayTable)
	for _, want := range []string{
		"meta mark & 0x00004000 == 0x00004000 return",
		"ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return",
		"ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return",
		"ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return",
		"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
		"ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
		"ip6 saddr fd00:244::/48 ip6 daddr != ff00::/8 masquerade fully-random",
		"ip saddr 10.244.0.0/16 accept",
		"ip daddr 10.244.0.0/16 accept",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "masquerade fully-random"); n != 4 {
		t.Errorf("%d masquerade rules after two replacements, want 4:\n%s", n, got)
	}
	err = ns.Do(func() error {
		c, sock, err := Dial(-1)
		if err != nil {
			return err
		}
		defer sock.Close()
		defer c.Close()
		if err := SetOverlayRules(c, nets[:1], false); err != nil {
			return err
		}
		if strings.Contains(nfttest.Nft(t, ns, "list", "ruleset"), "masquerade") {
			t.Error("masquerade rules left after masq=false")
		}
		for i := 0; i < 2; i++ {
			if err := DeleteOverlayRules(c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(nfttest.Nft(t, ns, "list", "ruleset"), OverlayTable) {
		t.Error("table left after delete")
	}
}
