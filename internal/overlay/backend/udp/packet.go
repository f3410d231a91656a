package udp

import (
	"encoding/binary"
	"net/netip"

	"linen.dev/linen/internal/tun"
)

// The wire format is flannel's: the UDP payload is the inner IPv4 packet,
// byte for byte, with nothing before or after it. These helpers work on
// inner packets in place.

// ipv4Dst returns the destination of an IPv4 packet, after checking the
// version and that the header fits.
func ipv4Dst(p []byte) (netip.Addr, bool) {
	if len(p) < 20 || p[0]>>4 != 4 || int(p[0]&0x0f)*4 < 20 || int(p[0]&0x0f)*4 > len(p) {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(p[16:20])), true
}

// trimIPv4 cuts p to its IPv4 total length (a datagram may carry padding);
// false when the length field is smaller than the header or larger than p.
func trimIPv4(p []byte) ([]byte, bool) {
	n := int(binary.BigEndian.Uint16(p[2:]))
	if n < int(p[0]&0x0f)*4 || n > len(p) {
		return nil, false
	}
	return p[:n], true
}

// decTTL decrements the TTL and patches the header checksum incrementally
// (RFC 1624, eqn. 3). It returns false, leaving p alone, when the TTL is 1
// or 0: the packet must be dropped.
func decTTL(p []byte) bool {
	if p[8] <= 1 {
		return false
	}
	old := binary.BigEndian.Uint16(p[8:]) // TTL, protocol
	p[8]--
	sum := uint32(^binary.BigEndian.Uint16(p[10:])) + uint32(^old) + uint32(old-0x100)
	sum = sum&0xffff + sum>>16
	sum = sum&0xffff + sum>>16
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	return true
}

// wantsUnreachable tells whether an undeliverable packet gets an ICMP
// destination-unreachable answer: never for ICMP (no error about an error,
// and flannel answers no ICMP at all) and never for a fragment other than
// the first.
func wantsUnreachable(p []byte) bool {
	return p[9] != tun.ProtoICMP && binary.BigEndian.Uint16(p[6:])&0x1fff == 0
}

// netUnreachable builds the ICMP "destination unreachable, net unreachable"
// (type 3, code 0) packet from src back to the
// sender of orig, quoting orig's IP header and the first 8 bytes of its
// payload (RFC 792). It appends to buf.
func netUnreachable(buf []byte, src netip.Addr, orig []byte) []byte {
	ihl := int(orig[0]&0x0f) * 4
	quote := orig[:min(len(orig), ihl+8)]
	n := 20 + 8 + len(quote)
	start := len(buf)
	buf = append(buf, make([]byte, n)...)
	p := buf[start:]
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	p[8] = 64
	p[9] = tun.ProtoICMP
	s4 := src.As4()
	copy(p[12:16], s4[:])
	copy(p[16:20], orig[12:16])
	binary.BigEndian.PutUint16(p[10:], tun.Checksum(p[:20]))
	icmp := p[20:]
	icmp[0], icmp[1] = 3, 0
	copy(icmp[8:], quote)
	binary.BigEndian.PutUint16(icmp[2:], tun.Checksum(icmp))
	return buf
}
