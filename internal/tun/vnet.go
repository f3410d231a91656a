package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// VirtioNetHdrLen is the size of struct virtio_net_hdr, the header that
// precedes every packet read from or written to a TUN opened with
// IFF_VNET_HDR (the default header size).
const VirtioNetHdrLen = 10

// virtio_net_hdr flags and GSO types (include/uapi/linux/virtio_net.h).
const (
	FlagNeedsCsum = 1 // checksum at CsumStart+CsumOffset holds only the pseudo-header sum
	FlagDataValid = 2 // checksum already verified

	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3 // UFO (IP fragmentation); never requested, rejected by Split
	GSOTCPv6 = 4
	GSOUDPL4 = 5 // USO: UDP segmentation, one datagram per segment
	GSOECN   = 0x80
)

// VirtioNetHdr is struct virtio_net_hdr. The TUN driver reads and writes it
// in the legacy virtio byte order, which is the CPU's (no TUNSETVNETLE/BE is
// issued).
type VirtioNetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16 // length of the headers to repeat in every segment (a hint; Split recomputes it)
	GSOSize    uint16 // payload bytes per segment (MSS for TCP)
	CsumStart  uint16 // offset of the L4 header
	CsumOffset uint16 // offset of the checksum field within it
}

var errShortHdr = errors.New("packet shorter than the virtio_net_hdr")

// DecodeVirtioNetHdr decodes the header at the start of b.
func DecodeVirtioNetHdr(b []byte) (VirtioNetHdr, error) {
	if len(b) < VirtioNetHdrLen {
		return VirtioNetHdr{}, errShortHdr
	}
	return VirtioNetHdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.NativeEndian.Uint16(b[2:]),
		GSOSize:    binary.NativeEndian.Uint16(b[4:]),
		CsumStart:  binary.NativeEndian.Uint16(b[6:]),
		CsumOffset: binary.NativeEndian.Uint16(b[8:]),
	}, nil
}

// Encode writes the header into b[:VirtioNetHdrLen].
func (h VirtioNetHdr) Encode(b []byte) {
	_ = b[VirtioNetHdrLen-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
}

func (h VirtioNetHdr) String() string {
	return fmt.Sprintf("vnet{flags=%#x gso=%#x hdr=%d size=%d csum=%d+%d}", h.Flags, h.GSOType, h.HdrLen, h.GSOSize, h.CsumStart, h.CsumOffset)
}
