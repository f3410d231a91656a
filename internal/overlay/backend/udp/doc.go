// Package udp is the overlay backend that encapsulates in userspace:
// flannel's "udp" backend, wire-compatible with it, written in Go and made
// fast with batching and segmentation offloads.
//
// # Kernel state and wire format
//
// Prepare creates the TUN device flannel0 (template "flannel%d") with MTU
// = external MTU - 28 and a UDP socket on the external interface's address,
// port 8285 (Backend.Port). Configure gives the device the first address
// of the node's subnet as a /32 (no broadcast route; the source of
// host-to-pod traffic) and routes the whole Network through it with
// linen's route protocol; the reconcile loop keeps both in place. A packet
// the kernel routes into the device is looked up in the userspace
// forwarding table (subnet -> PublicIP:port, built by Sync from the udp
// leases), its TTL is decremented and it is sent as the complete payload of
// a UDP datagram: no header of ours, so flannel's C proxy and this backend
// understand each other. A received datagram's payload is checked (IPv4,
// addressed to this node's subnet), its TTL decremented, and it is written
// into the device. A packet for a subnet nobody leases is answered with ICMP
// net unreachable written back into the device (never for ICMP packets or
// non-first fragments), from the Network's first address (no node's with
// flannel's default SubnetMin; the last one if this node's subnet holds
// it): the node's own addresses would make the kernel drop the answer as a
// martian. The device lives as long as the process holds it, so
// unlike vxlan and host-gw this data plane stops with the daemon (as
// flannel's does).
//
// # Data path
//
// Two goroutines, each owning its buffers: TUN -> UDP (runTx) and UDP ->
// TUN (runRx). The forwarding table and the own subnet are immutable
// values swapped atomically by Sync and Configure, so the packet path takes
// no lock. Per-packet cost was what made flannel's proxy slow (one read, one
// sendto, one recvfrom, one write per 1.4 KB, on one core: ~0.6 Gbit/s);
// each offload below removes a factor of it, and each can be switched off
// (Offload, or LINEN_UDP_OFFLOAD) to measure it:
//
//   - Batch: recvmmsg/sendmmsg on the socket, and a TUN read that drains
//     what is queued, so one syscall moves up to Batch datagrams.
//   - SocketBuffer: 7 MiB send and receive buffers, forced past the
//     sysctl limits, so bursts are not dropped while a goroutine waits for
//     the CPU.
//   - VnetHdr: the TUN hands over 64 KiB TCP super-packets (TSO); package
//     tun splits them into MTU-sized packets with their checksums in one
//     pass. The TTL is decremented once per super-packet.
//   - UDPGSO: consecutive equal-sized datagrams to one peer (the segments of
//     a super-packet, or full-sized packets of several flows) go out as one
//     sendmsg with a UDP_SEGMENT control message; the kernel cuts them on
//     the way out (or the NIC does). flannel's format maps one inner packet
//     to one datagram, so the segments are exactly the GSO segments. If the
//     kernel answers EIO (an egress device without checksum offload), GSO is
//     switched off for good and the batch resent datagram by datagram.
//   - UDPGRO: the socket receives a run of datagrams from one peer as one
//     buffer plus the segment size (kernel >= 5.12).
//   - TCPGRO: the inner TCP segments of a batch are merged per flow
//     (tun.Coalescer) and written to the TUN as one super-packet each: the
//     receiving kernel stack handles 64 KiB at a time.
//
// Together a 64 KiB block of a TCP stream costs one TUN read, one sendmsg,
// one recvmsg (or part of one) and one TUN write, instead of ~45 of each.
package udp
