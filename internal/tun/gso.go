package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// IP protocol numbers used here.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// TCP flag bits (byte 13 of the header).
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
	tcpECE = 0x40
	tcpCWR = 0x80
)

// Errors of Split. They all mean "drop this packet".
var (
	ErrMalformed   = errors.New("malformed packet")
	ErrUnsupported = errors.New("unsupported segmentation offload")
	ErrShortBuffer = errors.New("segment buffer too small")
)

// ipInfo is what Split and the coalescer need from the network header.
type ipInfo struct {
	v6    bool
	l4off int   // offset of the transport header
	proto uint8 // transport protocol
}

// parseIP checks the version and header length of an IPv4 or IPv6 packet
// and finds its transport header. IPv6 extension headers are not walked:
// such packets are reported with the extension header as proto.
func parseIP(pkt []byte) (ipInfo, error) {
	if len(pkt) < 1 {
		return ipInfo{}, fmt.Errorf("%w: empty", ErrMalformed)
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return ipInfo{}, fmt.Errorf("%w: IPv4 header truncated", ErrMalformed)
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || ihl > len(pkt) {
			return ipInfo{}, fmt.Errorf("%w: IPv4 header length %d", ErrMalformed, ihl)
		}
		return ipInfo{l4off: ihl, proto: pkt[9]}, nil
	case 6:
		if len(pkt) < 40 {
			return ipInfo{}, fmt.Errorf("%w: IPv6 header truncated", ErrMalformed)
		}
		return ipInfo{v6: true, l4off: 40, proto: pkt[6]}, nil
	default:
		return ipInfo{}, fmt.Errorf("%w: IP version %d", ErrMalformed, pkt[0]>>4)
	}
}

// addrs returns the source and destination address bytes.
func (ip ipInfo) addrs(pkt []byte) (src, dst []byte) {
	if ip.v6 {
		return pkt[8:24], pkt[24:40]
	}
	return pkt[12:16], pkt[16:20]
}

// setIPLen writes the total (IPv4) or payload (IPv6) length for a packet of
// n bytes and, for IPv4, the header checksum.
func setIPLen(hdr []byte, ip ipInfo, n int) {
	if ip.v6 {
		binary.BigEndian.PutUint16(hdr[4:], uint16(n-40))
		return
	}
	binary.BigEndian.PutUint16(hdr[2:], uint16(n))
	hdr[10], hdr[11] = 0, 0
	binary.BigEndian.PutUint16(hdr[10:], Checksum(hdr[:ip.l4off]))
}

