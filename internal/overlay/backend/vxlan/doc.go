// Package vxlan is the overlay backend that carries pod traffic between
// nodes in the kernel's VXLAN: one device per address family
// (flannel.<VNI>, flannel-v6.<VNI>), and per remote node one route, one
// permanent neighbour entry and one FDB entry. Nothing per pod, nothing of
// linen's per packet.
//
// Device. flannel.<VNI>: VXLAN id VNI (default 1), UDP port 8472 (the
// kernel's default, flannel's), learning off, no l2miss/l3miss (linen never
// waits for misses: every entry is programmed), VtepDevIndex and source
// address of the external interface, MTU (Backend.MTU or the external
// interface's) - 50, accept_ra=0, address <own subnet address>/32 (the
// source of host-to-remote-pod traffic; every other global address of the
// family is removed from the device). flannel-v6.<VNI> is the same over
// IPv6 with MTU - 70 (an IPv6 outer header is 20 bytes longer; flannel
// subtracts 50 there too) and a /128 address. MTU() is the smallest device
// MTU, since a pod's veth carries both families.
//
// An existing device is reused when compatible (VNI, port, lower device,
// source address, learning, GBP, no group, no misses, not
// collect-metadata), otherwise deleted and created again. Its MAC is the
// node's VtepMAC, published in the lease and programmed by every peer, so
// it must not change: the MAC of an existing device is kept, and it is
// written to Options.StateDir (vxlan-<device>.mac) so that a device deleted
// while the daemon was down comes back with the same MAC.
//
// Lease attributes: BackendType "vxlan", BackendData (and BackendV6Data)
// {"VNI":1,"VtepMAC":"..."}, flannel's JSON, so flannel nodes interoperate
// (the VNI in 16 bits like flannel's field; a lease without VNI, from an
// older flannel, is accepted; one with another VNI is refused).
//
// Repair. Two paths lead to the same reconciliation: every Sync (and
// Configure) first checks the devices (one link lookup each) and repairs
// them, and a link watcher (a netlink subscription bound to the host
// namespace) reacts at once when a device is deleted or changed behind the
// backend's back, recreating it and reprogramming the last lease set
// (retrying with backoff 1 s to 30 s while that fails). A periodic pass
// (Options.Resync, 30 s by default) catches entries removed by hand.
//
// The backend treats the network namespace of the thread that calls New as
// the host; everything afterwards goes through a netlink handle and a
// subscription bound to that namespace, so its methods may be called from
// any goroutine.
package vxlan
