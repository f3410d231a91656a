package reaper

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns/nstest"
)

func TestMain(m *testing.M) {
	// The helper is this test binary started again under the helper's name.
	if filepath.Base(os.Args[0]) == Name {
		os.Exit(Main(os.Args[1:], os.Stderr))
	}
	nstest.Main(m, "lt-reaper-")
}

func vethIn(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: name + "p"}); err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestDetachedDelete(t *testing.T) {
	ns := nstest.New(t)
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, detach := range []bool{true, false} {
		l := vethIn(t, h, "ltv0")
		start := time.Now()
		d := Begin(ns, h, l, detach, nil)
		if detach && d.proc == nil {
			t.Fatal("helper did not start")
		}
		if err := d.Finish(); err != nil {
			t.Fatalf("detach=%v: %v", detach, err)
		}
		t.Logf("detach=%v: link gone after %v", detach, time.Since(start))
		if _, err := h.LinkByName("ltv0"); err == nil {
			t.Fatalf("detach=%v: link still exists", detach)
		}
		if _, err := h.LinkByName("ltv0p"); err == nil {
			t.Fatalf("detach=%v: peer still exists", detach)
		}
	}
}

// A missing link is not an error for the helper, and Finish with no link
// returns at once.
func TestNothingToDelete(t *testing.T) {
	ns := nstest.New(t)
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := Begin(ns, h, nil, true, nil).Finish(); err != nil {
		t.Fatal(err)
	}
	if err := deleteLink(ns.Fd(), "nosuch0"); err != nil {
		t.Fatalf("missing link: %v", err)
	}
}
