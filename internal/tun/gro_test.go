package tun

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type emitted struct {
	h   VirtioNetHdr
	pkt []byte
}

func flush(t *testing.T, c *Coalescer) []emitted {
	t.Helper()
	var out []emitted
	err := c.Flush(func(iov [][]byte) error {
		h, err := DecodeVirtioNetHdr(iov[0])
		if err != nil {
			t.Fatal(err)
		}
		var p []byte
		for _, b := range iov[1:] {
			p = append(p, b...)
		}
		out = append(out, emitted{h, p})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Len() != 0 {
		t.Fatal("Flush left packets queued")
	}
	return out
}

// flowSegments cuts payload into mss-sized TCP segments of one flow, the
// way a sender's TSO would, with the last one carrying PSH.
func flowSegments(base tcpSpec, payload []byte, mss int) [][]byte {
	var segs [][]byte
	for i := 0; len(payload) > 0; i++ {
		n := min(mss, len(payload))
		s := base
		s.seq = base.seq + uint32(i*mss)
		s.id = base.id + uint16(i)
		s.payload = payload[:n]
		s.flags = tcpACK
		if n == len(payload) {
			s.flags |= tcpPSH
		}
		segs = append(segs, s.build())
		payload = payload[n:]
	}
	return segs
}

func clone(pkts [][]byte) [][]byte {
	var out [][]byte
	for _, p := range pkts {
		out = append(out, append([]byte(nil), p...))
	}
	return out
}

// TestCoalesceThenSplit checks that a merged super-packet is exactly what
// the kernel's TSO would have produced: splitting it again yields the
// original segments byte for byte.
func TestCoalesceThenSplit(t *testing.T) {
	ts := []byte{1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0}
	for _, tc := range []struct {
		name    string
		base    tcpSpec
		payload int
		mss     int
	}{
		{"v4", tcpSpec{src: a4, dst: b4, sport: 5201, dport: 40000, seq: 0xfffff000, ack: 5, id: 100, df: true, opts: ts}, 20000, 1420},
		{"v4 full 64KiB", tcpSpec{src: a4, dst: b4, sport: 5201, dport: 40000, seq: 1, ack: 5, id: 65530, df: true}, 65535 - 40, 1432},
		{"v6", tcpSpec{src: a6, dst: b6, sport: 5201, dport: 40000, seq: 1, ack: 5, opts: ts}, 30000, 1388},
		{"v4 short tail", tcpSpec{src: a4, dst: b4, sport: 1, dport: 2, seq: 1, ack: 5, id: 1}, 3*1000 + 17, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := pattern(tc.payload, 9)
			segs := flowSegments(tc.base, payload, tc.mss)
			orig := clone(segs)
			var c Coalescer
			for _, s := range segs {
				c.Add(s)
			}
			out := flush(t, &c)
			if len(out) != 1 {
				t.Fatalf("%d packets emitted, want 1", len(out))
			}
			e := out[0]
			ip, _ := parseIP(e.pkt)
			wantGSO := uint8(GSOTCPv4)
			if ip.v6 {
				wantGSO = GSOTCPv6
			}
			hdrLen := ip.l4off + 20 + len(tc.base.opts)
			wantH := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: wantGSO, HdrLen: uint16(hdrLen), GSOSize: uint16(tc.mss), CsumStart: uint16(ip.l4off), CsumOffset: 16}
			if e.h != wantH {
				t.Errorf("header %v, want %v", e.h, wantH)
			}
			if !ip.v6 && refFold(refSum(e.pkt[:20])) != 0xffff {
				t.Error("IPv4 header checksum of the super-packet does not verify")
			}
			if err := checkIPLen(e.pkt, ip); err != nil {
				t.Error(err)
			}
			// Completing the partial checksum must give a valid packet.
			full := append([]byte(nil), e.pkt...)
			if err := finishChecksum(full, e.h); err != nil || !refValid(full) {
				t.Errorf("completed super-packet checksum invalid (err %v)", err)
			}
			again, err := Split(e.pkt, e.h, make([]byte, SplitLen(e.pkt, e.h)), nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(orig, again); diff != "" {
				t.Errorf("split(coalesce(segments)) != segments (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCoalesceRules(t *testing.T) {
	base := tcpSpec{src: a4, dst: b4, sport: 5201, dport: 40000, seq: 1000, ack: 9, id: 1, flags: tcpACK}
	seg := func(i int, f func(*tcpSpec)) []byte {
		s := base
		s.seq += uint32(i * 100)
		s.id += uint16(i)
		s.payload = pattern(100, byte(i))
		if f != nil {
			f(&s)
		}
		return s.build()
	}
	other := func(s *tcpSpec) { s.sport = 5202; s.seq = 50000 + s.seq - 1000 }
	udp := udpPacket(a4, b4, 1, 2, pattern(100, 0), 0)
	// want lists, per emitted packet, how many segments it merged (1 = passed through).
	tests := []struct {
		name string
		pkts [][]byte
		want []int
	}{
		{"in order", [][]byte{seg(0, nil), seg(1, nil), seg(2, nil)}, []int{3}},
		{"two flows interleaved", [][]byte{seg(0, nil), seg(0, other), seg(1, nil), seg(1, other), seg(2, nil)}, []int{3, 2}},
		{"gap in sequence", [][]byte{seg(0, nil), seg(2, nil), seg(3, nil)}, []int{1, 2}},
		{"retransmission", [][]byte{seg(0, nil), seg(1, nil), seg(1, nil)}, []int{2, 1}},
		{"psh closes", [][]byte{seg(0, nil), seg(1, func(s *tcpSpec) { s.flags |= tcpPSH }), seg(2, nil)}, []int{2, 1}},
		{"psh first stands alone", [][]byte{seg(0, func(s *tcpSpec) { s.flags |= tcpPSH }), seg(1, nil)}, []int{1, 1}},
		{"different ack", [][]byte{seg(0, nil), seg(1, func(s *tcpSpec) { s.ack++ }), seg(2, func(s *tcpSpec) { s.ack++ })}, []int{1, 2}},
		{"different ttl", [][]byte{seg(0, nil), seg(1, func(s *tcpSpec) { s.ttl = 9 })}, []int{1, 1}},
		{"different tos", [][]byte{seg(0, nil), seg(1, func(s *tcpSpec) { s.tos = 3 })}, []int{1, 1}},
		{"options differ", [][]byte{seg(0, func(s *tcpSpec) { s.opts = []byte{1, 1, 1, 1} }), seg(1, func(s *tcpSpec) { s.opts = []byte{1, 1, 1, 0} })}, []int{1, 1}},
		{"syn", [][]byte{seg(0, func(s *tcpSpec) { s.flags = tcpSYN }), seg(1, nil)}, []int{1, 1}},
		{"fin", [][]byte{seg(0, nil), seg(1, func(s *tcpSpec) { s.flags |= tcpFIN })}, []int{1, 1}},
		{"rst", [][]byte{seg(0, nil), seg(1, func(s *tcpSpec) { s.flags = tcpRST | tcpACK })}, []int{1, 1}},
		{"ece", [][]byte{seg(0, nil), seg(1, func(s *tcpSpec) { s.flags |= tcpECE })}, []int{1, 1}},
		{"pure ack", [][]byte{seg(0, func(s *tcpSpec) { s.payload = nil }), seg(0, func(s *tcpSpec) { s.payload = nil; s.ack++ })}, []int{1, 1}},
		{"bigger than first", [][]byte{seg(0, nil), seg(1, func(s *tcpSpec) { s.payload = pattern(101, 0) })}, []int{1, 1}},
		{"short closes", [][]byte{seg(0, nil), seg(1, func(s *tcpSpec) { s.payload = pattern(50, 0) }), seg(2, func(s *tcpSpec) { s.seq -= 50 })}, []int{2, 1}},
		{"udp passes", [][]byte{seg(0, nil), udp, seg(1, nil)}, []int{2, 1}},
		{"fragment passes", [][]byte{seg(0, func(s *tcpSpec) {}), fragment(seg(1, nil))}, []int{1, 1}},
		{"window change merges", [][]byte{seg(0, nil), seg(1, func(s *tcpSpec) { s.win = 999 })}, []int{2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c Coalescer
			var total int
			for _, p := range tc.pkts {
				total += len(p) - 40
				c.Add(append([]byte(nil), p...))
			}
			var got []int
			for _, e := range flush(t, &c) {
				if e.h.GSOType == GSONone {
					got = append(got, 1)
					continue
				}
				got = append(got, (len(e.pkt)-int(e.h.HdrLen)+int(e.h.GSOSize)-1)/int(e.h.GSOSize))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("merged counts (-want +got):\n%s", diff)
			}
		})
	}
}

func fragment(p []byte) []byte {
	p = append([]byte(nil), p...)
	p[6] |= 0x20 // MF
	p[10], p[11] = 0, 0
	binary.BigEndian.PutUint16(p[10:], refChecksum(p[:20]))
	return p
}

// TestCoalesceRandom feeds random interleavings of several flows, with
// random drops and reordering, and checks that every flow's bytes come out
// in the order they went in and every packet verifies.
func TestCoalesceRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for iter := 0; iter < 200; iter++ {
		nflows := 1 + r.IntN(4)
		var in [][]byte
		type flowState struct{ seq uint32 }
		fs := make([]flowState, nflows)
		for i := 0; i < 100; i++ {
			f := r.IntN(nflows)
			n := 1 + r.IntN(200)
			if r.IntN(10) == 0 {
				n = 200 // many equal-sized segments
			}
			s := tcpSpec{src: a4, dst: b4, sport: uint16(1000 + f), dport: 80, seq: fs[f].seq, ack: 1, flags: tcpACK, payload: pattern(n, byte(i)), id: uint16(i)}
			if r.IntN(20) == 0 {
				s.flags |= tcpPSH
			}
			if r.IntN(30) != 0 { // sometimes a gap
				fs[f].seq += uint32(n)
			}
			in = append(in, s.build())
		}
		// Expected: per flow, the concatenation of segments in input order.
		want := map[uint16][]byte{}
		for _, p := range in {
			want[binary.BigEndian.Uint16(p[20:])] = append(want[binary.BigEndian.Uint16(p[20:])], p[40:]...)
		}
		var c Coalescer
		for _, p := range clone(in) {
			c.Add(p)
		}
		got := map[uint16][]byte{}
		for _, e := range flush(t, &c) {
			segs, err := Split(e.pkt, e.h, make([]byte, SplitLen(e.pkt, e.h)+1), nil)
			if err != nil {
				t.Fatalf("iteration %d: split emitted packet: %v", iter, err)
			}
			for _, s := range segs {
				if !refValid(s) {
					t.Fatalf("iteration %d: emitted segment does not verify", iter)
				}
				got[binary.BigEndian.Uint16(s[20:])] = append(got[binary.BigEndian.Uint16(s[20:])], s[40:]...)
			}
		}
		for port, w := range want {
			if !bytes.Equal(got[port], w) {
				t.Fatalf("iteration %d: flow %d bytes differ (got %d, want %d)", iter, port, len(got[port]), len(w))
			}
		}
	}
}
