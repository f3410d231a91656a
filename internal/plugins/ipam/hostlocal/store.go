package hostlocal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
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
//	open (mkdir, open lock file, flock LOCK_EX) -> load (trust the index, or
//	rebuild from the files) -> reserve/release files -> commit (append to the
//	index, or compact it; then seal) -> close (unlock)
//
// flock belongs to an open file description, so every store opens the lock
// file itself: concurrent callers in one process exclude each other exactly
// like separate processes do, and like the reference binary does.
//
// The files are the truth; the index is a cache that the store trusts only
// when its last seal vouches for the directory's current mtime (see vouch).
// Every step is ordered so that a crash between any two of them leaves
// either the files and a trusted index in agreement, or an index that the
// next operation does not trust:
//
//   - reservation files are created and removed before the index records
//     the change;
//   - the directory's mtime is vouched for after the last change of the
//     directory, and is never set to the value the index's last seal holds;
//   - entries and their seal are appended in one write, after vouching;
//   - compaction writes a new file and renames it over the index, unsealed,
//     and seals it only then.

const (
	lockName   = "lock"
	lastPrefix = "last_reserved_ip."
	indexName  = ".linen-index"
	// compactSlack is how many lines an index may grow beyond twice its
	// live reservations before it is compacted.
	compactSlack = 64
	// maxIndexSize bounds what is read of an index; a larger one is
	// rebuilt from the files.
	maxIndexSize = 256 << 20
)

// lockTimeout bounds the wait for the lock when the context has no deadline.
const lockTimeout = 60 * time.Second

var (
	direntBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	indexBufs  = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}
)

// stepHookKey is the context key of a func(step string) that a store calls
// after each step that changes the disk. Tests use it to stop a process at
// any point and check what the next operation makes of the directory.
type stepHookKey struct{}

type store struct {
	dir  string
	lock *os.File
	d    *os.File // the directory: getdents, fstat, utimensat
	hook func(string)

	idx    *os.File // the index, open for appending (nil if missing)
	buf    []byte   // the index's content, while it answers queries
	bufp   *[]byte  // buf's pool entry
	last   seal     // the index's last seal, if sealed
	sealed bool

	// trusted: the state (the index plus pending, or leases) describes the
	// directory. Nothing is written to the index unless it is.
	trusted bool
	// leases is the whole state, once something needed it or after a
	// rebuild; nil while buf answers queries.
	leases  map[netip.Addr]lease
	live    int     // live reservations, pending included
	lines   int     // lines after the index's header, before pending
	pending []entry // changes not yet in the index
	// rewrite: the index must be written whole (it was rebuilt or is
	// damaged).
	rewrite bool
	// dirty: this store changed the directory, so its mtime moved.
	dirty bool
	// doubt: the directory disagreed with a trusted index; the index is
	// invalidated at commit so that the next operation rebuilds it.
	doubt bool
	// taken are addresses found reserved on disk while the index (without
	// leases) was answering; commit checks that the index knew them.
	taken []netip.Addr

	// An unnamed file holding tmpOwner, not yet linked (see create).
	tmp       *os.File
	tmpOwner  Owner
	tmpIno    uint64
	noTmpfile bool
}

// entry is one change not yet in the index.
type entry struct {
	add bool
	a   netip.Addr
	l   lease
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
	hook, _ := ctx.Value(stepHookKey{}).(func(string))
	return &store{dir: dir, lock: lk, d: d, hook: hook}, nil
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
	if s.idx != nil {
		s.idx.Close()
	}
	if s.tmp != nil {
		s.tmp.Close() // never linked: the filesystem frees it
	}
	if s.bufp != nil {
		*s.bufp = s.buf[:0]
		indexBufs.Put(s.bufp)
		s.buf, s.bufp = nil, nil
	}
	s.d.Close()
	s.lock.Close() // releases the flock
}

func (s *store) step(name string) {
	if s.hook != nil {
		s.hook(name)
	}
}

// load makes the store's state describe the directory: the index when its
// seal vouches for the directory, else the files (rebuild).
func (s *store) load() error {
	ok, err := s.loadIndex()
	if err != nil || ok {
		return err
	}
	return s.rebuild()
}

