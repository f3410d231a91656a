package hostlocal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// scanDir lists the reservation files of the open directory d: every entry
// named by a canonical IP address, with its inode number. It reads names
// and inode numbers straight from getdents64, so it costs no stat or read
// per file. Other entries (lock, last_reserved_ip.*, the index, strays) are
// ignored.
func scanDir(d *os.File, buf []byte) (map[netip.Addr]uint64, error) {
	fd := int(d.Fd())
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return nil, fmt.Errorf("rewind %s: %w", d.Name(), err)
	}
	out := make(map[netip.Addr]uint64)
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read directory %s: %w", d.Name(), err)
		}
		if n <= 0 {
			return out, nil
		}
		parseDirents(buf[:n], out)
	}
}

// parseDirents decodes linux_dirent64 records:
//
//	u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[] (NUL-terminated)
func parseDirents(b []byte, out map[netip.Addr]uint64) {
	for len(b) >= 19 {
		ino := binary.NativeEndian.Uint64(b[0:8])
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		typ := b[18]
		if reclen < 19 || reclen > len(b) {
			return
		}
		name := b[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		b = b[reclen:]
		if ino == 0 || typ == unix.DT_DIR || len(name) == 0 {
			continue
		}
		if a, ok := reservationName(name); ok {
			out[a] = ino
		}
	}
}

// reservationName parses a file name as the reference plugin writes them:
// the address's canonical text (net.IP.String), no zone.
func reservationName(name []byte) (netip.Addr, bool) {
	c := name[0]
	if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == ':') {
		return netip.Addr{}, false // fast path for lock, last_reserved_ip.*, dotfiles
	}
	a, err := netip.ParseAddr(string(name))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	if a.Is6() && a.String() != string(name) {
		return netip.Addr{}, false
	}
	return a, true
}

// dirMtime is the directory's modification time.
func dirMtime(d *os.File) (unix.Timespec, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return unix.Timespec{}, fmt.Errorf("stat %s: %w", d.Name(), err)
	}
	return st.Mtim, nil
}

// inode is the inode number of an open file.
func inode(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// setMtime sets the modification time of the open directory d, leaving its
// access time alone: utimensat(fd, NULL, ...), which is what futimens(3)
// does, and works on a descriptor opened read-only.
func setMtime(d *os.File, t unix.Timespec) error {
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, t}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, d.Fd(), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("set mtime of %s: %w", d.Name(), errno)
	}
	return nil
}

// errNoTmpfile means the filesystem (or the kernel) cannot create unnamed
// files and link them: reservation files are then created by name.
var errNoTmpfile = errors.New("O_TMPFILE not supported")

// writeTmpfile creates an unnamed file in the directory d holding content,
// with mode 0600, and returns it with its inode number. Creating it does not
// change the directory.
func writeTmpfile(d *os.File, content string) (*os.File, uint64, error) {
	fd, err := unix.Openat(int(d.Fd()), ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	switch {
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EISDIR), errors.Is(err, unix.EINVAL):
		return nil, 0, errNoTmpfile
	case err != nil:
		return nil, 0, err
	}
	f := os.NewFile(uintptr(fd), d.Name()+"/(unnamed)")
	_, werr := f.WriteString(content)
	ino, serr := inode(f)
	if err := errors.Join(werr, serr); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, ino, nil
}

// linkTmpfile gives the unnamed file f the name in directory d; an existing
// name is os.ErrExist, and nothing changes then. Linking by descriptor
// (AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; without it the file is linked
// through /proc/self/fd. errNoTmpfile means neither works.
func linkTmpfile(f, d *os.File, name string) error {
	err := unix.Linkat(int(f.Fd()), "", int(d.Fd()), name, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), int(d.Fd()), name, unix.AT_SYMLINK_FOLLOW)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
			return errNoTmpfile
		}
	}
	if errors.Is(err, unix.EEXIST) {
		return os.ErrExist
	}
	return err
}
