package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	a4 = netip.MustParseAddr("10.1.1.2")
	b4 = netip.MustParseAddr("10.1.2.3")
	a6 = netip.MustParseAddr("fd00::1:2")
	b6 = netip.MustParseAddr("fd00::2:3")
)

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if got, want := Checksum(b), refChecksum(b); got != want {
			t.Fatalf("len %d: Checksum = %#04x, reference %#04x", n, got, want)
		}
		dst := make([]byte, n+3)
		acc := csumCopy(dst, b, 0)
		if !bytes.Equal(dst[:n], b) {
			t.Fatalf("len %d: csumCopy did not copy", n)
		}
		if got, want := ^csumFold(acc), refChecksum(b); got != want {
			t.Fatalf("len %d: csumCopy sum %#04x, reference %#04x", n, got, want)
		}
	}
	// All-ones data exercises the end-around carries.
	ff := bytes.Repeat([]byte{0xff}, 4099)
	if got, want := Checksum(ff), refChecksum(ff); got != want {
		t.Fatalf("0xff*4099: %#04x, reference %#04x", got, want)
	}
}

func TestVirtioNetHdrRoundTrip(t *testing.T) {
	h := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, HdrLen: 52, GSOSize: 1420, CsumStart: 20, CsumOffset: 16}
	var b [VirtioNetHdrLen]byte
	h.Encode(b[:])
	got, err := DecodeVirtioNetHdr(b[:])
	if err != nil {
		t.Fatal(err)
	}
	if got != h {
		t.Fatalf("round trip: %v != %v", got, h)
	}
	if _, err := DecodeVirtioNetHdr(b[:9]); err == nil {
		t.Fatal("short header decoded")
	}
}

// segSpec is what one expected segment looks like.
type segSpec struct {
	Len   int
	Seq   uint32
	Flags uint8
	ID    uint16
}

func TestSplitTCP(t *testing.T) {
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP TS
	tests := []struct {
		name    string
		src     netip.Addr
		dst     netip.Addr
		opts    []byte
		flags   uint8
		payload int
		mss     int
		want    []segSpec
	}{
		{
			name: "v4 even", src: a4, dst: b4, flags: tcpACK | tcpPSH, payload: 3000, mss: 1000,
			want: []segSpec{{1040, 100, tcpACK, 7}, {1040, 1100, tcpACK, 8}, {1040, 2100, tcpACK | tcpPSH, 9}},
		},
		{
			name: "v4 short tail with options, FIN and CWR", src: a4, dst: b4, opts: ts, flags: tcpACK | tcpFIN | tcpCWR, payload: 2500, mss: 1000,
			want: []segSpec{{1052, 100, tcpACK | tcpCWR, 7}, {1052, 1100, tcpACK, 8}, {552, 2100, tcpACK | tcpFIN, 9}},
		},
		{
			name: "v4 odd mss", src: a4, dst: b4, flags: tcpACK, payload: 1001, mss: 333,
			want: []segSpec{{373, 100, tcpACK, 7}, {373, 433, tcpACK, 8}, {373, 766, tcpACK, 9}, {42, 1099, tcpACK, 10}},
		},
		{
			name: "v4 one segment", src: a4, dst: b4, flags: tcpACK, payload: 500, mss: 1400,
			want: []segSpec{{540, 100, tcpACK, 7}},
		},
		{
			name: "v6", src: a6, dst: b6, opts: ts, flags: tcpACK | tcpPSH, payload: 64000, mss: 1408,
		},
		{
			name: "v4 64KiB", src: a4, dst: b4, flags: tcpACK, payload: 65535 - 40, mss: 1432,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			payload := pattern(tc.payload, 0x5a)
			sp := tcpSpec{src: tc.src, dst: tc.dst, sport: 5201, dport: 40000, seq: 100, ack: 77, flags: tc.flags, opts: tc.opts, payload: payload, id: 7, df: true}
			pkt := partial(sp.build())
			orig := append([]byte(nil), pkt...)
			ip, _ := parseIP(pkt)
			gt := uint8(GSOTCPv4)
			if ip.v6 {
				gt = GSOTCPv6
			}
			h := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: gt, HdrLen: 1, GSOSize: uint16(tc.mss), CsumStart: uint16(ip.l4off), CsumOffset: 16}
			out := make([]byte, SplitLen(pkt, h))
			segs, err := Split(pkt, h, out, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pkt, orig) {
				t.Error("Split modified its input")
			}
			hdrLen := ip.l4off + 20 + len(tc.opts)
			var got []segSpec
			var joined []byte
			for i, s := range segs {
				if !refValid(s) {
					t.Errorf("segment %d: checksum does not verify", i)
				}
				if i < len(segs)-1 && len(s) != hdrLen+tc.mss {
					t.Errorf("segment %d: %d bytes, want %d", i, len(s), hdrLen+tc.mss)
				}
				var id uint16
				if !ip.v6 {
					id = binary.BigEndian.Uint16(s[4:])
					if int(binary.BigEndian.Uint16(s[2:])) != len(s) {
						t.Errorf("segment %d: total length field", i)
					}
				} else if int(binary.BigEndian.Uint16(s[4:]))+40 != len(s) {
					t.Errorf("segment %d: payload length field", i)
				}
				if !bytes.Equal(s[ip.l4off+20:hdrLen], tc.opts) {
					t.Errorf("segment %d: options changed", i)
				}
				got = append(got, segSpec{len(s), binary.BigEndian.Uint32(s[ip.l4off+4:]), s[ip.l4off+13], id})
				joined = append(joined, s[hdrLen:]...)
			}
			if !bytes.Equal(joined, payload) {
				t.Error("segments do not carry the payload")
			}
			if tc.want != nil {
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("segments (-want +got):\n%s", diff)
				}
			} else if n := (tc.payload + tc.mss - 1) / tc.mss; len(segs) != n {
				t.Errorf("%d segments, want %d", len(segs), n)
			}
		})
	}
}

