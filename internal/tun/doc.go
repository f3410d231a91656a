// Package tun is linen's TUN device and the packet surgery a userspace
// tunnel needs to be fast: splitting the kernel's segmentation-offload
// super-packets into wire-sized packets (GSO) and merging received TCP
// segments back into super-packets (GRO). Pure Go, no cgo.
//
// # Device
//
// Device is the interface the udp backend uses; Linux (Open) is the real
// one, Fake an in-memory one for unit tests. Open creates the device in the
// network namespace of the calling thread with IFF_TUN|IFF_NO_PI, and
// optionally IFF_VNET_HDR plus TUNSETOFFLOAD(CSUM, TSO4, TSO6, USO4|USO6),
// stepping down on EINVAL until the kernel accepts a set. The fd is
// non-blocking and served by the Go runtime's poller: Read parks the
// goroutine, drains everything already queued (one read(2) per packet, as
// the TUN driver offers no batch read) and returns a batch; Write is one
// writev(2), so a super-packet goes in without being copied together.
//
// # Why the virtio header
//
// Without IFF_VNET_HDR every TUN read or write is one MTU-sized packet and
// every packet crosses the whole kernel stack on its own: a 1472-byte MTU
// means ~45 crossings per 64 KiB of a TCP stream, each with its syscall.
// With IFF_VNET_HDR and TSO the kernel treats the TUN like a NIC that
// segments in hardware: a TCP sender's 64 KiB super-packet is handed over in
// one read, preceded by a struct virtio_net_hdr (VirtioNetHdr) that says
// "GSO TCPv4, segment size 1432, checksum partial from offset 20". The
// "hardware" is Split. In the other direction a write may carry a
// super-packet with such a header, and the kernel treats it like one that
// a NIC's GRO built: one stack traversal for 45 segments. Coalescer builds
// them.
//
// # Split (GSO)
//
// Split copies each segment's headers from the super-packet and fixes them
// as a NIC's TSO engine would: sequence numbers advanced by the segment
// size, FIN and PSH only on the last segment, CWR only on the first, IPv4
// identification incremented from the original, total/payload length set,
// IPv4 header checksum recomputed. The payload is copied and summed in the
// same pass (csumCopy) and the TCP (or UDP, for USO super-packets)
// checksum completed from the pseudo-header, header and payload sums. The
// segments land back to back in one buffer and all but the last have the
// same size, which is exactly what one UDP GSO send (UDP_SEGMENT) wants.
// A packet without GSO but with a partial checksum (FlagNeedsCsum) has its
// checksum completed in place.
//
// # Coalescer (GRO)
//
// The Coalescer takes packets in arrival order and merges a TCP segment
// into the open group of its flow when it continues it exactly: same
// addresses, ports, TOS/TTL/DF, TCP options and ACK number; sequence number
// where the group ends; flags plain ACK (PSH ends a group); payload no
// larger than the group's first segment and every earlier segment full
// sized; 64 KiB at most. Everything else passes through unchanged, and a
// flow's packets never overtake each other. The merged packet keeps the
// first segment's headers, fixed for the total length, with the TCP
// checksum field holding the pseudo-header sum and FlagNeedsCsum set, so
// neither the coalescer nor the kernel sums the payload again: the kernel
// already verified the outer UDP checksum, which covers every inner byte.
// Splitting a merged packet gives back the original segments byte for byte
// (tested), which is the property the receiving kernel relies on when it
// re-segments.
//
// # Checksums
//
// The Internet checksum is summed over 64-bit words with end-around carry
// (math/bits.Add64) and folded once; the tests check it, Split and the
// Coalescer against a naive 16-bit reference implementation.
package tun