// Split turns one packet read from a TUN with IFF_VNET_HDR (h is its
// header, pkt what follows it) into wire-ready IP packets with complete
// checksums, appended to segs.
//
//   - No GSO, no FlagNeedsCsum: pkt itself.
//   - No GSO, FlagNeedsCsum: pkt itself with its checksum completed in place.
//   - GSOTCPv4/v6: one TCP segment per GSOSize bytes of payload, written back
//     to back into out, with sequence numbers advanced, FIN/PSH only on the
//     last segment, CWR only on the first, IPv4 IDs incrementing from the
//     original, and fresh IP and TCP checksums.
//   - GSOUDPL4: one UDP datagram per GSOSize bytes of payload, likewise.
//
// Every segment but the last has the same length, so a run of them can go out
// as one UDP GSO send. out must hold len(pkt) plus the repeated headers;
// SplitLen gives the exact need. pkt's headers are read, never modified, in
// the GSO case.
func Split(pkt []byte, h VirtioNetHdr, out []byte, segs [][]byte) ([][]byte, error) {
	gso := h.GSOType &^ GSOECN
	if gso == GSONone {
		if h.Flags&FlagNeedsCsum != 0 {
			if err := finishChecksum(pkt, h); err != nil {
				return segs, err
			}
		}
		return append(segs, pkt), nil
	}
	ip, err := parseIP(pkt)
	if err != nil {
		return segs, err
	}
	if err := checkIPLen(pkt, ip); err != nil {
		return segs, err
	}
	var hdrLen int
	switch gso {
	case GSOTCPv4, GSOTCPv6:
		if ip.proto != ProtoTCP || (gso == GSOTCPv6) != ip.v6 {
			return segs, fmt.Errorf("%w: gso type %d for protocol %d", ErrMalformed, gso, ip.proto)
		}
		if len(pkt) < ip.l4off+20 {
			return segs, fmt.Errorf("%w: TCP header truncated", ErrMalformed)
		}
		hdrLen = ip.l4off + int(pkt[ip.l4off+12]>>4)*4
		if hdrLen < ip.l4off+20 || hdrLen > len(pkt) {
			return segs, fmt.Errorf("%w: TCP data offset", ErrMalformed)
		}
	case GSOUDPL4:
		if ip.proto != ProtoUDP {
			return segs, fmt.Errorf("%w: gso type %d for protocol %d", ErrMalformed, gso, ip.proto)
		}
		hdrLen = ip.l4off + 8
		if hdrLen > len(pkt) {
			return segs, fmt.Errorf("%w: UDP header truncated", ErrMalformed)
		}
	default:
		return segs, fmt.Errorf("%w: gso type %d", ErrUnsupported, h.GSOType)
	}
	mss := int(h.GSOSize)
	if mss == 0 {
		return segs, fmt.Errorf("%w: gso size 0", ErrMalformed)
	}
	payload := pkt[hdrLen:]
	nseg := (len(payload) + mss - 1) / mss
	if nseg == 0 {
		nseg = 1 // header only: one segment, checksums completed
	}
	if need := len(payload) + nseg*hdrLen; need > len(out) {
		return segs, fmt.Errorf("%w: need %d bytes, have %d", ErrShortBuffer, need, len(out))
	}
	src, dst := ip.addrs(pkt)
	var ipID uint16
	if !ip.v6 {
		ipID = binary.BigEndian.Uint16(pkt[4:])
	}
	var seq uint32
	var flags uint8
	if gso != GSOUDPL4 {
		seq = binary.BigEndian.Uint32(pkt[ip.l4off+4:])
		flags = pkt[ip.l4off+13]
	}
	off := 0
	for i := 0; i < nseg; i++ {
		plen := min(mss, len(payload))
		seg := out[off : off+hdrLen+plen]
		copy(seg, pkt[:hdrLen])
		l4 := seg[ip.l4off:]
		if !ip.v6 {
			binary.BigEndian.PutUint16(seg[4:], ipID+uint16(i))
		}
		setIPLen(seg[:ip.l4off], ip, len(seg))
		l4len := hdrLen - ip.l4off + plen
		var csumField []byte
		if gso == GSOUDPL4 {
			binary.BigEndian.PutUint16(l4[4:], uint16(l4len))
			csumField = l4[6:8]
		} else {
			binary.BigEndian.PutUint32(l4[4:], seq+uint32(i*mss))
			f := flags
			if i > 0 {
				f &^= tcpCWR
			}
			if i < nseg-1 {
				f &^= tcpFIN | tcpPSH
			}
			l4[13] = f
			csumField = l4[16:18]
		}
		csumField[0], csumField[1] = 0, 0
		acc := pseudoHeaderSum(src, dst, ip.proto, l4len)
		acc = csumPartial(seg[ip.l4off:hdrLen], acc)
		acc = csumCopy(seg[hdrLen:], payload[:plen], acc)
		c := ^csumFold(acc)
		if c == 0 && gso == GSOUDPL4 {
			c = 0xffff // 0 means "no checksum" in UDP
		}
		binary.BigEndian.PutUint16(csumField, c)
		segs = append(segs, seg)
		payload = payload[plen:]
		off += len(seg)
	}
	return segs, nil
}

// SplitLen returns how many bytes of out Split needs for pkt (0 when it
// returns pkt itself or fails).
func SplitLen(pkt []byte, h VirtioNetHdr) int {
	gso := h.GSOType &^ GSOECN
	if gso == GSONone || h.GSOSize == 0 {
		return 0
	}
	ip, err := parseIP(pkt)
	if err != nil {
		return 0
	}
	hdrLen := ip.l4off + 8
	if gso != GSOUDPL4 {
		if len(pkt) < ip.l4off+20 {
			return 0
		}
		hdrLen = ip.l4off + int(pkt[ip.l4off+12]>>4)*4
	}
	if hdrLen > len(pkt) {
		return 0
	}
	n := (len(pkt) - hdrLen + int(h.GSOSize) - 1) / int(h.GSOSize)
	return len(pkt) - hdrLen + max(n, 1)*hdrLen
}

// checkIPLen checks that the IP length field agrees with the buffer. The
// kernel sets it to the full super-packet length for GSO packets up to 64 KiB.
func checkIPLen(pkt []byte, ip ipInfo) error {
	var n int
	if ip.v6 {
		n = 40 + int(binary.BigEndian.Uint16(pkt[4:]))
	} else {
		n = int(binary.BigEndian.Uint16(pkt[2:]))
	}
	if n != len(pkt) {
		return fmt.Errorf("%w: IP length %d, packet %d", ErrMalformed, n, len(pkt))
	}
	return nil
}

// finishChecksum completes a partial checksum: the field at
// CsumStart+CsumOffset holds the pseudo-header sum; the result is the
// checksum over everything from CsumStart on.
func finishChecksum(pkt []byte, h VirtioNetHdr) error {
	start, field := int(h.CsumStart), int(h.CsumStart)+int(h.CsumOffset)
	ip, err := parseIP(pkt)
	if err != nil {
		return err
	}
	if start < ip.l4off || field+2 > len(pkt) || start&1 != 0 {
		return fmt.Errorf("%w: checksum offsets %d+%d in %d bytes", ErrMalformed, h.CsumStart, h.CsumOffset, len(pkt))
	}
	c := ^csumFold(csumPartial(pkt[start:], 0))
	if c == 0 && field-start == 6 && ip.proto == ProtoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[field:], c)
	return nil
}
