// Package etcdstore is the subnet.Store over etcd v3 (go.etcd.io/etcd/client/v3)
// in flannel's key layout, and an embedded single-node etcd
// (go.etcd.io/etcd/server/v3/embed) for nodes given no etcd endpoint.
//
// linen-cni must never import this package (it links etcd and gRPC).
//
// # Store
//
// New connects lazily to Options.Endpoints (flanneld's --etcd-endpoints,
// --etcd-prefix, --etcd-cafile/certfile/keyfile, --etcd-username/password;
// TLS 1.2 or later). Each request is bounded by RequestTimeout (10 s).
//
//	Config       Get <prefix>/config
//	Leases       Get <prefix>/subnets/ (prefix range); expirations from the
//	             per-lease-ID cache, TimeToLive only for IDs not seen before
//	CreateLease  Grant(ttl) + Txn{ Version(key)==0 -> Put(key, attrs, lease) };
//	             the grant is revoked when the compare fails (ErrExists)
//	UpdateLease  Grant(ttl) + Txn{ ModRevision(key)==rev -> Put(prevKV), else
//	             count(key) } -> ErrNotFound / ErrConflict; the etcd lease the key
//	             had before is revoked
//	DeleteLease  Txn{ ModRevision(key)==rev -> Delete, else count(key) }, or a
//	             plain Delete when the revision is unknown
//	WatchLeases  Watch(prefix, WithRev(rev), WithRequireLeader); a compacted
//	             revision -> subnet.ErrCompacted; the client itself bridges
//	             connection losses, resuming after the last delivered revision
//
// Like flannel, every create or renewal grants a fresh etcd lease (no
// KeepAlive stream): a node's lease outlives the process that wrote it
// by up to the TTL, which is what lets a restarted daemon find and reuse
// it. Reservations are keys without an etcd lease (ttl 0).
//
// # Embedded etcd
//
// Package embedded (StartEmbedded, imported only by the linen-etcd binary
// and by tests, so that the daemon does not link the etcd server) runs one
// etcd member in-process (client and peer URLs on
// loopback by default, data under EmbeddedOptions.DataDir, periodic
// compaction keeping 1 h of history) and optionally stores an initial
// net-conf.json. Restarting on the same data directory keeps revisions and
// leases (etcd extends the leases' TTLs on restart). Stop waits for open
// client streams for up to etcd's request timeout (about 5 s) before it
// cuts them, so close your clients first.
//
// The shortest TTL etcd grants is 1.5 x ElectionMs rounded up to seconds
// (2 s with the defaults); etcdtest uses TickMs 10 and ElectionMs 100 to
// get 1 s leases and sub-second starts.
package etcdstore
