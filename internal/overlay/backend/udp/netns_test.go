package udp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/overlay/backend/backendtest"
	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-udp-") }

type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLog(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// node is a udp backend running on a simulated host.
type node struct {
	host  *backendtest.Host
	b     *Backend
	lease subnet.Lease
}

// start runs New, Prepare and Configure from a thread inside the host's
// namespace (the TUN and the socket are created there).
func start(t testing.TB, c *backendtest.Cluster, h *backendtest.Host, backendJSON string) *node {
	t.Helper()
	n := &node{host: h}
	err := h.NS.Do(func() error {
		b, err := New(c.NetConfig(BackendType, backendJSON), h.Ext, dataplane.Options{Log: testLog(t), Resync: -1})
		if err != nil {
			return err
		}
		n.b = b
		attrs, err := b.Prepare(context.Background())
		if err != nil {
			return err
		}
		n.lease = h.Lease(attrs)
		return b.Configure(n.lease)
	})
	if n.b != nil {
		t.Cleanup(func() { n.b.Close() })
	}
	if err != nil {
		t.Fatalf("host %d: start udp backend: %v", h.N, err)
	}
	return n
}

func syncAll(t testing.TB, nodes []*node) {
	t.Helper()
	var all []subnet.Lease
	for _, n := range nodes {
		all = append(all, n.lease)
	}
	for _, n := range nodes {
		if err := n.host.NS.Do(func() error { return n.b.Sync(all) }); err != nil {
			t.Fatalf("host %d: sync: %v", n.host.N, err)
		}
	}
}

func setup(t testing.TB, backendJSON string) (*backendtest.Cluster, []*node) {
	t.Helper()
	c := backendtest.New(t, 2, false)
	var nodes []*node
	for _, h := range c.Hosts {
		nodes = append(nodes, start(t, c, h, backendJSON))
	}
	syncAll(t, nodes)
	return c, nodes
}

func TestKernelState(t *testing.T) {
	t.Parallel()
	c, nodes := setup(t, `{"Type":"udp"}`)
	h := c.Hosts[0]
	l := h.Link("flannel0")
	if l == nil {
		t.Fatal("no flannel0")
	}
	if l.Type() != "tuntap" || l.Attrs().MTU != 1472 || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("flannel0: type %s MTU %d flags %v, want an up tuntap with MTU 1472", l.Type(), l.Attrs().MTU, l.Attrs().Flags)
	}
	if nodes[0].b.MTU() != 1472 {
		t.Errorf("MTU() = %d", nodes[0].b.MTU())
	}
	addrs, err := h.H.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.5.1.0/32" {
		t.Errorf("flannel0 addresses %v (%v), want only 10.5.1.0/32", addrs, err)
	}
	routes, err := h.H.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range routes {
		got = append(got, r.Dst.String())
	}
	if len(got) != 1 || got[0] != "10.5.0.0/16" {
		t.Errorf("routes via flannel0 %v, want [10.5.0.0/16]", got)
	}
	if r := Render(nodes[0].b.Routes()); r != "10.5.2.0/24 -> 192.0.2.12:8285\n" {
		t.Errorf("forwarding table:\n%s", r)
	}
	off := nodes[0].b.Offload()
	if !off.VnetHdr || !off.UDPGSO || !off.UDPGRO || !off.TCPGRO {
		t.Errorf("offloads in effect %+v, want all on this kernel", off)
	}

	// A changed own lease moves the address; the stale one goes.
	moved := nodes[0].lease
	moved.Subnet = netip.MustParsePrefix("10.5.7.0/24")
	if err := h.NS.Do(func() error { return nodes[0].b.Configure(moved) }); err != nil {
		t.Fatal(err)
	}
	addrs, _ = h.H.AddrList(l, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.5.7.0/32" {
		t.Errorf("after the lease moved: addresses %v, want only 10.5.7.0/32", addrs)
	}
}

