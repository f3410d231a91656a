package tun

import (
	"encoding/binary"
	"testing"
)

// FuzzSplit feeds arbitrary virtio headers and packets to Split: it must
// never panic or write outside out, and whatever it returns must add up.
func FuzzSplit(f *testing.F) {
	tso := partial(tcpSpec{src: a4, dst: b4, flags: tcpACK, payload: pattern(3000, 0)}.build())
	var h [VirtioNetHdrLen]byte
	VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}.Encode(h[:])
	f.Add(append(h[:], tso...))
	VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOUDPL4, GSOSize: 500, CsumStart: 20, CsumOffset: 6}.Encode(h[:])
	f.Add(append(h[:], partial(udpPacket(a4, b4, 1, 2, pattern(1700, 1), 0))...))
	VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv6, GSOSize: 700, CsumStart: 40, CsumOffset: 16}.Encode(h[:])
	f.Add(append(h[:], partial(tcpSpec{src: a6, dst: b6, flags: tcpACK, payload: pattern(2000, 0)}.build())...))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x45})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeVirtioNetHdr(b)
		if err != nil {
			return
		}
		pkt := append([]byte(nil), b[VirtioNetHdrLen:]...)
		need := SplitLen(pkt, h)
		out := make([]byte, need)
		segs, err := Split(pkt, h, out, nil)
		if err != nil {
			return
		}
		if h.GSOType&^GSOECN == GSONone {
			if len(segs) != 1 || len(segs[0]) != len(pkt) {
				t.Fatalf("no-GSO split returned %d segments", len(segs))
			}
			return
		}
		total := 0
		for i, s := range segs {
			total += len(s)
			ip, err := parseIP(s)
			if err != nil {
				t.Fatalf("segment %d unparsable: %v", i, err)
			}
			if err := checkIPLen(s, ip); err != nil {
				t.Fatalf("segment %d: %v", i, err)
			}
			if !ip.v6 && refFold(refSum(s[:ip.l4off])) != 0xffff {
				t.Fatalf("segment %d: IPv4 header checksum", i)
			}
		}
		if total != need {
			t.Fatalf("segments use %d bytes, SplitLen said %d", total, need)
		}
	})
}

// FuzzCoalesce cuts arbitrary bytes into packets, coalesces them and checks
// that no payload byte is lost or invented.
func FuzzCoalesce(f *testing.F) {
	seg := func(seq uint32, n int) []byte {
		return tcpSpec{src: a4, dst: b4, sport: 1, dport: 2, seq: seq, flags: tcpACK, payload: pattern(n, byte(seq))}.build()
	}
	var seed []byte
	for i := 0; i < 3; i++ {
		p := seg(uint32(i*100), 100)
		seed = binary.BigEndian.AppendUint16(seed, uint16(len(p)))
		seed = append(seed, p...)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Coalescer
		in := 0
		for n := 0; len(b) >= 2 && n < 64; n++ {
			l := int(binary.BigEndian.Uint16(b))
			b = b[2:]
			if l > len(b) {
				l = len(b)
			}
			p := append([]byte(nil), b[:l]...)
			b = b[l:]
			in += len(p)
			c.Add(p)
		}
		out := 0
		_ = c.Flush(func(iov [][]byte) error {
			if len(iov[0]) != VirtioNetHdrLen {
				t.Fatal("first iov is not a virtio header")
			}
			h, _ := DecodeVirtioNetHdr(iov[0])
			var p []byte
			for _, v := range iov[1:] {
				p = append(p, v...)
			}
			if h.GSOType != GSONone {
				ip, err := parseIP(p)
				if err != nil || checkIPLen(p, ip) != nil || len(p) > MaxSuperPacket {
					t.Fatalf("bad super-packet (%v)", err)
				}
				n := (len(p) - int(h.HdrLen) + int(h.GSOSize) - 1) / int(h.GSOSize)
				out += len(p) + (n-1)*int(h.HdrLen)
				return nil
			}
			out += len(p)
			return nil
		})
		if in != out {
			t.Fatalf("%d bytes in, %d out (counting repeated headers)", in, out)
		}
	})
}
