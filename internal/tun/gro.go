package tun

import (
	"bytes"
	"encoding/binary"
)

// MaxSuperPacket is the largest packet a coalesced write may carry: the
// IPv4 total length field's limit (and the TUN's default gso_max_size).
const MaxSuperPacket = 65535

// Coalescer merges consecutive TCP segments of one flow into a super-packet
// that is written to a TUN with IFF_VNET_HDR as a single GSO packet, so the
// kernel stack handles 45 segments as one.
//
// Add takes IP packets in arrival order (with valid checksums, as received
// from the wire) and keeps references to them until Flush, which hands every
// resulting packet to the emit function in an order that preserves the
// order of each flow. The packets' bytes are modified in place (the first
// packet of a merged group gets the super-packet's headers).
//
// A segment joins the open group of its flow when: same addresses, ports,
// IP version, TOS/traffic class, TTL/hop limit, DF bit, IPv4 header without
// options; same TCP header length, options bytes and ACK number; flags ACK or
// ACK|PSH; sequence number exactly following the group; payload not larger
// than the group's first segment's and the group's segments so far all of
// that size; the result within MaxSuperPacket. A PSH or short segment closes
// the group. SYN, FIN, RST, URG, ECE and CWR segments, pure ACKs, fragments and
// every non-TCP packet pass through unmerged.
//
// Merged packets carry FlagNeedsCsum with the pseudo-header sum in the TCP
// checksum field: the checksums of the received segments are not verified
// again here (the kernel verified the outer UDP checksum, which covers the
// whole inner packet).
type Coalescer struct {
	groups []group
	open   []int // indexes into groups of groups still accepting segments
	iovs   [][]byte
	hdr    [VirtioNetHdrLen]byte
}

// maxOpenFlows bounds the flows merged at once (the search is linear).
const maxOpenFlows = 64

type group struct {
	pkts    [][]byte // the first packet whole, then the payloads of the others
	ip      ipInfo
	hdrLen  int
	gsoSize int
	size    int // bytes of the super-packet
	nextSeq uint32
	merged  bool
	closed  bool
	psh     bool
}

// Reset drops every pending packet.
func (c *Coalescer) Reset() {
	for i := range c.groups {
		c.groups[i].pkts = c.groups[i].pkts[:0]
	}
	c.groups = c.groups[:0]
	c.open = c.open[:0]
}

// Len reports the number of packets Flush would emit.
func (c *Coalescer) Len() int { return len(c.groups) }

// Add queues pkt. The coalescer keeps pkt until Flush or Reset.
func (c *Coalescer) Add(pkt []byte) {
	ip, hdrLen, plen, ok := tcpCandidate(pkt)
	if ok {
		for k, gi := range c.open {
			g := &c.groups[gi]
			if !sameFlow(g.pkts[0], pkt, ip) {
				continue
			}
			if g.canAppend(pkt, hdrLen, plen) {
				g.append(pkt, hdrLen, plen)
				if g.closed {
					c.open = append(c.open[:k], c.open[k+1:]...)
				}
				return
			}
			// Not mergeable: close the flow's group; pkt starts a new one
			// after it, so the flow keeps its order.
			g.closed = true
			c.open = append(c.open[:k], c.open[k+1:]...)
			break
		}
	}
	g := c.newGroup()
	g.pkts = append(g.pkts, pkt)
	g.size = len(pkt)
	g.ip = ip
	if !ok || plen == 0 || pkt[ip.l4off+13] != tcpACK {
		g.closed = true
		return
	}
	g.hdrLen, g.gsoSize = hdrLen, plen
	g.nextSeq = binary.BigEndian.Uint32(pkt[ip.l4off+4:]) + uint32(plen)
	if len(c.open) == maxOpenFlows {
		c.groups[c.open[0]].closed = true
		c.open = append(c.open[:0], c.open[1:]...)
	}
	c.open = append(c.open, len(c.groups)-1)
}

func (c *Coalescer) newGroup() *group {
	if len(c.groups) < cap(c.groups) {
		c.groups = c.groups[:len(c.groups)+1]
	} else {
		c.groups = append(c.groups, group{})
	}
	g := &c.groups[len(c.groups)-1]
	*g = group{pkts: g.pkts[:0]}
	return g
}

