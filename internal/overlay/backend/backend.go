// Package backend is the overlay daemon's view of a data-plane backend: the
// Backend interface, what a backend is built from (the network
// configuration, the external interface, options) and the registry of the
// backends linen has (Registry).
//
// Every backend computes the kernel state it wants from the full lease set
// as plain data and reconciles the kernel with it (package dataplane):
// Sync is level-triggered and idempotent, removes what leases deleted
// while the daemon was down left behind, and writes nothing when nothing
// changed. Close stops the backend's goroutines and leaves the data plane in
// place, so a restarted daemon drops no traffic.
//
// The backends live in subpackages (vxlan, hostgw, udp) that import dataplane,
// not this package, so that Registry can name them without an import cycle;
// ExternalInterface and Options are dataplane's types under this package's
// names.
package backend

import (
	"context"

	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/backend/hostgw"
	"linen.dev/linen/internal/overlay/backend/udp"
	"linen.dev/linen/internal/overlay/backend/vxlan"
	"linen.dev/linen/internal/overlay/subnet"
)

// ExternalInterface is the node's underlay interface (see dataplane).
type ExternalInterface = dataplane.ExternalInterface

// Options are the settings every backend gets (see dataplane).
type Options = dataplane.Options

// Backend programs a node's data plane for the cluster's leases.
type Backend interface {
	// Prepare creates what must exist before leasing (devices, keys) and
	// returns the attributes to publish with the lease.
	Prepare(ctx context.Context) (subnet.LeaseAttrs, error)
	// Configure applies the node's own lease (device addresses, routes to
	// the network through a device). Called again if the lease changes.
	Configure(own subnet.Lease) error
	// Sync reconciles the data plane with the full lease set (the own
	// lease and leases of another backend type are skipped). Problems with
	// single leases are returned but do not keep the others from being
	// programmed.
	Sync(all []subnet.Lease) error
	// MTU is the pods' MTU (FLANNEL_MTU).
	MTU() int
	// Stats are counters for /metrics.
	Stats() map[string]uint64
	// Close stops goroutines and leaves the kernel state in place.
	Close() error
}

// Constructor builds a backend from the network configuration. It changes
// nothing in the kernel; the calling thread's network namespace is the
// node's.
type Constructor func(cfg *subnet.Config, ext ExternalInterface, o Options) (Backend, error)

// Registry returns the backends of this package tree by the lower-cased
// Backend.Type of net-conf.json.
func Registry() map[string]Constructor {
	return map[string]Constructor{
		vxlan.BackendType: func(cfg *subnet.Config, ext ExternalInterface, o Options) (Backend, error) {
			b, err := vxlan.New(cfg, ext, o)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		hostgw.BackendType: func(cfg *subnet.Config, ext ExternalInterface, o Options) (Backend, error) {
			b, err := hostgw.New(cfg, ext, o)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		udp.BackendType: func(cfg *subnet.Config, ext ExternalInterface, o Options) (Backend, error) {
			b, err := udp.New(cfg, ext, o)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
	}
}

var (
	_ Backend = (*vxlan.Backend)(nil)
	_ Backend = (*hostgw.Backend)(nil)
	_ Backend = (*udp.Backend)(nil)
)
