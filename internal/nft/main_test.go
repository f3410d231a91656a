package nft

import (
	"os"
	"testing"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-nft-") }

var update = os.Getenv("UPDATE_GOLDEN") != ""

// dialIn opens a Conn in ns whose creation lock lives in a test directory.
func dialIn(t testing.TB, ns *netns.NS) *Conn {
	t.Helper()
	c, sock, err := Dial(ns.Fd())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	c.lockDir = t.TempDir()
	t.Cleanup(func() {
		c.Close()
		sock.Close()
	})
	return c
}

func nftIn(t testing.TB, ns *netns.NS, args ...string) string {
	t.Helper()
	return nfttest.Nft(t, ns, args...)
}
