// Package runtime is linen's CRI side: what a container runtime (containerd's
// CRI plugin, CRI-O) does to give a pod sandbox its network, as a library
// that the `linen pod` commands, the benchmark and the demo share.
//
// # Pod start (AddPod)
//
//  1. Validate the request: pod name, namespace, UID and capability
//     arguments, before anything is created.
//  2. Select the default network (see LoadNetwork): the first valid
//     .conf/.conflist/.json file of NetDir in file-name order; a single
//     plugin .conf is upconverted to a one-plugin list. The choice is cached
//     and re-read only when the directory or the chosen file changes.
//  3. Create the infra namespace NetnsDir/NetnsPrefix+name (bind-mounted like
//     `ip netns add`) and bring its lo up in process (containerd runs the
//     loopback plugin for this; a netlink call is cheaper than an exec).
//  4. Write the pod record to StateDir before the first plugin runs, so that
//     a crash at any later point leaves something DelPod and GC can find.
//  5. Run the chain with libcni's AddNetworkList: a random 64-hex container
//     id like containerd's sandbox ids, CNI_ARGS
//     IgnoreUnknown=1;K8S_POD_NAMESPACE;K8S_POD_NAME;K8S_POD_INFRA_CONTAINER_ID;K8S_POD_UID,
//     the capability arguments (portMappings, bandwidth, ips, mac). libcni
//     caches the final result under CacheDir/results.
//  6. If ADD fails, run DEL (libcni does not), delete the namespace and the
//     record: a failed start leaves nothing behind.
//
// # Pod stop (DelPod)
//
// DEL runs with the configuration recorded at ADD time (not the one on disk
// now, which may have changed) and the recorded capability arguments (portmap
// needs them to find its rules). It is idempotent: a missing record,
// namespace or cache entry is not an error, and a second call succeeds. When
// DEL fails the namespace and the record stay so that the call can be
// retried, as containerd does.
//
// # GC
//
// GC removes what a crash or a lost DEL left behind, and only what belongs to
// this Runtime. An attachment in the libcni cache is linen's when its netns
// path is NetnsDir/NetnsPrefix*; it is valid when a record refers to it and
// the record's namespace still exists. Every other attachment of the cache
// (containerd's, cnitool's) is passed to the plugins as valid, so a shared
// /var/lib/cni is safe. GC then
//   - DELs linen attachments that are not valid (libcni GCNetworkList; for
//     attachments of a network that is no longer the default one, with the
//     configuration cached at ADD time), and sends the plugins GC (cniVersion
//     1.1.0 and later) with the valid set;
//   - removes records whose namespace is gone (after a reboot, /run is empty
//     but StateDir is not);
//   - deletes namespaces named NetnsPrefix* that have no record (a crash
//     between creating the namespace and writing the record).
//
// GC refuses to run when a record cannot be read: deciding that a pod is dead
// from a damaged record would tear down a live pod.
//
// # Concurrency
//
// A Runtime is safe for concurrent use by many goroutines, and several
// processes may share the same directories: AddPod and DelPod hold a shared
// flock on StateDir/.lock, GC holds it exclusively (the CNI spec forbids ADD
// or DEL while GC runs). Two operations on the same pod name must not run at
// once (the spec's rule for one container); two AddPods of the same name
// are told apart by the exclusive creation of the namespace.
//
// # Host namespace
//
// HostNS, when set, is the namespace the plugins treat as the host: every
// plugin is executed from a thread that has joined it (a child process
// inherits the namespace of the thread that forked it). Tests, the benchmark
// and the demo use this to keep everything out of the machine's root
// namespace.
package runtime
