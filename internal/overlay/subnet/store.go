package subnet

import (
	"context"
	"errors"
	"time"
)

// Errors a Store returns (wrapped or as is; test with errors.Is).
var (
	// ErrNotFound: the configuration key, or the lease key, does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: CreateLease found the key already there.
	ErrExists = errors.New("subnet already leased")
	// ErrConflict: the key's revision is not the one the update or delete
	// expected (someone else wrote it).
	ErrConflict = errors.New("lease changed concurrently")
	// ErrCompacted: WatchLeases was asked for a revision the store has
	// compacted away; list again.
	ErrCompacted = errors.New("revision compacted")
)

// EventType is what happened to a lease key.
type EventType int

const (
	EventPut    EventType = iota // the key was created or overwritten
	EventDelete                  // the key was deleted or its TTL ran out
)

func (t EventType) String() string {
	if t == EventDelete {
		return "delete"
	}
	return "put"
}

// Event is one change below <prefix>/subnets/.
type Event struct {
	Type EventType
	// Lease is the new lease for EventPut; for EventDelete only its
	// subnets (parsed from the key) are set.
	Lease Lease
	// Revision is the store revision of the change.
	Revision int64
}

// Store is the lease store: flannel's layout below a key prefix,
// <prefix>/config (net-conf.json) and <prefix>/subnets/<key> (lease attrs
// JSON, with a TTL unless it is a reservation). Implementations: etcdstore
// (external or embedded etcd), storetest's in-memory store. All methods are
// safe for concurrent use; storetest.Run is the conformance suite.
type Store interface {
	// Config returns the raw network configuration; ErrNotFound when the
	// key is missing.
	Config(ctx context.Context) ([]byte, error)
	// PutConfig writes the network configuration.
	PutConfig(ctx context.Context, conf []byte) error

	// Leases lists every lease (keys that do not parse as subnet keys, or
	// values that are not lease attrs, are skipped) in key order, with the
	// store revision the list was read at.
	Leases(ctx context.Context) ([]Lease, int64, error)
	// CreateLease creates l's key, only if it does not exist (ErrExists
	// otherwise), with the given TTL (0: no TTL, a reservation). It returns
	// the lease as stored: Expiration and Revision set.
	CreateLease(ctx context.Context, l Lease, ttl time.Duration) (*Lease, error)
	// UpdateLease rewrites l's key with l.Attrs and a fresh TTL (0: no TTL),
	// only if the key still has revision l.Revision: ErrNotFound when it is
	// gone, ErrConflict when it was rewritten.
	UpdateLease(ctx context.Context, l Lease, ttl time.Duration) (*Lease, error)
	// DeleteLease deletes l's key; when l.Revision is not 0, only if the key
	// still has that revision (ErrConflict otherwise). A missing key is not
	// an error.
	DeleteLease(ctx context.Context, l Lease) error

	// WatchLeases calls fn with the changes below <prefix>/subnets/ from
	// revision rev on (rev >= 1), in order, each batch in one call, until
	// ctx ends (ctx.Err() is returned), fn fails (its error is returned),
	// the revision is compacted (ErrCompacted) or the watch breaks (any
	// other error; resume from the last revision seen + 1). A store may
	// bridge short disconnections itself, without loss or duplicates.
	WatchLeases(ctx context.Context, rev int64, fn func([]Event) error) error

	// Close releases the store's connections.
	Close() error
}
