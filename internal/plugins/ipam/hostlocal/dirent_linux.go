package hostlocal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

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
