package hostlocal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// The store is one network's directory, opened under its lock. Every
// operation follows the same shape:
//
//	open (mkdir, open lock file, flock LOCK_EX) -> scan -> index or rebuild
//	-> reserve/release files -> commit (rewrite the index) -> close (unlock)
//
// flock belongs to an open file description, so every store opens the lock
// file itself: concurrent callers in one process exclude each other exactly
// like separate processes do, and like the reference binary does.

const (
	lockName   = "lock"
	lastPrefix = "last_reserved_ip."
	indexName  = ".linen-index"
)

// lockTimeout bounds the wait for the lock when the context has no deadline.
const lockTimeout = 60 * time.Second

var direntBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type store struct {
	dir  string
	lock *os.File
	d    *os.File

	names  map[netip.Addr]uint64 // reservation files on disk: address -> inode
	leases map[netip.Addr]lease  // owners; valid once loaded
	loaded bool
	// indexOK: the index on disk describes the directory (as scanned, plus
	// the changes made through this store).
	indexOK bool
	changed bool
}

// errNoDir means the network has no directory: nothing was ever reserved.
var errNoDir = errors.New("no data directory")

// openStore locks the network directory dir. With create, the directory is
// made if missing; without, a missing directory is errNoDir.
func openStore(ctx context.Context, dir string, create bool) (*store, error) {
	if create {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		if !create && errors.Is(err, os.ErrNotExist) {
			return nil, errNoDir
		}
		return nil, fmt.Errorf("open data directory: %w", err)
	}
	lk, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := flock(ctx, lk); err != nil {
		d.Close()
		return nil, err
	}
	return &store{dir: dir, lock: lk, d: d}, nil
}

// flock takes an exclusive lock on f, waiting at most until ctx ends (or
// lockTimeout). On failure f is closed (possibly later, by the goroutine
// still waiting for the lock).
func flock(ctx context.Context, f *os.File) error {
	fd := int(f.Fd())
	err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
		f.Close()
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lockTimeout)
		defer cancel()
	}
	done := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(fd, unix.LOCK_EX)
			if !errors.Is(err, unix.EINTR) {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		return nil
	case <-ctx.Done():
		// The waiting goroutine owns f now; closing it releases the lock
		// it may still get.
		go func() { <-done; f.Close() }()
		return pluginmain.Errorf(pluginmain.CodeTryAgainLater, "lock %s: %v (another plugin holds it)", f.Name(), ctx.Err())
	}
}

func (s *store) close() {
	if s == nil {
		return
	}
	s.d.Close()
	s.lock.Close() // releases the flock
}

// scan reads the reservation file names and inodes.
func (s *store) scan() error {
	bp := direntBufs.Get().(*[]byte)
	defer direntBufs.Put(bp)
	names, err := scanDir(s.d, *bp)
	if err != nil {
		return err
	}
	s.names = names
	return nil
}

// readIndex loads the index if it matches the directory exactly (names,
// inodes and mtime); it reports whether it did.
func (s *store) readIndex() bool {
	b, err := os.ReadFile(filepath.Join(s.dir, indexName))
	if err != nil {
		return false
	}
	mt, leases, err := decodeIndex(b)
	if err != nil || len(leases) != len(s.names) {
		return false
	}
	now, err := dirMtime(s.d)
	if err != nil || now != mt {
		return false
	}
	for a, l := range leases {
		if ino, ok := s.names[a]; !ok || ino != l.ino {
			return false
		}
	}
	s.leases, s.loaded, s.indexOK = leases, true, true
	return true
}

// rebuild reads every reservation file (the slow path).
func (s *store) rebuild() error {
	leases := make(map[netip.Addr]lease, len(s.names))
	for a, ino := range s.names {
		o, err := s.readOwner(a)
		if errors.Is(err, os.ErrNotExist) {
			delete(s.names, a)
			continue
		}
		if err != nil {
			return err
		}
		leases[a] = lease{Owner: o, ino: ino}
	}
	s.leases, s.loaded, s.changed = leases, true, true
	return nil
}

