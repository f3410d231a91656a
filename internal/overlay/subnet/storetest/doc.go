// Package storetest is the conformance suite every subnet.Store passes,
// and an in-memory Store.
//
//	storetest.Run(t, newHarness)
//
// newHarness gives each case a fresh, empty backing store (Harness): Open
// for clients under a key prefix, and where the store can, Restart (stop
// and start the server on the same data), Compact and PutRaw (foreign
// keys, as etcdctl would write them). Run checks: the configuration key;
// create only if absent, also with 8 concurrent creators; updates and
// deletes conditional on the key's revision; reservations (no TTL); TTL
// expiry seen by list and watch; expirations of leases another client
// wrote; watch from a revision (order, revisions, fn's error, ctx's
// error); live watch; a watch resumed from the last revision + 1 across a
// server restart, without loss or duplicates; ErrCompacted after
// compaction, and watching again from a fresh list; prefix isolation;
// foreign keys and values skipped.
//
// Implementations that pass it: etcdstore over the embedded etcd
// (etcdtest.Harness), over an etcd binary in a child process
// (etcdtest.ProcessHarness, e.g. Debian's etcd-server 3.4), over any etcd
// named by LINEN_ETCD_ENDPOINTS, and Memory here.
//
// Memory keeps etcd's semantics as far as subnet.Store needs them (one
// revision counter, TTLs, history, compaction; Restart breaks open
// watches), for tests that want a store without etcd:
//
//	m := storetest.NewMemory()
//	defer m.Close()
//	mgr := subnet.NewManager(m.Open("/coreos.com/network"), subnet.ManagerOptions{})
package storetest
