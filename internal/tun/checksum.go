package tun

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// The Internet checksum (RFC 1071) is the ones'-complement sum of 16-bit
// big-endian words. Ones'-complement addition is associative and commutative
// and the byte order of the words only swaps the two bytes of the result, so
// the sum is accumulated here over 64-bit native-endian words with
// end-around carry and folded (and, on little-endian machines, byte-swapped)
// once at the end. Callers keep the partial sums in uint64 accumulators and
// combine them with csumAdd; every region they sum starts at an even offset
// of the checksummed data (IP, TCP and UDP headers have even lengths), so no
// odd-offset correction is ever needed.

// csumAdd adds two accumulators with end-around carry.
func csumAdd(a, b uint64) uint64 {
	s, c := bits.Add64(a, b, 0)
	return s + c
}

// csumPartial adds the bytes of b to the accumulator acc.
func csumPartial(b []byte, acc uint64) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.NativeEndian.Uint64(b[0:8]), c)
		acc, c = bits.Add64(acc, binary.NativeEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.NativeEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.NativeEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.NativeEndian.Uint64(b), c)
		b = b[8:]
	}
	return csumTail(b, csumAdd(acc, c))
}

// csumTail adds fewer than 8 trailing bytes. A final odd byte is the high
// byte of a big-endian word padded with zero.
func csumTail(b []byte, acc uint64) uint64 {
	var w [8]byte
	copy(w[:], b)
	return csumAdd(acc, binary.NativeEndian.Uint64(w[:]))
}

// csumCopy copies src to dst (len(dst) >= len(src)) and returns acc plus the
// sum of the copied bytes: one pass over the payload for both jobs.
func csumCopy(dst, src []byte, acc uint64) uint64 {
	dst = dst[:len(src)]
	var c uint64
	for len(src) >= 32 {
		w0 := binary.NativeEndian.Uint64(src[0:8])
		w1 := binary.NativeEndian.Uint64(src[8:16])
		w2 := binary.NativeEndian.Uint64(src[16:24])
		w3 := binary.NativeEndian.Uint64(src[24:32])
		binary.NativeEndian.PutUint64(dst[0:8], w0)
		binary.NativeEndian.PutUint64(dst[8:16], w1)
		binary.NativeEndian.PutUint64(dst[16:24], w2)
		binary.NativeEndian.PutUint64(dst[24:32], w3)
		acc, c = bits.Add64(acc, w0, c)
		acc, c = bits.Add64(acc, w1, c)
		acc, c = bits.Add64(acc, w2, c)
		acc, c = bits.Add64(acc, w3, c)
		src, dst = src[32:], dst[32:]
	}
	for len(src) >= 8 {
		w := binary.NativeEndian.Uint64(src)
		binary.NativeEndian.PutUint64(dst, w)
		acc, c = bits.Add64(acc, w, c)
		src, dst = src[8:], dst[8:]
	}
	copy(dst, src)
	return csumTail(src, csumAdd(acc, c))
}

// csumFold folds the accumulator to a 16-bit big-endian ones'-complement
// sum (not inverted).
func csumFold(acc uint64) uint16 {
	s := uint64(uint32(acc)) + acc>>32
	s = uint64(uint32(s)) + s>>32
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	v := uint16(s)
	if nativeLittle {
		v = bits.ReverseBytes16(v)
	}
	return v
}

// nativeLittle reports whether binary.NativeEndian is little-endian.
var nativeLittle = func() bool {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], 1)
	return b[0] == 1
}()

// csumWord returns the accumulator for one big-endian 16-bit value, for
// adding header fields (lengths, protocol numbers) to a sum.
func csumWord(v uint16) uint64 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return uint64(binary.NativeEndian.Uint16(b[:]))
}

// pseudoHeaderSum is the accumulator of the TCP/UDP pseudo-header for the
// given addresses (both of one family), protocol and L4 length.
func pseudoHeaderSum(src, dst []byte, proto uint8, l4len int) uint64 {
	acc := csumPartial(src, 0)
	acc = csumPartial(dst, acc)
	acc = csumAdd(acc, csumWord(uint16(proto)))
	if l4len > 0xffff {
		acc = csumAdd(acc, csumWord(uint16(l4len>>16)))
	}
	return csumAdd(acc, csumWord(uint16(l4len)))
}

// Checksum returns the Internet checksum (the inverted ones'-complement sum)
// of b, as stored in an IPv4 header.
func Checksum(b []byte) uint16 { return ^csumFold(csumPartial(b, 0)) }

// L4Checksum returns the TCP or UDP checksum of the segment l4 (header with
// its checksum field zeroed, plus payload) between src and dst.
func L4Checksum(src, dst netip.Addr, proto uint8, l4 []byte) uint16 {
	s, d := src.AsSlice(), dst.AsSlice()
	return ^csumFold(csumPartial(l4, pseudoHeaderSum(s, d, proto, len(l4))))
}
