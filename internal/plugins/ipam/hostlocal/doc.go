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
// A reservation is an O_CREAT|O_EXCL create of the address's file, so two
// writers can never hold the same address even without the lock.
//
// # The index
//
// The reference plugin reads every reservation file on every ADD (to refuse
// a duplicate allocation) and on every DEL. With 300 pods that is ~1.8 ms
// per call, paid at every pod start. linen keeps an index instead: one file
// mapping each address to its owner, the inode of its reservation file, and
// the directory's modification time when the index was written. Every
// operation, under the lock, reads the directory's names and inode numbers
// with one getdents (no per-file stat or read; ~0.1 ms for 300 entries) and
// the directory's mtime, and trusts the index only if both match exactly.
// Any change made by another writer (the reference binary, an operator
// deleting files) changes the directory's mtime and the name or inode set,
// so the index is then rebuilt by reading the files. The index is rewritten
// in place, never renamed, so writing it does not itself change the
// directory's mtime; a torn write fails the index's checksum and is rebuilt.
package hostlocal
