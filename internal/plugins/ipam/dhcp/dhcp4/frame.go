package dhcp4

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// A client without an address sends and receives through a packet socket,
// so it writes and reads the IPv4 and UDP headers itself.

const (
	ipv4HeaderLen = 20
	udpHeaderLen  = 8
	protoUDP      = 17
)

// BuildUDP4 wraps payload in UDP and IPv4 headers, with both checksums.
func BuildUDP4(src, dst netip.Addr, srcPort, dstPort uint16, payload []byte) []byte {
	total := ipv4HeaderLen + udpHeaderLen + len(payload)
	b := make([]byte, total)
	ip := b[:ipv4HeaderLen]
	ip[0] = 0x45 // version 4, 5 words
	ip[1] = 0x10 // TOS: low delay, as BOOTP clients traditionally send
	binary.BigEndian.PutUint16(ip[2:], uint16(total))
	ip[8] = 64 // TTL
	ip[9] = protoUDP
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^sum16(ip, 0))

	u := b[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(u[0:], srcPort)
	binary.BigEndian.PutUint16(u[2:], dstPort)
	binary.BigEndian.PutUint16(u[4:], uint16(udpHeaderLen+len(payload)))
	copy(u[udpHeaderLen:], payload)
	cs := ^sum16(u, pseudoSum(s, d, len(u)))
	if cs == 0 {
		cs = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(u[6:], cs)
	return b
}

func pseudoSum(s, d [4]byte, udpLen int) uint32 {
	var acc uint32
	acc += uint32(s[0])<<8 | uint32(s[1])
	acc += uint32(s[2])<<8 | uint32(s[3])
	acc += uint32(d[0])<<8 | uint32(d[1])
	acc += uint32(d[2])<<8 | uint32(d[3])
	acc += protoUDP
	acc += uint32(udpLen)
	return acc
}

// sum16 is the ones' complement sum of b (folded), starting from acc.
func sum16(b []byte, acc uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// UDP4 is a parsed IPv4/UDP datagram.
type UDP4 struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Payload          []byte
}

// Errors of ParseUDP4.
var (
	ErrNotUDP4    = errors.New("dhcp4: not an unfragmented IPv4 UDP datagram")
	ErrTruncated  = errors.New("dhcp4: truncated datagram")
	ErrIPChecksum = errors.New("dhcp4: bad IPv4 header checksum")
	ErrChecksum   = errors.New("dhcp4: bad UDP checksum")
)

// ParseUDP4 parses an IPv4 packet carrying UDP. verifyUDP checks the UDP
// checksum (false when the kernel reports a checksum not yet computed, as
// for packets from a local veth with offload).
func ParseUDP4(b []byte, verifyUDP bool) (*UDP4, error) {
	if len(b) < ipv4HeaderLen {
		return nil, ErrTruncated
	}
	if b[0]>>4 != 4 || b[9] != protoUDP {
		return nil, ErrNotUDP4
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < ipv4HeaderLen || total < ihl+udpHeaderLen || total > len(b) {
		return nil, ErrTruncated
	}
	if frag := binary.BigEndian.Uint16(b[6:]); frag&0x3fff != 0 {
		return nil, ErrNotUDP4 // a fragment (MF set or offset non-zero)
	}
	if sum16(b[:ihl], 0) != 0xffff {
		return nil, ErrIPChecksum
	}
	u := b[ihl:total]
	ulen := int(binary.BigEndian.Uint16(u[4:]))
	if ulen < udpHeaderLen || ulen > len(u) {
		return nil, ErrTruncated
	}
	u = u[:ulen]
	p := &UDP4{
		Src:     netip.AddrFrom4([4]byte(b[12:16])),
		Dst:     netip.AddrFrom4([4]byte(b[16:20])),
		SrcPort: binary.BigEndian.Uint16(u[0:]),
		DstPort: binary.BigEndian.Uint16(u[2:]),
		Payload: u[udpHeaderLen:],
	}
	if verifyUDP && binary.BigEndian.Uint16(u[6:]) != 0 {
		if sum16(u, pseudoSum(p.Src.As4(), p.Dst.As4(), len(u))) != 0xffff {
			return nil, ErrChecksum
		}
	}
	return p, nil
}