// TestPods checks pod-to-pod ping and a TCP transfer across the two hosts
// for each offload combination, with the bytes verified.
func TestPods(t *testing.T) {
	for _, tc := range []struct{ name, backend string }{
		{"flannel data path", `{"Type":"udp","Offload":{"VnetHdr":false,"TCPGRO":false,"UDPGSO":false,"UDPGRO":false,"Batch":1,"SocketBuffer":0}}`},
		{"batch", `{"Type":"udp","Offload":{"VnetHdr":false,"TCPGRO":false,"UDPGSO":false,"UDPGRO":false}}`},
		{"batch udp gso gro", `{"Type":"udp","Offload":{"VnetHdr":false,"TCPGRO":false}}`},
		{"vnethdr without gro", `{"Type":"udp","Offload":{"TCPGRO":false,"UDPGRO":false}}`},
		{"all", `{"Type":"udp"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, nodes := setup(t, tc.backend)
			a, b := c.Hosts[0], c.Hosts[1]
			if err := backendtest.Ping(a.Pod, b.PodIP); err != nil {
				t.Fatalf("pod 1 -> pod 2: %v", err)
			}
			if err := backendtest.Ping(b.Pod, a.PodIP); err != nil {
				t.Fatalf("pod 2 -> pod 1: %v", err)
			}
			if err := backendtest.Ping(a.NS, b.PodIP); err != nil {
				t.Errorf("host 1 -> pod 2: %v", err)
			}
			transfer(t, a.Pod, b.Pod, b.PodIP, 16<<20)
			transfer(t, b.Pod, a.Pod, a.PodIP, 4<<20)
			st := nodes[0].b.Stats()
			off := nodes[0].b.Offload()
			if off.VnetHdr && st["tun_rx_super_packets"] == 0 {
				t.Errorf("VnetHdr on but no TSO super-packet was read: %v", st)
			}
			rst := nodes[1].b.Stats()
			if off.UDPGRO && off.UDPGSO && rst["udp_rx_gro_buffers"] == 0 {
				t.Errorf("UDP GSO and GRO on but no GRO buffer was received: %v", rst)
			}
			if off.TCPGRO && rst["tun_write_packets"] <= rst["tun_writes"] {
				t.Errorf("TCPGRO on but no TUN write carried more than one packet: %v", rst)
			}
			for _, k := range []string{"drop_malformed", "udp_tx_errors", "tun_write_errors", "drop_not_local"} {
				if st[k]+rst[k] != 0 {
					t.Errorf("%s = %d/%d", k, st[k], rst[k])
				}
			}
		})
	}
}

// transfer sends n pseudo-random bytes over TCP from a socket in src to a
// listener in dst and compares digests. Bounded by deadlines.
func transfer(t *testing.T, src, dst *netns.NS, dstIP netip.Addr, n int) {
	t.Helper()
	var ln net.Listener
	if err := dst.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(dstIP, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		m, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = m, err
		res <- r
	}()
	var conn net.Conn
	if err := src.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s: %v", ln.Addr(), err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, n)
	var x uint64 = 0x9e3779b97f4a7c15
	for i := 0; i+8 <= n; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(data[i:], x)
	}
	if _, err := conn.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	conn.Close()
	r := <-res
	if r.err != nil {
		t.Fatalf("receive: %v", r.err)
	}
	if r.n != int64(n) || r.sum != sha256.Sum256(data) {
		t.Fatalf("received %d bytes (digest match %v), sent %d", r.n, r.sum == sha256.Sum256(data), n)
	}
}

// TestUnknownSubnetUnreachable: a TCP connect from a pod to an address in
// the network that no node leases fails at once with "network is
// unreachable", thanks to the ICMP the backend writes back into the TUN.
func TestUnknownSubnetUnreachable(t *testing.T) {
	t.Parallel()
	c, nodes := setup(t, `{"Type":"udp"}`)
	var err error
	if derr := c.Hosts[0].Pod.Do(func() error {
		var conn net.Conn
		conn, err = net.DialTimeout("tcp4", "10.5.9.9:80", 8*time.Second)
		if conn != nil {
			conn.Close()
		}
		return nil
	}); derr != nil {
		t.Fatal(derr)
	}
	if !errors.Is(err, syscall.ENETUNREACH) {
		t.Fatalf("connect to a subnet nobody leases: %v, want ENETUNREACH", err)
	}
	if got := nodes[0].b.Stats()["icmp_unreachable_sent"]; got == 0 {
		t.Error("icmp_unreachable_sent not counted")
	}
}

// TestFlannelWireInterop plays a flannel node with a plain UDP socket on
// host 2 (no linen there): a datagram whose payload is a bare IPv4 echo
// request reaches pod 1 through host 1's TUN, and pod 1's answer comes
// back as a bare IPv4 packet in one datagram to host 2's port 8285.
func TestFlannelWireInterop(t *testing.T) {
	for _, tc := range []struct{ name, backend string }{
		{"all offloads", `{"Type":"udp"}`},
		{"no offloads", `{"Type":"udp","Offload":{"VnetHdr":false,"TCPGRO":false,"UDPGSO":false,"UDPGRO":false,"Batch":1}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := backendtest.New(t, 2, false)
			a, flannel := c.Hosts[0], c.Hosts[1]
			n := start(t, c, a, tc.backend)
			peerLease := flannel.Lease(subnet.LeaseAttrs{BackendType: BackendType})
			if err := a.NS.Do(func() error { return n.b.Sync([]subnet.Lease{n.lease, peerLease}) }); err != nil {
				t.Fatal(err)
			}
			var sock *net.UDPConn
			if err := flannel.NS.Do(func() error {
				var err error
				sock, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(flannel.Ext.IfaceAddr, DefaultPort)))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			sock.SetDeadline(time.Now().Add(10 * time.Second))
			remote := netip.MustParseAddr("10.5.2.99") // a pod on the flannel node
			for seq := uint16(1); seq <= 3; seq++ {
				payload := bytes.Repeat([]byte{byte(seq)}, 1000)
				req := echo(remote, a.PodIP, 8, seq, payload)
				if _, err := sock.WriteToUDPAddrPort(req, netip.AddrPortFrom(a.Ext.IfaceAddr, DefaultPort)); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 65536)
				m, from, err := sock.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("no answer from pod 1: %v (stats %v)", err, n.b.Stats())
				}
				rep := buf[:m]
				if from != netip.AddrPortFrom(a.Ext.IfaceAddr, DefaultPort) {
					t.Errorf("answer from %v, want host 1's port %d", from, DefaultPort)
				}
				if int(binary.BigEndian.Uint16(rep[2:])) != len(rep) || !validIPv4(rep) {
					t.Fatalf("datagram is not exactly one valid IPv4 packet:\n%s", hexdump(rep))
				}
				if rep[9] != 1 || rep[20] != 0 || netip.AddrFrom4([4]byte(rep[12:16])) != a.PodIP || netip.AddrFrom4([4]byte(rep[16:20])) != remote {
					t.Fatalf("not pod 1's echo reply to %v:\n%s", remote, hexdump(rep))
				}
				// pod (64) -> host 1 forwarding (63) -> TUN read (62).
				if rep[8] != 62 {
					t.Errorf("TTL %d, want 62", rep[8])
				}
				if binary.BigEndian.Uint16(rep[26:]) != seq || !bytes.Equal(rep[28:], payload) {
					t.Errorf("reply %d carries the wrong sequence or payload", seq)
				}
			}
		})
	}
}

// echo builds an ICMP echo request or reply (typ 8 or 0).
func echo(src, dst netip.Addr, typ uint8, seq uint16, payload []byte) []byte {
	l4 := append([]byte{typ, 0, 0, 0, 0x4c, 0x4e, byte(seq >> 8), byte(seq)}, payload...)
	binary.BigEndian.PutUint16(l4[2:], naiveSum(l4))
	return ipv4(src, dst, 1, 64, seq, 0, l4)
}
