// Package hostgw is the overlay backend that needs no encapsulation: every
// node is one hop away on the same L2 network, so a route per remote subnet
// via the remote node's public IP on the external interface is the whole
// data plane (flannel's host-gw). No device is created; the MTU is the
// external interface's.
//
// A remote public IP that is not on-link (the kernel's route to it has a
// gateway, leaves through another interface, or there is none) is reported
// as an error naming the lease, and the other leases still get their
// routes. New refuses a public IP that differs from the interface address
// (--public-ip behind NAT), as flannel does: host-gw needs L2 adjacency.
//
// Routes carry linen's route protocol (dataplane.RouteProtocol); stale ones
// (leases deleted while the daemon was down) are removed on the first Sync.
// A link watcher on the external interface reprograms at once when the
// interface comes back up (the kernel drops routes through a device that
// goes down), and a periodic pass (Options.Resync) restores routes deleted
// by hand. The calling thread's network namespace at New is the host's.
package hostgw
