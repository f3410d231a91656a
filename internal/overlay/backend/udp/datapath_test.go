package udp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/tun"
)

// fakeConn is the socket side of a data path under test: datagrams given
// to deliver come out of ReadBatch; messages passed to WriteBatch are
// copied to sent.
type fakeConn struct {
	in   chan fakeDatagram
	sent chan sentMsg
	done chan struct{}
	once sync.Once
}

type fakeDatagram struct {
	data []byte
	gso  int
}

type sentMsg struct {
	To      netip.AddrPort
	Segs    [][]byte
	GSOSize int
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan fakeDatagram, 64), sent: make(chan sentMsg, 256), done: make(chan struct{})}
}

func (c *fakeConn) ReadBatch(ms []rxMsg) (int, error) {
	var d fakeDatagram
	select {
	case d = <-c.in:
	case <-c.done:
		return 0, errConnClosed
	}
	n := 0
	for {
		ms[n].n = copy(ms[n].buf, d.data)
		ms[n].trunc = len(d.data) > len(ms[n].buf)
		ms[n].gsoSize = d.gso
		n++
		if n == len(ms) {
			return n, nil
		}
		select {
		case d = <-c.in:
		default:
			return n, nil
		}
	}
}

func (c *fakeConn) WriteBatch(ms []txMsg) error {
	for _, m := range ms {
		s := sentMsg{To: m.to}
		if len(m.segs) > 1 {
			s.GSOSize = m.gsoSize
		}
		for _, b := range m.segs {
			s.Segs = append(s.Segs, append([]byte(nil), b...))
		}
		select {
		case c.sent <- s:
		case <-c.done:
			return errConnClosed
		}
	}
	return nil
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

var (
	network = netip.MustParsePrefix("10.5.0.0/16")
	ownNet  = netip.MustParsePrefix("10.5.1.0/24")
	podA    = netip.MustParseAddr("10.5.1.2") // on this node
	podB    = netip.MustParseAddr("10.5.2.2") // on node B
	peerB   = netip.MustParseAddrPort("192.0.2.12:8285")
)

type harness struct {
	dev  *tun.Fake
	conn *fakeConn
	dp   *dataPath
	st   *counters
	wg   sync.WaitGroup
}

// newHarness runs a data path between a fake TUN and a fake socket on
// "node A" (10.5.1.0/24) with a route for 10.5.2.0/24 to 192.0.2.12:8285.
func newHarness(t *testing.T, off Offload) *harness {
	t.Helper()
	h := &harness{dev: tun.NewFake("flannel0", off.VnetHdr, 64), conn: newFakeConn(), st: &counters{}}
	h.dp = newDataPath(h.dev, h.conn, off, h.st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.dp.local.Store(&local{subnet: ownNet, icmpSrc: network.Addr()})
	h.dp.routes.Store(newTable([]Route{{Subnet: netip.MustParsePrefix("10.5.2.0/24"), Peer: peerB}}))
	for _, run := range []func() error{h.dp.runTx, h.dp.runRx} {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			if err := run(); err != nil {
				t.Errorf("data path: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		h.dev.Close()
		h.conn.Close()
		h.wg.Wait()
	})
	return h
}

// fromPod puts a packet into the TUN as the kernel would (plain, or behind
// a virtio header).
func (h *harness) fromPod(pkt []byte, vh tun.VirtioNetHdr) {
	if h.dev.VnetHdr() {
		var b [tun.VirtioNetHdrLen]byte
		vh.Encode(b[:])
		pkt = append(b[:], pkt...)
	}
	h.dev.Inject(pkt)
}

// toPod returns the next packet written to the TUN and its virtio header.
func (h *harness) toPod(t *testing.T) (tun.VirtioNetHdr, []byte) {
	t.Helper()
	p := recv(t, h.dev.Written(), "packet written to the TUN")
	if !h.dev.VnetHdr() {
		return tun.VirtioNetHdr{}, p
	}
	vh, err := tun.DecodeVirtioNetHdr(p)
	if err != nil {
		t.Fatal(err)
	}
	return vh, p[tun.VirtioNetHdrLen:]
}

func hexdump(b []byte) string {
	var s strings.Builder
	for i := 0; i < len(b); i += 16 {
		fmt.Fprintf(&s, "%04x  %s\n", i, hex.EncodeToString(b[i:min(i+16, len(b))]))
	}
	return s.String()
}

// TestWireFormat pins flannel's wire format: a pod's packet leaves as the
// payload of one UDP datagram to the peer's PublicIP:8285, byte for byte
// the inner IPv4 packet with its TTL decremented and its header checksum
// patched, nothing before or after it.
func TestWireFormat(t *testing.T) {
	h := newHarness(t, Offload{Batch: 1})
	in := udpPkt(podA, podB, 33000, 7, 64, []byte("hello flannel"))
	h.fromPod(append([]byte(nil), in...), tun.VirtioNetHdr{})
	m := recv(t, h.conn.sent, "datagram")
	if m.To != peerB || len(m.Segs) != 1 {
		t.Fatalf("sent %d datagrams to %v, want 1 to %v", len(m.Segs), m.To, peerB)
	}
	got := m.Segs[0]
	golden(t, "wire-tun-to-udp", hexdump(got))
	want := append([]byte(nil), in...)
	want[8] = 63
	binary.BigEndian.PutUint16(want[10:], 0)
	binary.BigEndian.PutUint16(want[10:], naiveSum(want[:20]))
	if !bytes.Equal(got, want) {
		t.Fatalf("payload\n%s\nwant\n%s", hexdump(got), hexdump(want))
	}

	// The other way: a datagram from node B with an inner packet for podA
	// reaches the TUN with the TTL decremented.
	back := udpPkt(podB, podA, 7, 33000, 63, []byte("hello back"))
	h.conn.in <- fakeDatagram{data: append([]byte(nil), back...)}
	_, p := h.toPod(t)
	golden(t, "wire-udp-to-tun", hexdump(p))
	if p[8] != 62 || !validIPv4(p) || !bytes.Equal(p[12:], back[12:]) {
		t.Fatalf("delivered\n%s", hexdump(p))
	}
}

func TestNoRouteICMP(t *testing.T) {
	h := newHarness(t, Offload{Batch: 8})
	sentinel := udpPkt(podA, podB, 1, 2, 64, []byte("sentinel"))
	unknown := netip.MustParseAddr("10.5.9.9")
	tests := []struct {
		name string
		pkt  []byte
		icmp bool
	}{
		{"udp", udpPkt(podA, unknown, 1000, 53, 64, []byte("q")), true},
		{"tcp", tcpPkt(podA, unknown, 1, 0x02, 64, 1, nil), true},
		{"icmp gets none", icmpEcho(podA, unknown, 64), false},
		{"non-first fragment gets none", ipv4(podA, unknown, 17, 64, 9, 0x0002, pattern(16, 0)), false},
		{"first fragment", ipv4(podA, unknown, 17, 64, 9, 0x2000, pattern(16, 0)), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.st.dropNoRoute.Load()
			h.fromPod(append([]byte(nil), tc.pkt...), tun.VirtioNetHdr{})
			if tc.icmp {
				_, p := h.toPod(t)
				if !validIPv4(p) || p[9] != 1 || p[20] != 3 || p[21] != 0 {
					t.Fatalf("not an ICMP net unreachable:\n%s", hexdump(p))
				}
				if netip.AddrFrom4([4]byte(p[12:16])) != network.Addr() || netip.AddrFrom4([4]byte(p[16:20])) != podA {
					t.Errorf("ICMP %v -> %v, want %v -> %v", p[12:16], p[16:20], network.Addr(), podA)
				}
				if !bytes.Equal(p[28:], tc.pkt[:28]) {
					t.Errorf("quote %x, want the header and 8 bytes %x", p[28:], tc.pkt[:28])
				}
			}
			// The data path handles packets in order: the sentinel comes out
			// next on the socket, and no ICMP came for a "none" case if the
			// next TUN write is absent by the time a second sentinel ICMP is.
			h.fromPod(append([]byte(nil), sentinel...), tun.VirtioNetHdr{})
			recv(t, h.conn.sent, "sentinel datagram")
			if !tc.icmp {
				h.fromPod(udpPkt(podA, unknown, 1, 1, 64, nil), tun.VirtioNetHdr{})
				_, p := h.toPod(t)
				if !bytes.Equal(p[28+20:28+22], []byte{0, 1}) { // quoted UDP source port 1
					t.Fatalf("an ICMP was sent for the packet that must get none:\n%s", hexdump(p))
				}
			}
			if h.st.dropNoRoute.Load() == before {
				t.Error("drop_no_route not counted")
			}
		})
	}
}

func TestTTLAndLocality(t *testing.T) {
	h := newHarness(t, Offload{Batch: 8})
	sentinelOut := udpPkt(podA, podB, 1, 2, 64, []byte("out"))
	sentinelIn := udpPkt(podB, podA, 1, 2, 64, []byte("in"))

	h.fromPod(udpPkt(podA, podB, 1, 2, 1, []byte("ttl 1")), tun.VirtioNetHdr{})
	h.fromPod(append([]byte(nil), sentinelOut...), tun.VirtioNetHdr{})
	if m := recv(t, h.conn.sent, "datagram"); !bytes.Equal(m.Segs[0][20:], sentinelOut[20:]) {
		t.Fatal("TTL 1 packet was sent")
	}
	h.conn.in <- fakeDatagram{data: udpPkt(podB, podA, 1, 2, 1, []byte("ttl 1"))}
	h.conn.in <- fakeDatagram{data: udpPkt(podB, netip.MustParseAddr("10.5.3.3"), 1, 2, 64, []byte("not mine"))}
	h.conn.in <- fakeDatagram{data: []byte{0x60, 0, 0, 0}}
	h.conn.in <- fakeDatagram{data: append([]byte(nil), sentinelIn...)}
	if _, p := h.toPod(t); !bytes.Equal(p[20:], sentinelIn[20:]) {
		t.Fatalf("dropped packet delivered:\n%s", hexdump(p))
	}
	want := map[string]uint64{"drop_ttl": 2, "drop_not_local": 1, "drop_not_ipv4": 1}
	got := map[string]uint64{}
	for k := range want {
		got[k] = h.st.snapshot()[k]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
}

// tsoPacket is a TCP super-packet as the kernel hands it over a TUN with
// TSO: headers of the whole, partial checksum, GSO size.
func tsoPacket(payload []byte, mss int) ([]byte, tun.VirtioNetHdr) {
	p := tcpPkt(podA, podB, 1000, 0x18, 64, 5, payload)
	l4len := len(p) - 20
	s, d := podA.As4(), podB.As4()
	ph := append(append(s[:], d[:]...), 0, 6, byte(l4len>>8), byte(l4len))
	binary.BigEndian.PutUint16(p[36:], ^naiveSum(ph))
	return p, tun.VirtioNetHdr{Flags: tun.FlagNeedsCsum, GSOType: tun.GSOTCPv4, GSOSize: uint16(mss), CsumStart: 20, CsumOffset: 16}
}

func TestSendGSO(t *testing.T) {
	payload := pattern(2500, 1)
	for _, tc := range []struct {
		name string
		off  Offload
		want []int // segments per message
	}{
		{"udp gso groups the segments", Offload{VnetHdr: true, UDPGSO: true, Batch: 8}, []int{3}},
		{"without udp gso one message per segment", Offload{VnetHdr: true, Batch: 8}, []int{1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.off)
			pkt, vh := tsoPacket(payload, 1000)
			h.fromPod(pkt, vh)
			var got []int
			var joined []byte
			for n := 0; n < 3; {
				m := recv(t, h.conn.sent, "datagrams")
				got = append(got, len(m.Segs))
				if len(m.Segs) > 1 && m.GSOSize != 1040 {
					t.Errorf("GSO size %d, want 1040", m.GSOSize)
				}
				for _, s := range m.Segs {
					if !validIPv4(s) || s[8] != 63 {
						t.Errorf("segment invalid or TTL %d", s[8])
					}
					joined = append(joined, s[40:]...)
				}
				n += len(m.Segs)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("segments per message (-want +got):\n%s", diff)
			}
			if !bytes.Equal(joined, payload) {
				t.Error("payload mangled")
			}
		})
	}
}

// TestReceiveGRO hands the data path one UDP GRO buffer holding three
// datagrams of a TCP flow; with TCPGRO they reach the TUN as one
// super-packet.
func TestReceiveGRO(t *testing.T) {
	var buf []byte
	for i := 0; i < 3; i++ {
		seg := tcpPkt(podB, podA, uint32(1000+i*1000), 0x10, 64, uint16(i), pattern(1000, byte(i)))
		buf = append(buf, seg...)
	}
	t.Run("coalesced", func(t *testing.T) {
		h := newHarness(t, Offload{VnetHdr: true, TCPGRO: true, UDPGRO: true, Batch: 8})
		h.conn.in <- fakeDatagram{data: append([]byte(nil), buf...), gso: 1040}
		vh, p := h.toPod(t)
		want := tun.VirtioNetHdr{Flags: tun.FlagNeedsCsum, GSOType: tun.GSOTCPv4, HdrLen: 40, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}
		if vh != want || len(p) != 3040 || p[8] != 63 {
			t.Fatalf("wrote %v, %d bytes, TTL %d; want %v, 3040 bytes, TTL 63", vh, len(p), p[8], want)
		}
	})
	t.Run("plain", func(t *testing.T) {
		h := newHarness(t, Offload{UDPGRO: true, Batch: 8})
		h.conn.in <- fakeDatagram{data: append([]byte(nil), buf...), gso: 1040}
		for i := 0; i < 3; i++ {
			_, p := h.toPod(t)
			if len(p) != 1040 || !validIPv4(p) || binary.BigEndian.Uint32(p[24:]) != uint32(1000+i*1000) {
				t.Fatalf("packet %d: %d bytes, seq %d", i, len(p), binary.BigEndian.Uint32(p[24:]))
			}
		}
		if got := h.st.udpRxGRO.Load(); got != 1 {
			t.Errorf("udp_rx_gro_buffers = %d, want 1", got)
		}
	})
}
