package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
)

var (
	tunAddr  = netip.MustParseAddr("10.9.0.1") // the kernel's side
	peerAddr = netip.MustParseAddr("10.9.0.2") // the test plays this host through the TUN
)

// openIn creates a TUN in a fresh namespace with 10.9.0.1/24, up. The
// device is closed after 20 s at the latest, so a test waiting on a packet
// that never comes fails instead of hanging.
func openIn(t *testing.T, c Config) (*netns.NS, *Linux) {
	t.Helper()
	ns := nstest.New(t)
	var d *Linux
	err := ns.Do(func() error {
		var err error
		d, err = Open(c)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	timer := time.AfterFunc(20*time.Second, func() { d.Close() })
	t.Cleanup(func() { timer.Stop() })
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(d.Name())
	if err != nil {
		t.Fatal(err)
	}
	if c.MTU > 0 && l.Attrs().MTU != c.MTU {
		t.Errorf("MTU %d, want %d", l.Attrs().MTU, c.MTU)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: tunAddr.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	return ns, d
}

// readIPv4 reads until an IPv4 packet of the given protocol arrives
// (skipping IPv6 noise such as router solicitations) and returns its
// virtio header and bytes.
func readIPv4(t *testing.T, d *Linux, proto uint8) (VirtioNetHdr, []byte) {
	t.Helper()
	buf := make([]byte, VirtioNetHdrLen+65535)
	for i := 0; i < 100; i++ {
		sizes := []int{0}
		if _, err := d.Read([][]byte{buf}, sizes); err != nil {
			t.Fatalf("read: %v", err)
		}
		p := buf[:sizes[0]]
		var h VirtioNetHdr
		if d.VnetHdr() {
			var err error
			if h, err = DecodeVirtioNetHdr(p); err != nil {
				t.Fatal(err)
			}
			p = p[VirtioNetHdrLen:]
		}
		if len(p) >= 20 && p[0]>>4 == 4 && p[9] == proto {
			return h, append([]byte(nil), p...)
		}
	}
	t.Fatal("no IPv4 packet in 100 reads")
	return VirtioNetHdr{}, nil
}

func TestLinuxPlainEcho(t *testing.T) {
	nstest.RequireRoot(t)
	_, d := openIn(t, Config{Name: "ltun%d", MTU: 1400})
	if d.VnetHdr() || d.Offload() != (Offload{}) {
		t.Fatalf("vnet %v offload %+v on a plain device", d.VnetHdr(), d.Offload())
	}
	// ICMP echo request from the peer to the kernel, which answers through the TUN.
	icmp := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'l', 'i', 'n', 'e', 'n'}
	binary.BigEndian.PutUint16(icmp[2:], refChecksum(icmp))
	req := append(ipHeader(peerAddr, tunAddr, ProtoICMP, len(icmp), 1, 64, 0, false), icmp...)
	if _, err := d.Write([][]byte{req[:20], req[20:]}); err != nil {
		t.Fatal(err)
	}
	_, rep := readIPv4(t, d, ProtoICMP)
	if rep[20] != 0 || !bytes.Equal(rep[24:], icmp[4:]) {
		t.Fatalf("reply %x", rep)
	}
	if netip.AddrFrom4([4]byte(rep[16:20])) != peerAddr {
		t.Fatalf("reply to %v", netip.AddrFrom4([4]byte(rep[16:20])))
	}
}

// TestLinuxUSORead sends one UDP GSO burst from a socket in the namespace
// to the peer and expects a single GSOUDPL4 super-packet on the TUN (the
// kernel supports TUN USO since 6.2), which Split turns back into the
// datagrams.
func TestLinuxUSORead(t *testing.T) {
	nstest.RequireRoot(t)
	ns, d := openIn(t, Config{Name: "ltun%d", VnetHdr: true, Offload: AllOffloads, MTU: 1400})
	if !d.Offload().USO {
		t.Skipf("kernel refused USO on the TUN (offload %+v)", d.Offload())
	}
	var fd int
	if err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	payload := pattern(4*1000+10, 1)
	oob := unix.UnixRights() // empty
	oob = appendUDPSegment(oob, 1000)
	if err := unix.Sendmsg(fd, payload, oob, &unix.SockaddrInet4{Port: 9, Addr: peerAddr.As4()}, 0); err != nil {
		t.Fatalf("sendmsg with UDP_SEGMENT: %v", err)
	}
	h, pkt := readIPv4(t, d, ProtoUDP)
	if h.GSOType != GSOUDPL4 || h.GSOSize != 1000 {
		t.Fatalf("header %v, want a USO super-packet of 1000-byte segments", h)
	}
	segs, err := Split(pkt, h, make([]byte, SplitLen(pkt, h)), nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for i, s := range segs {
		if !refValid(s) {
			t.Errorf("datagram %d does not verify", i)
		}
		got = append(got, s[28:]...)
	}
	if len(segs) != 5 || !bytes.Equal(got, payload) {
		t.Fatalf("%d datagrams, payload equal %v", len(segs), bytes.Equal(got, payload))
	}
}

func appendUDPSegment(oob []byte, size uint16) []byte {
	b := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafePointer(&b[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], size)
	return append(oob, b...)
}

// TestLinuxTCP plays a TCP peer through the TUN against the kernel's own
// stack: the kernel's segments arrive as TSO super-packets that Split must
// turn into valid segments, and the peer's data goes in as coalesced GRO
// super-packets that the kernel must accept and deliver intact.
func TestLinuxTCP(t *testing.T) {
	nstest.RequireRoot(t)
	ns, d := openIn(t, Config{Name: "ltun%d", VnetHdr: true, Offload: AllOffloads, MTU: 1400})
	if !d.Offload().TSO4 {
		t.Skipf("kernel refused TSO on the TUN (offload %+v)", d.Offload())
	}
	const mss = 1360
	type dialResult struct {
		c   net.Conn
		err error
	}
	dialed := make(chan dialResult, 1)
	go func() {
		var r dialResult
		r.err = ns.Do(func() error {
			var err error
			r.c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(peerAddr, 80).String(), 10*time.Second)
			return err
		})
		dialed <- r
	}()
	// Handshake: SYN in, SYN-ACK out (MSS option, no window scaling, no timestamps), ACK in.
	_, syn := readIPv4(t, d, ProtoTCP)
	if syn[33] != tcpSYN {
		t.Fatalf("first segment flags %#x, want SYN", syn[33])
	}
	p := &peer{t: t, d: d, lport: 80, rport: binary.BigEndian.Uint16(syn[20:]), seq: 5000, ack: binary.BigEndian.Uint32(syn[24:]) + 1}
	p.send(tcpSYN|tcpACK, []byte{2, 4, mss >> 8, mss & 0xff}, nil)
	p.seq++
	r := <-dialed
	if r.err != nil {
		t.Fatalf("dial through the TUN: %v", r.err)
	}
	conn := r.c
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))

	// Kernel -> peer: TSO reads.
	want := pattern(200000, 42)
	werr := make(chan error, 1)
	go func() { _, err := conn.Write(want); werr <- err }()
	var got []byte
	supers := 0
	for i := 0; i < 2000 && len(got) < len(want); i++ {
		h, pkt := readIPv4(t, d, ProtoTCP)
		segs, err := Split(pkt, h, make([]byte, SplitLen(pkt, h)), nil)
		if err != nil {
			t.Fatalf("split %v: %v", h, err)
		}
		if h.GSOType == GSOTCPv4 && len(segs) > 1 {
			supers++
		}
		for _, s := range segs {
			if !refValid(s) {
				t.Fatal("segment from the kernel does not verify after Split")
			}
			if len(s) > 20+20+mss {
				t.Fatalf("segment of %d bytes exceeds the MSS", len(s))
			}
			if seq := binary.BigEndian.Uint32(s[24:]); seq == p.ack {
				got = append(got, s[40:]...)
				p.ack += uint32(len(s) - 40)
			}
		}
		p.send(tcpACK, nil, nil)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("received %d bytes through Split, want the %d written", len(got), len(want))
	}
	if supers == 0 {
		t.Error("the kernel sent no TSO super-packet")
	}

	// Peer -> kernel: GRO writes, 40 KB per flight (the kernel's window is 64 KiB).
	data := pattern(300000, 7)
	rerr := make(chan error, 1)
	var rcvd bytes.Buffer
	go func() {
		_, err := rcvd.ReadFrom(conn)
		rerr <- err
	}()
	var c Coalescer
	for off := 0; off < len(data); {
		end := min(off+40000, len(data))
		for o := off; o < end; o += mss {
			flags := uint8(tcpACK)
			if o+mss >= end {
				flags |= tcpPSH
			}
			c.Add(p.segment(flags, nil, data[o:min(o+mss, end)]))
			p.seq += uint32(min(o+mss, end) - o)
		}
		if c.Len() != 1 {
			t.Fatalf("%d packets to write for one flight, want 1 super-packet", c.Len())
		}
		var flight [][]byte
		if err := c.Flush(func(iov [][]byte) error {
			for _, b := range iov {
				flight = append(flight, append([]byte(nil), b...))
			}
			_, err := d.Write(iov)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		// Wait for the kernel to acknowledge the flight, sending it again
		// every second meanwhile: a busy machine may drop a packet written
		// into the TUN, and this peer has no retransmission timer of its
		// own. A copy that arrives twice is acknowledged all the same.
		stop := make(chan struct{})
		go func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					_, _ = d.Write(flight)
				}
			}
		}()
		for i := 0; ; i++ {
			if i == 100 {
				close(stop)
				t.Fatal("flight not acknowledged")
			}
			_, a := readIPv4(t, d, ProtoTCP)
			if binary.BigEndian.Uint32(a[28:]) == p.seq {
				break
			}
		}
		close(stop)
		off = end
	}
	p.send(tcpFIN|tcpACK, nil, nil)
	if err := <-rerr; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatal(err)
	}
	if !bytes.Equal(rcvd.Bytes(), data) {
		t.Fatalf("kernel received %d bytes, want %d identical", rcvd.Len(), len(data))
	}
}

// peer is the test's side of one TCP connection through the TUN.
type peer struct {
	t        *testing.T
	d        *Linux
	lport    uint16 // the peer's port
	rport    uint16 // the kernel's port
	seq, ack uint32
	id       uint16
}

func (p *peer) segment(flags uint8, opts, payload []byte) []byte {
	p.id++
	return tcpSpec{src: peerAddr, dst: tunAddr, sport: p.lport, dport: p.rport, seq: p.seq, ack: p.ack,
		flags: flags, win: 65535, opts: opts, payload: payload, id: p.id, df: true}.build()
}

func (p *peer) send(flags uint8, opts, payload []byte) {
	p.t.Helper()
	var h [VirtioNetHdrLen]byte
	if _, err := p.d.Write([][]byte{h[:], p.segment(flags, opts, payload)}); err != nil {
		p.t.Fatal(err)
	}
}
