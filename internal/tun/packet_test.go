package tun

import (
	"encoding/binary"
	"net/netip"
)

// Test packet builders and an independent, deliberately naive checksum
// implementation (16-bit big-endian words, RFC 1071 section 4.1) that the
// tests use to check everything the package computes.

func refSum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func refFold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func refChecksum(b []byte) uint16 { return ^refFold(refSum(b)) }

// refL4Checksum computes a TCP/UDP checksum over a pseudo-header built by
// hand.
func refL4Checksum(src, dst netip.Addr, proto uint8, l4 []byte) uint16 {
	var ph []byte
	ph = append(ph, src.AsSlice()...)
	ph = append(ph, dst.AsSlice()...)
	if src.Is4() {
		ph = append(ph, 0, proto, byte(len(l4)>>8), byte(len(l4)))
	} else {
		ph = append(ph, byte(len(l4)>>24), byte(len(l4)>>16), byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, proto)
	}
	return ^refFold(refSum(ph) + refSum(l4))
}

// refValid reports whether the IP and L4 checksums of a packet verify.
func refValid(pkt []byte) bool {
	var src, dst netip.Addr
	var l4 []byte
	var proto uint8
	if pkt[0]>>4 == 4 {
		ihl := int(pkt[0]&15) * 4
		if refFold(refSum(pkt[:ihl])) != 0xffff {
			return false
		}
		src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		proto, l4 = pkt[9], pkt[ihl:]
	} else {
		src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		proto, l4 = pkt[6], pkt[40:]
	}
	c := make([]byte, len(l4))
	copy(c, l4)
	off := 16
	if proto == ProtoUDP {
		off = 6
	}
	want := binary.BigEndian.Uint16(c[off:])
	c[off], c[off+1] = 0, 0
	got := refL4Checksum(src, dst, proto, c)
	if proto == ProtoUDP && got == 0 {
		got = 0xffff
	}
	return got == want
}

type tcpSpec struct {
	src, dst     netip.Addr
	sport, dport uint16
	seq, ack     uint32
	flags        uint8
	win          uint16
	opts         []byte // length a multiple of 4
	payload      []byte
	id           uint16
	ttl          uint8
	tos          uint8
	df           bool
}

func ipHeader(src, dst netip.Addr, proto uint8, l4len int, id uint16, ttl, tos uint8, df bool) []byte {
	if src.Is6() {
		h := make([]byte, 40)
		h[0] = 0x60 | tos>>4
		h[1] = tos << 4
		binary.BigEndian.PutUint16(h[4:], uint16(l4len))
		h[6], h[7] = proto, ttl
		copy(h[8:], src.AsSlice())
		copy(h[24:], dst.AsSlice())
		return h
	}
	h := make([]byte, 20)
	h[0], h[1] = 0x45, tos
	binary.BigEndian.PutUint16(h[2:], uint16(20+l4len))
	binary.BigEndian.PutUint16(h[4:], id)
	if df {
		h[6] = 0x40
	}
	h[8], h[9] = ttl, proto
	copy(h[12:], src.AsSlice())
	copy(h[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(h[10:], refChecksum(h))
	return h
}

func (s tcpSpec) build() []byte {
	if s.ttl == 0 {
		s.ttl = 64
	}
	if s.win == 0 {
		s.win = 512
	}
	th := make([]byte, 20+len(s.opts))
	binary.BigEndian.PutUint16(th[0:], s.sport)
	binary.BigEndian.PutUint16(th[2:], s.dport)
	binary.BigEndian.PutUint32(th[4:], s.seq)
	binary.BigEndian.PutUint32(th[8:], s.ack)
	th[12] = byte(len(th)/4) << 4
	th[13] = s.flags
	binary.BigEndian.PutUint16(th[14:], s.win)
	copy(th[20:], s.opts)
	l4 := append(th, s.payload...)
	binary.BigEndian.PutUint16(l4[16:], refL4Checksum(s.src, s.dst, ProtoTCP, l4))
	return append(ipHeader(s.src, s.dst, ProtoTCP, len(l4), s.id, s.ttl, s.tos, s.df), l4...)
}

// partial turns a valid packet into what the kernel hands a TUN with
// checksum offload: the L4 checksum field holds the folded pseudo-header sum
// for the packet's L4 length.
func partial(pkt []byte) []byte {
	pkt = append([]byte(nil), pkt...)
	ip, _ := parseIP(pkt)
	off := ip.l4off + 16
	if ip.proto == ProtoUDP {
		off = ip.l4off + 6
	}
	src, dst := ip.addrs(pkt)
	var ph []byte
	ph = append(ph, src...)
	ph = append(ph, dst...)
	n := len(pkt) - ip.l4off
	ph = append(ph, 0, 0, byte(n>>8), byte(n), 0, 0, 0, ip.proto)
	binary.BigEndian.PutUint16(pkt[off:], refFold(refSum(ph)))
	return pkt
}

func udpPacket(src, dst netip.Addr, sport, dport uint16, payload []byte, id uint16) []byte {
	l4 := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	copy(l4[8:], payload)
	c := refL4Checksum(src, dst, ProtoUDP, l4)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[6:], c)
	return append(ipHeader(src, dst, ProtoUDP, len(l4), id, 64, 0, true), l4...)
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}
