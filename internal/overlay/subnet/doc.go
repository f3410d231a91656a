// Package subnet is the overlay's subnet leasing: the network
// configuration (net-conf.json), the lease model in flannel's store
// layout, a pure allocator, and the Manager that acquires, keeps and
// watches leases through a Store.
//
// It imports no etcd code (only the standard library), so packages that
// linen-cni links may use its types; the etcd Store is in etcdstore,
// subnet.env is in internal/subnetenv.
//
// # Store layout (flannel's, so flannel and linen nodes can share a store)
//
//	<prefix>/config                      net-conf.json, written by the operator
//	<prefix>/subnets/10.5.52.0-24        {"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{...}}
//	<prefix>/subnets/10.5.52.0-24&fc00::-64   dual stack
//	<prefix>/subnets/fc00::-64           IPv6 only (linen's form; flannel's etcd mode has none)
//
// The value's bytes are exactly what flannel writes (LeaseAttrs.MarshalJSON).
// A key with a TTL is a lease; a key without one (etcdctl put with no
// --lease) is a reservation: Lease.Expiration is zero, it never expires,
// the Manager reuses it for the node with that public address and never
// deletes it.
//
// # Lease lifecycle
//
//	Config   poll <prefix>/config every ConfigRetry (1 s) until it exists and parses
//	Acquire  list -> Allocate -> one transaction; up to RaceRetries (10) rounds
//	         when another node wins a race (key created meanwhile, lease rewritten)
//	Keep     renew RenewMargin (60 min) before expiry, RetryInterval (1 min) after
//	         a failure; follow the own key: deleted, expired or taken by another
//	         node -> Acquire again (same subnets if still free) -> onNew
//	Watch    list -> watch from revision+1 -> fn(full set) after each change;
//	         reconnect with backoff 100 ms..5 s from the last revision seen + 1;
//	         compacted -> list again
//
// Allocation order (Allocate, pure and tested against a brute-force
// oracle): the node's own lease, identified by its public address (IPv4,
// or IPv6 in an IPv6-only network), if it still fits the configuration
// (reservations first; own leases that no longer fit are deleted unless
// they are reservations); else per family the previous subnet (from
// subnet.env) when it fits and overlaps no lease; else per family a
// uniformly random pick among the first 100 free subnets from SubnetMin
// to SubnetMax (leases larger than a subnet are jumped over, so a big IPv6
// reservation costs one step). ErrNoFreeSubnet when a family is full.
//
// Unlike flanneld, a node whose lease is deleted or expires (after an
// etcd outage longer than the TTL, or an operator's etcdctl del) does not
// exit: Keep acquires again and the daemon re-applies the new lease.
// Renewals and the reuse of an own lease are conditional on the key's
// revision (Lease.Revision), so a renewal never overwrites a key another
// node has taken in the meantime.
//
// # What each call costs (etcdstore)
//
//	Config        1 range request per poll
//	Acquire       per round: 1 range + 1 lease grant + 1 transaction
//	              (+1 delete per own lease that no longer fits;
//	              +1 revoke of the grant when the transaction loses)
//	Keep renewal  1 grant + 1 transaction + 1 revoke of the old etcd lease,
//	              once per TTL-RenewMargin (23 h by default)
//	Keep, Watch   1 initial range, then one watch stream each (events are
//	              pushed, no polling)
//
// flannel asks etcd for the remaining TTL of every lease (TimeToLive) on
// every list and every event. The etcdstore Store caches the expiration per
// etcd lease ID instead: leases it granted itself cost nothing, and a
// lease written by another node costs one TimeToLive the first time its
// lease ID is seen (8 in flight at once), i.e. once per node per renewal,
// not once per list.
package subnet