func TestSplitUDP(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
		payload  int
		mss      int
	}{
		{"v4", a4, b4, 3700, 1200},
		{"v6", a6, b6, 8000, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := pattern(tc.payload, 3)
			var pkt []byte
			if tc.src.Is4() {
				pkt = udpPacket(tc.src, tc.dst, 4433, 53, payload, 40)
			} else {
				l4 := make([]byte, 8+len(payload))
				binary.BigEndian.PutUint16(l4[0:], 4433)
				binary.BigEndian.PutUint16(l4[2:], 53)
				binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
				copy(l4[8:], payload)
				pkt = append(ipHeader(tc.src, tc.dst, ProtoUDP, len(l4), 0, 64, 0, false), l4...)
			}
			pkt = partial(pkt)
			ip, _ := parseIP(pkt)
			h := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOUDPL4, GSOSize: uint16(tc.mss), CsumStart: uint16(ip.l4off), CsumOffset: 6}
			segs, err := Split(pkt, h, make([]byte, SplitLen(pkt, h)), nil)
			if err != nil {
				t.Fatal(err)
			}
			var joined []byte
			for i, s := range segs {
				if !refValid(s) {
					t.Errorf("datagram %d: checksum does not verify", i)
				}
				l4 := s[ip.l4off:]
				if int(binary.BigEndian.Uint16(l4[4:])) != len(l4) {
					t.Errorf("datagram %d: UDP length %d, want %d", i, binary.BigEndian.Uint16(l4[4:]), len(l4))
				}
				if !ip.v6 && binary.BigEndian.Uint16(s[4:]) != 40+uint16(i) {
					t.Errorf("datagram %d: IP ID %d", i, binary.BigEndian.Uint16(s[4:]))
				}
				joined = append(joined, l4[8:]...)
			}
			if want := (tc.payload + tc.mss - 1) / tc.mss; len(segs) != want {
				t.Errorf("%d datagrams, want %d", len(segs), want)
			}
			if !bytes.Equal(joined, payload) {
				t.Error("datagrams do not carry the payload")
			}
		})
	}
}