// load scans the directory and loads the owners, from the index when it is
// valid, else from the files.
func (s *store) load() error {
	if err := s.scan(); err != nil {
		return err
	}
	if s.readIndex() {
		return nil
	}
	return s.rebuild()
}

func (s *store) readOwner(a netip.Addr) (Owner, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, a.String()))
	if err != nil {
		return Owner{}, err
	}
	return parseOwner(b), nil
}

// reserve creates a's reservation file for o. It reports false, without
// error, when the file exists already (its owner is then recorded).
func (s *store) reserve(a netip.Addr, o Owner) (bool, error) {
	name := filepath.Join(s.dir, a.String())
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		// The index missed it: learn the owner, let the caller move on.
		if owner, rerr := s.readOwner(a); rerr == nil {
			s.note(a, owner, 0)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reserve %s: %w", a, err)
	}
	_, werr := io.WriteString(f, o.content())
	ino, serr := inode(f)
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(name)
		return false, fmt.Errorf("reserve %s: %w", a, err)
	}
	s.note(a, o, ino)
	return true, nil
}

// note records a reservation file that exists on disk.
func (s *store) note(a netip.Addr, o Owner, ino uint64) {
	if ino == 0 {
		// Unknown inode: the index cannot vouch for this entry.
		s.indexOK = false
	}
	s.names[a] = ino
	s.leases[a] = lease{Owner: o, ino: ino}
	s.changed = true
}

// release removes a's reservation file; a missing file is not an error.
func (s *store) release(a netip.Addr) error {
	err := os.Remove(filepath.Join(s.dir, a.String()))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release %s: %w", a, err)
	}
	delete(s.names, a)
	if s.leases != nil {
		delete(s.leases, a)
	}
	s.changed = true
	return nil
}

// lastReserved is the address last reserved from range set i, or the zero
// Addr.
func (s *store) lastReserved(i int) netip.Addr {
	b, err := os.ReadFile(filepath.Join(s.dir, lastPrefix+strconv.Itoa(i)))
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(strings.TrimSpace(string(b)))
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// setLastReserved records a as the address last reserved from set i. The
// file is overwritten in place rather than truncated to zero first: on ext4
// an O_TRUNC rewrite forces block allocation at close (auto_da_alloc), which
// costs more than the rest of an ADD. A torn write can only leave a wrong
// round-robin hint, never a wrong reservation.
func (s *store) setLastReserved(i int, a netip.Addr) error {
	if err := overwrite(filepath.Join(s.dir, lastPrefix+strconv.Itoa(i)), []byte(a.String())); err != nil {
		return fmt.Errorf("record last reserved address: %w", err)
	}
	return nil
}

// overwrite replaces the content of the file at path (created if missing)
// in place: write at offset 0, then cut the file to the new length.
func overwrite(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.WriteAt(b, 0)
	var terr error
	if werr == nil {
		terr = f.Truncate(int64(len(b)))
	}
	return errors.Join(werr, terr, f.Close())
}

// commit rewrites the index when the store changed (or the index was
// stale). The file is rewritten in place, so the directory's mtime, read
// after the index file exists, stays what the index records.
func (s *store) commit() error {
	if !s.loaded || (!s.changed && s.indexOK) {
		return nil
	}
	for _, l := range s.leases {
		if l.ino == 0 {
			// An entry learnt without its inode: rescan for it.
			if err := s.scan(); err != nil {
				return err
			}
			for a := range s.leases {
				if ino, ok := s.names[a]; ok {
					l := s.leases[a]
					l.ino = ino
					s.leases[a] = l
				}
			}
			break
		}
	}
	// Create the index first (if missing): creating it changes the
	// directory's mtime, which must be read afterwards.
	path := filepath.Join(s.dir, indexName)
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		if err := overwrite(path, nil); err != nil {
			return fmt.Errorf("write index: %w", err)
		}
	}
	mt, err := dirMtime(s.d)
	if err != nil {
		return err
	}
	if err := overwrite(path, encodeIndex(mt, s.leases)); err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	s.indexOK, s.changed = true, false
	return nil
}
