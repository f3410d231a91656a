// Package nfttest builds small networks of test namespaces and sends real
// traffic through them: veth links, addresses, routes, sysctls, echo
// servers that report the source address they see, and clients. It is for
// the tests of internal/nft and of the plugins that use it.
//
// Every function acts only inside namespaces the test created (nstest.New)
// and bounds every wait.
package nfttest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/sysctl"
)

// Handle returns a netlink handle bound to ns, closed at test end.
func Handle(t testing.TB, ns *netns.NS) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// Veth creates a veth pair, aName in a and bName in b, both up (and lo of
// both namespaces up).
func Veth(t testing.TB, a *netns.NS, aName string, b *netns.NS, bName string) {
	t.Helper()
	ha, hb := Handle(t, a), Handle(t, b)
	la := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsFd(b.Fd())}
	if err := ha.LinkAdd(la); err != nil {
		t.Fatalf("add veth %s/%s: %v", aName, bName, err)
	}
	// No duplicate address detection: addresses (link-local ones too) are
	// usable at once, so first packets are not lost.
	Sysctl(t, a, sysctl.Link("ipv6", aName, "accept_dad"), "0")
	Sysctl(t, b, sysctl.Link("ipv6", bName, "accept_dad"), "0")
	for _, x := range []struct {
		h    *netlink.Handle
		name string
	}{{ha, aName}, {hb, bName}, {ha, "lo"}, {hb, "lo"}} {
		l, err := x.h.LinkByName(x.name)
		if err != nil {
			t.Fatalf("find %s: %v", x.name, err)
		}
		if err := x.h.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", x.name, err)
		}
	}
}

// Bridge creates a bridge in ns, up.
func Bridge(t testing.TB, ns *netns.NS, name string) {
	t.Helper()
	h := Handle(t, ns)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatalf("add bridge %s: %v", name, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
}

// Enslave attaches port to bridge in ns.
func Enslave(t testing.TB, ns *netns.NS, port, bridge string) {
	t.Helper()
	h := Handle(t, ns)
	p, err := h.LinkByName(port)
	if err != nil {
		t.Fatalf("find %s: %v", port, err)
	}
	br, err := h.LinkByName(bridge)
	if err != nil {
		t.Fatalf("find %s: %v", bridge, err)
	}
	if err := h.LinkSetMaster(p, br); err != nil {
		t.Fatalf("enslave %s to %s: %v", port, bridge, err)
	}
}

// Addr adds an address (CIDR) to ifname in ns; IPv6 without DAD.
func Addr(t testing.TB, ns *netns.NS, ifname, cidr string) {
	t.Helper()
	h := Handle(t, ns)
	l, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatalf("find %s: %v", ifname, err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatalf("parse %s: %v", cidr, err)
	}
	if a.IP.To4() == nil {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("add %s to %s: %v", cidr, ifname, err)
	}
}

// Route adds a route to dst (CIDR, or "default4"/"default6") via gw in ns.
func Route(t testing.TB, ns *netns.NS, dst, gw string) {
	t.Helper()
	h := Handle(t, ns)
	switch dst {
	case "default4":
		dst = "0.0.0.0/0"
	case "default6":
		dst = "::/0"
	}
	_, d, err := net.ParseCIDR(dst)
	if err != nil {
		t.Fatalf("parse %s: %v", dst, err)
	}
	if err := h.RouteAdd(&netlink.Route{Dst: d, Gw: net.ParseIP(gw)}); err != nil {
		t.Fatalf("add route %s via %s: %v", dst, gw, err)
	}
}

// Sysctl writes a sysctl inside ns.
func Sysctl(t testing.TB, ns *netns.NS, key, value string) {
	t.Helper()
	if err := ns.Do(func() error { return sysctl.Set(key, value) }); err != nil {
		t.Fatalf("sysctl %s=%s: %v", key, value, err)
	}
}

// Forwarding turns on IPv4 and IPv6 forwarding in ns.
func Forwarding(t testing.TB, ns *netns.NS) {
	t.Helper()
	Sysctl(t, ns, "net.ipv4.ip_forward", "1")
	Sysctl(t, ns, "net.ipv6.conf.all.forwarding", "1")
}

// Nft runs the nft command in ns (tests only; linen itself never runs it)
// and skips the test when nft is not installed.
func Nft(t testing.TB, ns *netns.NS, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipped: the nft command is not installed (apt-get install nftables)")
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", filepath.Base(ns.Path()), "nft"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The echo servers answer every request with "from <source address>".

// EchoTCP serves TCP on addr inside ns until the test ends.
func EchoTCP(t testing.TB, ns *netns.NS, addr string) {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen tcp %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					return
				}
				fmt.Fprintf(c, "from %s\n", c.RemoteAddr())
			}()
		}
	}()
}

// EchoUDP serves UDP on addr inside ns until the test ends.
func EchoUDP(t testing.TB, ns *netns.NS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(fmt.Sprintf("from %s\n", from)), from)
		}
	}()
}

// ErrNoAnswer is returned by the clients when nothing answered in time.
var ErrNoAnswer = errors.New("no answer")

// TCP connects from ns to addr, sends a line and returns the server's
// answer (trimmed), within timeout.
func TCP(ns *netns.NS, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "hello\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// UDP sends a datagram from ns (from local address laddr, "" for any) to
// addr and returns the answer, or ErrNoAnswer after timeout.
func UDP(ns *netns.NS, laddr, addr string, timeout time.Duration) (string, error) {
	var c *net.UDPConn
	if err := ns.Do(func() error {
		ra, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		var la *net.UDPAddr
		if laddr != "" {
			if la, err = net.ResolveUDPAddr("udp", laddr); err != nil {
				return err
			}
		}
		c, err = net.DialUDP("udp", la, ra)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", ErrNoAnswer
		}
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// From extracts the address from an echo answer "from 1.2.3.4:5".
func From(answer string) netip.Addr {
	ap, err := netip.ParseAddrPort(strings.TrimPrefix(answer, "from "))
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