// loadIndex reads the index and reports whether it describes the
// directory. A vouched seal is trusted when it equals the directory's
// mtime. An observed one (the filesystem refused to set the mtime) must
// also agree with the directory's names and inodes, which costs a getdents
// and a full decode.
func (s *store) loadIndex() (bool, error) {
	f, err := os.OpenFile(filepath.Join(s.dir, indexName), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return false, nil // missing or unusable: rebuild writes a new one
	}
	s.idx = f
	s.bufp = indexBufs.Get().(*[]byte)
	s.buf, err = readIndex(f, (*s.bufp)[:0])
	if err != nil {
		return false, nil
	}
	last, ok := lastSeal(s.buf)
	if !ok {
		return false, nil
	}
	mt, err := dirMtime(s.d)
	if err != nil {
		return false, err
	}
	if mt != last.mtime {
		return false, nil
	}
	if !last.vouched {
		leases, _, err := parseIndex(s.buf)
		if err != nil {
			return false, nil
		}
		names, err := s.scan()
		if err != nil {
			return false, err
		}
		if !sameFiles(names, leases) {
			return false, nil
		}
		s.leases = leases
	}
	s.last, s.sealed, s.trusted = last, true, true
	s.live, s.lines = last.live, last.lines
	return true, nil
}

// readIndex reads the open index into buf (grown as needed).
func readIndex(f *os.File, buf []byte) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return buf, err
	}
	if st.Size > maxIndexSize {
		return buf, errBadIndex
	}
	if n := int(st.Size) + 1; cap(buf) < n {
		buf = make([]byte, 0, n+n/4)
	}
	for {
		n, err := f.ReadAt(buf[len(buf):cap(buf)], int64(len(buf)))
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
		if len(buf) == cap(buf) {
			if len(buf) > maxIndexSize {
				return buf, errBadIndex
			}
			buf = slices.Grow(buf, len(buf))
		}
	}
}

// sameFiles reports whether the reservation files (address -> inode) are
// exactly the leases.
func sameFiles(names map[netip.Addr]uint64, leases map[netip.Addr]lease) bool {
	if len(names) != len(leases) {
		return false
	}
	for a, l := range leases {
		if ino, ok := names[a]; !ok || ino != l.ino {
			return false
		}
	}
	return true
}

// scan reads the reservation file names and inodes.
func (s *store) scan() (map[netip.Addr]uint64, error) {
	bp := direntBufs.Get().(*[]byte)
	defer direntBufs.Put(bp)
	return scanDir(s.d, *bp)
}

// rebuild reads every reservation file (the slow path). The index is then
// rewritten at commit.
func (s *store) rebuild() error {
	names, err := s.scan()
	if err != nil {
		return err
	}
	leases := make(map[netip.Addr]lease, len(names))
	for a, ino := range names {
		o, err := s.readOwner(a)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		leases[a] = lease{Owner: o, ino: ino}
	}
	s.leases, s.live, s.pending, s.taken = leases, len(leases), nil, nil
	s.trusted, s.rewrite, s.doubt = true, true, false
	return nil
}

func (s *store) readOwner(a netip.Addr) (Owner, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, a.String()))
	if err != nil {
		return Owner{}, err
	}
	return parseOwner(b), nil
}

// all returns every live reservation, decoding the index if it was not yet.
func (s *store) all() (map[netip.Addr]lease, error) {
	if s.leases != nil {
		return s.leases, nil
	}
	leases, last, err := parseIndex(s.buf)
	if err != nil || last != s.last {
		// Damaged before its last block: the files decide.
		if err := s.rebuild(); err != nil {
			return nil, err
		}
		return s.leases, nil
	}
	for _, e := range s.pending {
		if e.add {
			leases[e.a] = e.l
		} else {
			delete(leases, e.a)
		}
	}
	s.leases = leases
	return leases, nil
}

