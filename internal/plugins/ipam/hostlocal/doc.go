// Package hostlocal is the host-local IPAM plugin: it hands out addresses
// from configured ranges and remembers each reservation in a file on the
// node, in exactly the on-disk format of the reference host-local plugin, so
// that a node can switch between the two binaries without losing leases.
//
// # Ranges
//
// ipam.ranges is a list of range sets; ADD returns one address from every
// set. A set is a pool of one or more ranges (a subnet, optionally narrowed
// by rangeStart and rangeEnd) of one address family. Within a set the
// allocator goes round-robin: it starts just after the address it reserved
// last (kept in last_reserved_ip.<set index>), walks to the end of that
// range, continues with the next ranges of the set, wraps around and stops
// when it is back where it started. It never hands out a range's gateway,
// nor the network or broadcast address of an IPv4 subnet. The legacy
// top-level ipam.subnet/rangeStart/rangeEnd/gateway form a set placed before
// ipam.ranges, and runtimeConfig.ipRanges (the ipRanges capability) are
// placed before both, as the reference plugin does.
//
// # On-disk state
//
// <dataDir>/<network>/ holds:
//
//	<ip>                    one file per reserved address, mode 0600, content
//	                        "<containerID>\r\n<ifname>" (older versions wrote
//	                        only "<containerID>"; both are understood)
//	last_reserved_ip.<N>    the address reserved last from range set N
//	lock                    flock(LOCK_EX) around every change
//	.linen-index            linen's index (see below); the reference plugin
//	                        reads it like any file and ignores it, because its
//	                        content never equals a container ID
//
// A reservation file is written unnamed (O_TMPFILE) and then linked under
// the address's name, which fails if the name exists: two writers can never
// hold the same address even without the lock, and the file never exists
// without its owner. Filesystems without O_TMPFILE get an O_CREAT|O_EXCL
// create followed by the write, as the reference plugin does.
//
// # The index
//
// The reference plugin reads every reservation file on every ADD (to refuse
// a duplicate allocation) and on every DEL. With 300 pods that is ~1.8 ms
// per call, paid at every pod start. linen keeps an index instead: ADD and
// DEL read no reservation file and list nothing, and what grows with the
// number of reservations is an in-memory scan of the index (about 5 µs per
// 300 reservations).
//
// The index is an append-only journal: a compacted base (one line per
// reservation: address, inode, owner) followed by the changes of later
// operations ("+" reserved, "-" released), each operation's lines closed by
// a seal with a checksum. An operation, under the lock:
//
//   - reads the index and checks its last seal: the seal holds the
//     directory's mtime, and one fstat of the directory decides whether the
//     index describes it. Nothing is listed, no reservation file is read;
//   - answers its question by scanning the index's bytes: the addresses of
//     an owner are the lines ending with the owner's encoding and not
//     released by a later line; nothing else is decoded;
//   - creates or removes reservation files; a free address for ADD is simply
//     the first candidate whose name can be linked;
//   - sets the directory's mtime to a value just below the stamp its own
//     last change got, and different from the last seal (vouching, below),
//     then appends its lines and a seal holding that value in one write.
//
// Vouching: every change of a directory stamps its mtime with the current
// time, which does not go back; the kernel's timestamps may be coarser than
// the time between two changes, so the stamp itself could repeat, but a
// value set just below the last stamp can never be produced by a later
// change, by linen, the reference plugin or an operator. A seal therefore
// matches the directory's mtime exactly as long as nobody changed the
// directory since. Setting it needs the directory's owner (or
// CAP_FOWNER); where it fails, the seal records the observed mtime and the
// index is trusted only if one getdents also shows exactly its names and
// inode numbers.
//
// When the index does not match, the files decide: every reservation file is
// read and a new index is written. When the index has grown past twice the
// number of reservations (plus 64 lines) it is compacted: written whole to a
// new file, renamed over the old one, then sealed. Compaction first compares
// one getdents of the directory with the index, which catches a writer that
// ignored the lock. A crash between any two steps leaves either an index
// that describes the files or one that the next operation does not trust:
// files change before the index records it, the mtime is vouched for after
// the last change, the seal follows the vouching, and a vouched value never
// equals the seal already in the file. An ADD that finds a reservation file
// the index does not know, or a DEL that finds one missing, drops the index.
//
// Not detected: a file's content rewritten in place (the reference plugin
// never does that), a writer that ignores the lock in the microseconds
// between an operation's last change and its vouching (until the next
// compaction), and the realtime clock stepped back onto a sealed value.
package hostlocal
