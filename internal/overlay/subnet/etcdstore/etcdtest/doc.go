// Package etcdtest runs etcd for tests, embedded or as a child process of
// an etcd binary: 127.0.0.1 only, ports picked free at run time, data
// under t.TempDir(), fast raft timing (so that 1 s lease TTLs are
// honoured), stopped at test cleanup.
//
//	srv := etcdtest.Start(t)          // or StartProcess(t, "/usr/bin/etcd")
//	st := srv.Store(t, "/coreos.com/network")
//	srv.Restart(t); srv.Compact(t); srv.PutRaw(t, prefix, key, value)
//
// Harness and ProcessHarness adapt a fresh server to storetest.Run.
package etcdtest