func TestSplitNoGSO(t *testing.T) {
	valid := tcpSpec{src: a4, dst: b4, sport: 1, dport: 2, seq: 9, flags: tcpACK, payload: pattern(99, 1)}.build()
	t.Run("needs csum", func(t *testing.T) {
		pkt := partial(valid)
		segs, err := Split(pkt, VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 20, CsumOffset: 16}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(segs) != 1 || &segs[0][0] != &pkt[0] {
			t.Fatal("want the packet itself")
		}
		if !bytes.Equal(segs[0], valid) {
			t.Fatal("checksum not completed to the valid packet")
		}
	})
	t.Run("plain", func(t *testing.T) {
		pkt := append([]byte(nil), valid...)
		segs, err := Split(pkt, VirtioNetHdr{}, nil, nil)
		if err != nil || len(segs) != 1 || !bytes.Equal(segs[0], valid) {
			t.Fatalf("got %v, %v", segs, err)
		}
	})
	t.Run("udp zero checksum becomes ffff", func(t *testing.T) {
		// Find a payload whose UDP checksum computes to 0.
		for i := 0; i < 1<<16; i++ {
			p := []byte{byte(i >> 8), byte(i)}
			pkt := udpPacket(a4, b4, 1, 2, p, 0)
			if binary.BigEndian.Uint16(pkt[26:]) != 0xffff {
				continue
			}
			pp := partial(pkt)
			if _, err := Split(pp, VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 20, CsumOffset: 6}, nil, nil); err != nil {
				t.Fatal(err)
			}
			if binary.BigEndian.Uint16(pp[26:]) != 0xffff {
				t.Fatalf("checksum %#04x, want 0xffff", binary.BigEndian.Uint16(pp[26:]))
			}
			return
		}
		t.Skip("no payload with a zero checksum found")
	})
}

func TestSplitErrors(t *testing.T) {
	good := partial(tcpSpec{src: a4, dst: b4, flags: tcpACK, payload: pattern(3000, 0)}.build())
	tso := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}
	mod := func(f func(p []byte)) []byte {
		p := append([]byte(nil), good...)
		f(p)
		return p
	}
	tests := []struct {
		name string
		pkt  []byte
		h    VirtioNetHdr
		out  int
		want error
	}{
		{"empty", nil, tso, 1 << 17, ErrMalformed},
		{"version 5", mod(func(p []byte) { p[0] = 0x55 }), tso, 1 << 17, ErrMalformed},
		{"ihl too small", mod(func(p []byte) { p[0] = 0x44 }), tso, 1 << 17, ErrMalformed},
		{"length mismatch", good[:2000], tso, 1 << 17, ErrMalformed},
		{"tcp gso on udp", partial(udpPacket(a4, b4, 1, 2, pattern(3000, 0), 0)), tso, 1 << 17, ErrMalformed},
		{"v6 gso type on v4", good, VirtioNetHdr{GSOType: GSOTCPv6, GSOSize: 1000}, 1 << 17, ErrMalformed},
		{"data offset 4", mod(func(p []byte) { p[32] = 0x40 }), tso, 1 << 17, ErrMalformed},
		{"gso size 0", good, VirtioNetHdr{GSOType: GSOTCPv4}, 1 << 17, ErrMalformed},
		{"ufo", good, VirtioNetHdr{GSOType: GSOUDP, GSOSize: 1000}, 1 << 17, ErrUnsupported},
		{"out too small", good, tso, 3000, ErrShortBuffer},
		{"csum offset beyond packet", good[:40], VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 30, CsumOffset: 16}, 0, ErrMalformed},
		{"csum start inside the IP header", good, VirtioNetHdr{Flags: FlagNeedsCsum, CsumStart: 2, CsumOffset: 0}, 0, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Split(tc.pkt, tc.h, make([]byte, tc.out), nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