// ownedBy returns the addresses reserved for the attachment (id, ifName),
// in address order; with legacy, also the ID-only reservations of id.
func (s *store) ownedBy(id, ifName string, legacy bool) ([]netip.Addr, error) {
	match := func(o Owner) bool {
		return o.ID == id && (o.IfName == ifName && !o.Legacy || legacy && o.Legacy)
	}
	var out []netip.Addr
	if s.leases == nil {
		var err error
		out, err = scanOwned(s.buf, id, ifName, legacy)
		if err != nil {
			if err := s.rebuild(); err != nil {
				return nil, err
			}
			return s.ownedBy(id, ifName, legacy)
		}
		for _, e := range s.pending {
			out = slices.DeleteFunc(out, func(a netip.Addr) bool { return a == e.a })
			if e.add && match(e.l.Owner) {
				out = append(out, e.a)
			}
		}
	} else {
		for a, l := range s.leases {
			if match(l.Owner) {
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// reserve creates a's reservation file for o. It reports false, without
// error, when a is reserved already.
func (s *store) reserve(a netip.Addr, o Owner) (bool, error) {
	if s.leases != nil {
		if _, ok := s.leases[a]; ok {
			return false, nil
		}
	}
	ino, err := s.create(a.String(), o)
	if errors.Is(err, os.ErrExist) {
		if s.leases != nil {
			s.doubt = true // the files hold what the state does not
		} else {
			s.taken = append(s.taken, a)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reserve %s: %w", a, err)
	}
	s.step("reserve")
	if s.trusted {
		s.pending = append(s.pending, entry{add: true, a: a, l: lease{Owner: o, ino: ino}})
		s.live++
		if s.leases != nil {
			s.leases[a] = lease{Owner: o, ino: ino}
		}
	}
	return true, nil
}

// create makes the reservation file name holding o, failing with
// os.ErrExist when the name exists. The file is written unnamed
// (O_TMPFILE) and then linked under its name, which fails if the name
// exists: a reservation file never exists without its owner, whenever the
// process stops. One unnamed file serves every candidate of a range set
// until one is free.
func (s *store) create(name string, o Owner) (uint64, error) {
	if !s.noTmpfile {
		if s.tmp != nil && s.tmpOwner != o {
			s.tmp.Close()
			s.tmp = nil
		}
		if s.tmp == nil {
			f, ino, err := writeTmpfile(s.d, o.content())
			if err != nil && !errors.Is(err, errNoTmpfile) {
				return 0, err
			}
			s.tmp, s.tmpOwner, s.tmpIno = f, o, ino
		}
		if s.tmp != nil {
			err := linkTmpfile(s.tmp, s.d, name)
			if err == nil {
				s.dirty = true
				s.tmp.Close()
				s.tmp = nil
				return s.tmpIno, nil
			}
			if !errors.Is(err, errNoTmpfile) {
				return 0, err
			}
			s.tmp.Close()
			s.tmp = nil
		}
		s.noTmpfile = true
	}
	// Created by name, then written: a crash in between leaves an empty
	// file, as the reference plugin does.
	path := filepath.Join(s.dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	s.dirty = true
	s.step("create")
	_, werr := io.WriteString(f, o.content())
	ino, serr := inode(f)
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return 0, err
	}
	return ino, nil
}

// release removes a's reservation file; a missing file is not an error.
// While the state is trusted, a must be one of its reservations.
func (s *store) release(a netip.Addr) error {
	err := os.Remove(filepath.Join(s.dir, a.String()))
	switch {
	case err == nil:
		s.dirty = true
	case errors.Is(err, os.ErrNotExist):
		s.doubt = s.doubt || s.trusted // the state said it was there
	default:
		return fmt.Errorf("release %s: %w", a, err)
	}
	s.step("release")
	if !s.trusted {
		return nil
	}
	s.live--
	if s.leases != nil {
		delete(s.leases, a)
	}
	// Releasing what this store reserved (a failed ADD) cancels out.
	for i, e := range s.pending {
		if e.add && e.a == a {
			s.pending = slices.Delete(s.pending, i, i+1)
			return nil
		}
	}
	s.pending = append(s.pending, entry{a: a})
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
	s.dirty = true // the first one creates the file
	if err := overwrite(filepath.Join(s.dir, lastPrefix+strconv.Itoa(i)), []byte(a.String())); err != nil {
		return fmt.Errorf("record last reserved address: %w", err)
	}
	s.step("last reserved")
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

// commit brings the index up to date with this store's changes: it appends
// them with a seal, or compacts the index when it has grown past twice its
// live reservations (or was rebuilt). Without changes it writes nothing.
func (s *store) commit() error {
	if !s.trusted {
		return nil
	}
	if len(s.taken) > 0 && s.leases == nil {
		for _, known := range liveIn(s.buf, s.taken) {
			s.doubt = s.doubt || !known
		}
	}
	if s.doubt {
		return s.invalidate()
	}
	if !s.dirty && !s.rewrite && len(s.pending) == 0 {
		return nil
	}
	if s.rewrite || s.lines+len(s.pending)+1 > 2*s.live+compactSlack {
		return s.compact()
	}
	b := make([]byte, 0, 64+len(s.pending)*100)
	for _, e := range s.pending {
		if e.add {
			b = appendReserve(b, e.a, e.l)
		} else {
			b = appendRelease(b, e.a)
		}
	}
	return s.seal(b, 0, false, s.lines+len(s.pending)+1)
}

// compact writes the live reservations to a new index file and renames it
// over the old one. When the state came from the index, the directory's
// names and inodes are compared with it first: a periodic check, paid once
// per compaction, that catches what the mtime could not (a writer that
// ignores the lock).
func (s *store) compact() error {
	leases, err := s.all()
	if err != nil {
		return err
	}
	if !s.rewrite {
		names, err := s.scan()
		if err != nil {
			return err
		}
		if !sameFiles(names, leases) {
			if err := s.rebuild(); err != nil {
				return err
			}
			leases = s.leases
		}
	}
	body := encodeLeases(leases)
	path := filepath.Join(s.dir, indexName)
	f, err := os.OpenFile(path+".new", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	if _, err := f.Write(body); err != nil {
		f.Close()
		return fmt.Errorf("write index: %w", err)
	}
	s.step("compact write")
	if err := os.Rename(path+".new", path); err != nil {
		f.Close()
		return fmt.Errorf("write index: %w", err)
	}
	s.dirty = true
	s.step("compact rename")
	if s.idx != nil {
		s.idx.Close()
	}
	// The new file has no seal yet, so any vouched mtime differs from it.
	s.idx, s.sealed, s.rewrite = f, false, false
	return s.seal(body, len(header), true, len(leases)+1)
}

// seal vouches for the directory's mtime, then appends to the index a seal
// of the block b[blockStart:] (the lines since the previous seal), preceded
// by b itself unless b is in the file already. lines is the index's line
// count after the seal.
func (s *store) seal(b []byte, blockStart int, inFile bool, lines int) error {
	sl := seal{live: s.live, lines: lines}
	sl.mtime, sl.vouched = s.vouch()
	s.step("vouch")
	n := len(b)
	b = appendSeal(b, blockStart, sl)
	if inFile {
		b = b[n:]
	}
	if _, err := s.idx.Write(b); err != nil {
		// A short write leaves a torn line that no seal covers: the next
		// operation rebuilds.
		return fmt.Errorf("write index: %w", err)
	}
	s.step("seal")
	s.pending, s.lines, s.last, s.sealed, s.dirty = nil, lines, sl, true, false
	return nil
}

// vouch sets the directory's mtime to a value that no later change of the
// directory can produce, and that differs from the index's last seal, and
// returns it (true). A change of the directory stamps it with the current
// time, which does not go back: the value chosen is just below the mtime
// the last change gave it, so any later change (by this plugin, the
// reference plugin or an operator) moves the mtime away from the sealed
// value, on any timestamp granularity, even one coarser than the time
// between two changes. That is what lets the next operation trust the index
// on one fstat, without listing the directory. The directory is read after
// setting, so the value sealed is what the filesystem stored.
//
// When the filesystem refuses (not the directory's owner, no timestamps),
// vouch returns the observed mtime (false); the index then needs a getdents
// check before it is trusted.
func (s *store) vouch() (unix.Timespec, bool) {
	m, err := dirMtime(s.d)
	if err != nil {
		return m, false
	}
	want := addNsec(m, -1)
	got := m
	for range 2 {
		if setMtime(s.d, want) != nil {
			break
		}
		if got, err = dirMtime(s.d); err != nil {
			return got, false
		}
		if tsLess(got, m) && !(s.sealed && got == s.last.mtime) {
			return got, true
		}
		// Equal to the last seal (two changes within one tick of the
		// clock): one step further back.
		want = addNsec(got, -1)
	}
	got, _ = dirMtime(s.d)
	return got, false
}

// invalidate empties the index, so that the next operation rebuilds it
// from the files.
func (s *store) invalidate() error {
	if s.idx == nil {
		return nil
	}
	if err := s.idx.Truncate(0); err != nil {
		return fmt.Errorf("invalidate index: %w", err)
	}
	s.trusted = false
	return nil
}

func addNsec(t unix.Timespec, d int64) unix.Timespec {
	return unix.NsecToTimespec(unix.TimespecToNsec(t) + d)
}

func tsLess(a, b unix.Timespec) bool {
	return a.Sec < b.Sec || a.Sec == b.Sec && a.Nsec < b.Nsec
}
