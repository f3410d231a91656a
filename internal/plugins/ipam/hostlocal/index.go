package hostlocal

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// The index file (.linen-index) is text:
//
//	linen host-local index 1
//	mtime <sec> <nsec>
//	<ip> <inode> "<containerID>" "<ifname>"     one line per reservation
//	<ip> <inode> "<containerID>"                 legacy (ID-only) reservation
//	end <count> <crc32 of everything above, hex>
//
// Strings are Go-quoted, so a reservation file of any content round-trips.
// The first line holds spaces, so the file's content can never equal a
// container ID: the reference plugin, which reads every file of the
// directory when it looks for a container's reservations, never matches it.

const indexMagic = "linen host-local index 1"

// Owner is who holds a reservation: the attachment (container ID and
// interface name), or only a container ID for files written by old versions
// of the reference plugin.
type Owner struct {
	ID     string
	IfName string
	Legacy bool
}

// parseOwner reads a reservation file's content.
func parseOwner(b []byte) Owner {
	t := bytes.TrimSpace(b)
	if i := bytes.IndexByte(t, '\n'); i >= 0 {
		return Owner{
			ID:     string(bytes.TrimRight(t[:i], "\r")),
			IfName: string(bytes.TrimSpace(t[i+1:])),
		}
	}
	return Owner{ID: string(t), Legacy: true}
}

// content is what a reservation file for o holds.
func (o Owner) content() string {
	if o.Legacy {
		return o.ID
	}
	return o.ID + "\r\n" + o.IfName
}

// Matches reports whether the reservation belongs to the attachment
// (id, ifName); a legacy reservation matches on the ID alone.
func (o Owner) Matches(id, ifName string) bool {
	return o.ID == id && (o.Legacy || o.IfName == ifName)
}

func (o Owner) String() string {
	if o.Legacy {
		return fmt.Sprintf("container %q", o.ID)
	}
	return fmt.Sprintf("container %q interface %q", o.ID, o.IfName)
}

type lease struct {
	Owner
	ino uint64
}

var errBadIndex = errors.New("malformed index")

func encodeIndex(mtime unix.Timespec, leases map[netip.Addr]lease) []byte {
	addrs := make([]netip.Addr, 0, len(leases))
	for a := range leases {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	b := make([]byte, 0, 64+len(addrs)*64)
	b = append(b, indexMagic...)
	b = append(b, "\nmtime "...)
	b = strconv.AppendInt(b, mtime.Sec, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, mtime.Nsec, 10)
	b = append(b, '\n')
	for _, a := range addrs {
		l := leases[a]
		b = a.AppendTo(b)
		b = append(b, ' ')
		b = strconv.AppendUint(b, l.ino, 10)
		b = append(b, ' ')
		b = appendQuoted(b, l.ID)
		if !l.Legacy {
			b = append(b, ' ')
			b = appendQuoted(b, l.IfName)
		}
		b = append(b, '\n')
	}
	sum := crc32.ChecksumIEEE(b)
	b = append(b, "end "...)
	b = strconv.AppendInt(b, int64(len(addrs)), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(sum), 16)
	b = append(b, '\n')
	return b
}

// appendQuoted appends s Go-quoted; container IDs and interface names need
// no escapes, so the common case is a plain copy.
func appendQuoted(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return strconv.AppendQuote(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// decodeIndex parses an index; any deviation from the format (a torn write,
// a foreign file) is errBadIndex.
func decodeIndex(b []byte) (unix.Timespec, map[netip.Addr]lease, error) {
	var mt unix.Timespec
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return mt, nil, errBadIndex
	}
	// The trailer is the last line.
	end := bytes.LastIndexByte(b[:len(b)-1], '\n') + 1
	body, trailer := b[:end], b[end:len(b)-1]
	tf := bytes.Fields(trailer)
	if len(tf) != 3 || string(tf[0]) != "end" {
		return mt, nil, errBadIndex
	}
	count, err1 := strconv.Atoi(string(tf[1]))
	sum, err2 := strconv.ParseUint(string(tf[2]), 16, 32)
	if err1 != nil || err2 != nil || crc32.ChecksumIEEE(body) != uint32(sum) {
		return mt, nil, errBadIndex
	}
	line, rest, _ := bytes.Cut(body, []byte{'\n'})
	if string(line) != indexMagic {
		return mt, nil, errBadIndex
	}
	line, rest, _ = bytes.Cut(rest, []byte{'\n'})
	f := bytes.Fields(line)
	if len(f) != 3 || string(f[0]) != "mtime" {
		return mt, nil, errBadIndex
	}
	sec, err1 := strconv.ParseInt(string(f[1]), 10, 64)
	nsec, err2 := strconv.ParseInt(string(f[2]), 10, 64)
	if err1 != nil || err2 != nil {
		return mt, nil, errBadIndex
	}
	mt = unix.Timespec{Sec: sec, Nsec: nsec}
	leases := make(map[netip.Addr]lease, count)
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte{'\n'})
		a, l, err := decodeLine(line)
		if err != nil {
			return mt, nil, err
		}
		leases[a] = l
	}
	if len(leases) != count {
		return mt, nil, errBadIndex
	}
	return mt, leases, nil
}

func decodeLine(line []byte) (netip.Addr, lease, error) {
	var l lease
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return netip.Addr{}, l, errBadIndex
	}
	a, err := netip.ParseAddr(string(line[:sp]))
	if err != nil {
		return a, l, errBadIndex
	}
	line = line[sp+1:]
	sp = bytes.IndexByte(line, ' ')
	if sp < 0 {
		return a, l, errBadIndex
	}
	if l.ino, err = strconv.ParseUint(string(line[:sp]), 10, 64); err != nil {
		return a, l, errBadIndex
	}
	line = line[sp+1:]
	id, rest, err := unquote(line)
	if err != nil {
		return a, l, err
	}
	l.ID = id
	if len(rest) == 0 {
		l.Legacy = true
		return a, l, nil
	}
	if rest[0] != ' ' {
		return a, l, errBadIndex
	}
	ifn, rest, err := unquote(rest[1:])
	if err != nil || len(rest) != 0 {
		return a, l, errBadIndex
	}
	l.IfName = ifn
	return a, l, nil
}

// unquote reads one Go-quoted string at the start of b.
func unquote(b []byte) (string, []byte, error) {
	// Fast path: no escapes.
	if len(b) >= 2 && b[0] == '"' {
		if i := bytes.IndexByte(b[1:], '"'); i >= 0 && bytes.IndexByte(b[1:1+i], '\\') < 0 {
			return string(b[1 : 1+i]), b[2+i:], nil
		}
	}
	q, err := strconv.QuotedPrefix(string(b))
	if err != nil {
		return "", nil, errBadIndex
	}
	s, err := strconv.Unquote(q)
	if err != nil {
		return "", nil, errBadIndex
	}
	return s, b[len(q):], nil
}