// tcpCandidate reports whether pkt is a TCP segment that may take part in
// merging, with its header length and payload length.
func tcpCandidate(pkt []byte) (ip ipInfo, hdrLen, plen int, ok bool) {
	ip, err := parseIP(pkt)
	if err != nil || ip.proto != ProtoTCP {
		return ip, 0, 0, false
	}
	if ip.v6 {
		if 40+int(binary.BigEndian.Uint16(pkt[4:])) != len(pkt) {
			return ip, 0, 0, false
		}
	} else {
		if ip.l4off != 20 || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
			return ip, 0, 0, false
		}
		if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 { // MF or fragment offset
			return ip, 0, 0, false
		}
	}
	if len(pkt) < ip.l4off+20 {
		return ip, 0, 0, false
	}
	hdrLen = ip.l4off + int(pkt[ip.l4off+12]>>4)*4
	if hdrLen < ip.l4off+20 || hdrLen > len(pkt) {
		return ip, 0, 0, false
	}
	return ip, hdrLen, len(pkt) - hdrLen, true
}

// sameFlow compares the flow identity and the header fields that must be
// equal in every segment of a super-packet.
func sameFlow(a, b []byte, ip ipInfo) bool {
	if a[0]>>4 != b[0]>>4 {
		return false
	}
	if ip.v6 {
		// version, traffic class, flow label; next header; hop limit; addresses.
		return bytes.Equal(a[0:4], b[0:4]) && a[6] == b[6] && a[7] == b[7] &&
			bytes.Equal(a[8:40], b[8:40]) && bytes.Equal(a[40:44], b[40:44])
	}
	// TOS; DF; TTL; protocol; addresses; ports.
	return a[1] == b[1] && a[6]&0x40 == b[6]&0x40 && a[8] == b[8] && a[9] == b[9] &&
		bytes.Equal(a[12:20], b[12:20]) && bytes.Equal(a[20:24], b[20:24])
}

func (g *group) canAppend(pkt []byte, hdrLen, plen int) bool {
	if g.closed || g.psh || hdrLen != g.hdrLen || plen == 0 || plen > g.gsoSize {
		return false
	}
	if g.size+plen > MaxSuperPacket {
		return false
	}
	first := g.pkts[0]
	l4 := g.ip.l4off
	if f := pkt[l4+13]; f != tcpACK && f != tcpACK|tcpPSH {
		return false
	}
	if binary.BigEndian.Uint32(pkt[l4+4:]) != g.nextSeq {
		return false
	}
	// ACK number, then data offset; options.
	return bytes.Equal(first[l4+8:l4+13], pkt[l4+8:l4+13]) &&
		bytes.Equal(first[l4+20:hdrLen], pkt[l4+20:hdrLen])
}

func (g *group) append(pkt []byte, hdrLen, plen int) {
	g.pkts = append(g.pkts, pkt[hdrLen:])
	g.size += plen
	g.nextSeq += uint32(plen)
	g.merged = true
	l4 := g.ip.l4off
	// The newest window advertisement wins.
	copy(g.pkts[0][l4+14:l4+16], pkt[l4+14:l4+16])
	if pkt[l4+13]&tcpPSH != 0 {
		g.psh = true
		g.closed = true
	}
	if plen < g.gsoSize {
		g.closed = true
	}
}

// Flush emits every queued packet and resets the coalescer. emit receives
// the virtio_net_hdr for the packet already encoded as iov[0] and the packet
// as the following slices; a write of all of iov to a TUN with IFF_VNET_HDR
// delivers it. iov is only valid during the call. Flush stops at the first
// error emit returns, dropping the rest.
func (c *Coalescer) Flush(emit func(iov [][]byte) error) error {
	defer c.Reset()
	for i := range c.groups {
		g := &c.groups[i]
		var h VirtioNetHdr
		if g.merged {
			h = g.finish()
		}
		h.Encode(c.hdr[:])
		c.iovs = append(c.iovs[:0], c.hdr[:])
		c.iovs = append(c.iovs, g.pkts...)
		if err := emit(c.iovs); err != nil {
			return err
		}
	}
	return nil
}

// finish rewrites the first packet's headers for the whole super-packet and
// returns its virtio_net_hdr.
func (g *group) finish() VirtioNetHdr {
	first := g.pkts[0]
	ip, l4 := g.ip, g.ip.l4off
	setIPLen(first[:l4], ip, g.size)
	if g.psh {
		first[l4+13] |= tcpPSH
	}
	src, dst := ip.addrs(first)
	binary.BigEndian.PutUint16(first[l4+16:], csumFold(pseudoHeaderSum(src, dst, ProtoTCP, g.size-l4)))
	gt := uint8(GSOTCPv4)
	if ip.v6 {
		gt = GSOTCPv6
	}
	return VirtioNetHdr{
		Flags:      FlagNeedsCsum,
		GSOType:    gt,
		HdrLen:     uint16(g.hdrLen),
		GSOSize:    uint16(g.gsoSize),
		CsumStart:  uint16(l4),
		CsumOffset: 16,
	}
}
