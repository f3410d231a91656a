package hostlocal

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// The index file (.linen-index) is an append-only journal of text lines:
//
//	linen host-local index 3
//	+ <ip> <inode> "<containerID>" "<ifname>"             reserved
//	+ <ip> <inode> "<containerID>"                         reserved (legacy ID-only file)
//	- <ip>                                                 released
//	= <sec>.<nsec> <live> <lines> <size> <fnv1a32>         seal, directory mtime vouched
//	~ <sec>.<nsec> <live> <lines> <size> <fnv1a32>         seal, directory mtime only observed
//
// An operation appends its entries and one seal in a single write. A seal
// records the directory's modification time after the operation, the number
// of live reservations, the number of lines after the header (the seal
// included), the byte size of the block of entries since the previous seal
// (or the header), and a 32-bit FNV-1a hash of that block followed by the
// seal line up to the hash. (FNV needs no tables: a CRC-32C table would cost
// every start of linen-cni ~0.14 ms of initialisation.) A "+" line only
// names an address that is not reserved at that point, a "-" line only one
// that is; the last line about an address decides.
//
// Strings are Go-quoted, so a reservation file of any content round-trips.
// The first line holds spaces, so the file's content can never equal a
// container ID: the reference plugin, which reads every file of the
// directory when it looks for a container's reservations, never matches it.

const indexMagic = "linen host-local index 3"

var header = []byte(indexMagic + "\n")

// blockSum is the 32-bit FNV-1a hash of b.
func blockSum(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

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

// lease is one reservation: its owner and the inode of its file.
type lease struct {
	Owner
	ino uint64
}

// seal is the state an index vouches for at its end.
type seal struct {
	// vouched: the directory's mtime was set by the writer to a value that
	// no later change of the directory can produce (see store.vouch).
	vouched bool
	mtime   unix.Timespec
	live    int // live reservations
	lines   int // lines after the header, this seal included
}

var errBadIndex = errors.New("malformed index")

// appendReserve appends the line recording a's reservation.
func appendReserve(b []byte, a netip.Addr, l lease) []byte {
	b = append(b, '+', ' ')
	b = a.AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, l.ino, 10)
	b = appendOwner(b, l.Owner)
	return append(b, '\n')
}

// appendOwner appends the owner fields of a "+" line, each preceded by a
// space. A line ends with exactly these bytes, which is what scanOwned looks
// for.
func appendOwner(b []byte, o Owner) []byte {
	b = append(b, ' ')
	b = appendQuoted(b, o.ID)
	if !o.Legacy {
		b = append(b, ' ')
		b = appendQuoted(b, o.IfName)
	}
	return b
}

// appendRelease appends the line recording a's release.
func appendRelease(b []byte, a netip.Addr) []byte {
	b = append(b, '-', ' ')
	b = a.AppendTo(b)
	return append(b, '\n')
}

// appendSeal appends the seal of the block b[blockStart:].
func appendSeal(b []byte, blockStart int, s seal) []byte {
	size := len(b) - blockStart
	if s.vouched {
		b = append(b, '=', ' ')
	} else {
		b = append(b, '~', ' ')
	}
	b = strconv.AppendInt(b, s.mtime.Sec, 10)
	b = append(b, '.')
	b = appendNsec(b, s.mtime.Nsec)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(s.live), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(s.lines), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(size), 10)
	b = append(b, ' ')
	sum := blockSum(b[blockStart:])
	b = appendHex32(b, sum)
	return append(b, '\n')
}

// appendNsec appends n (0 <= n < 1e9) as exactly nine digits.
func appendNsec(b []byte, n int64) []byte {
	var d [9]byte
	for i := 8; i >= 0; i-- {
		d[i] = byte('0' + n%10)
		n /= 10
	}
	return append(b, d[:]...)
}

func appendHex32(b []byte, v uint32) []byte {
	const digits = "0123456789abcdef"
	for i := 28; i >= 0; i -= 4 {
		b = append(b, digits[v>>uint(i)&0xf])
	}
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

// encodeLeases is the body of a compacted index: the header and one "+"
// line per lease, in address order. A seal (appendSeal from len(header))
// completes it.
func encodeLeases(leases map[netip.Addr]lease) []byte {
	addrs := make([]netip.Addr, 0, len(leases))
	for a := range leases {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	b := make([]byte, 0, len(header)+len(addrs)*100+80)
	b = append(b, header...)
	for _, a := range addrs {
		b = appendReserve(b, a, leases[a])
	}
	return b
}

// lastSeal checks the end of an index: the header, a final seal, and the
// checksum of the block it seals. It reads only that block, so its cost does
// not grow with the index. The rest of the file is trusted without a check:
// it was sealed by earlier operations (parseIndex checks everything).
func lastSeal(b []byte) (seal, bool) {
	if !bytes.HasPrefix(b, header) || len(b) == len(header) || b[len(b)-1] != '\n' {
		return seal{}, false
	}
	start := bytes.LastIndexByte(b[:len(b)-1], '\n') + 1
	s, block, ok := checkSeal(b, start)
	return s, ok && block >= len(header)
}

// checkSeal decodes the seal line starting at b[start:] and checks the
// checksum of the block it covers, which starts at the returned offset.
func checkSeal(b []byte, start int) (seal, int, bool) {
	end := start + bytes.IndexByte(b[start:], '\n')
	if end < start {
		return seal{}, 0, false
	}
	s, size, sum, ok := decodeSeal(b[start:end])
	if !ok || size > start {
		return seal{}, 0, false
	}
	block := start - size
	if block > 0 && b[block-1] != '\n' {
		return seal{}, 0, false
	}
	sumEnd := bytes.LastIndexByte(b[start:end], ' ') + start + 1
	if blockSum(b[block:sumEnd]) != sum {
		return seal{}, 0, false
	}
	return s, block, true
}

// decodeSeal parses a seal line (without its newline).
func decodeSeal(line []byte) (s seal, size int, sum uint32, ok bool) {
	if len(line) < 2 || line[1] != ' ' {
		return s, 0, 0, false
	}
	switch line[0] {
	case '=':
		s.vouched = true
	case '~':
	default:
		return s, 0, 0, false
	}
	f := bytes.Split(line[2:], []byte{' '})
	if len(f) != 5 {
		return s, 0, 0, false
	}
	secText, nsecText, dot := bytes.Cut(f[0], []byte{'.'})
	sec, err1 := strconv.ParseInt(string(secText), 10, 64)
	nsec, err2 := strconv.ParseUint(string(nsecText), 10, 32)
	live, err3 := atoi(f[1])
	lines, err4 := atoi(f[2])
	size, err5 := atoi(f[3])
	h, err6 := strconv.ParseUint(string(f[4]), 16, 32)
	if !dot || len(nsecText) != 9 || nsec >= 1e9 || len(f[4]) != 8 ||
		errors.Join(err1, err2, err3, err4, err5, err6) != nil || live >= lines {
		return s, 0, 0, false
	}
	s.mtime = unix.Timespec{Sec: sec, Nsec: int64(nsec)}
	s.live, s.lines = live, lines
	return s, size, uint32(h), true
}

// atoi parses a non-negative decimal without sign or leading zeros.
func atoi(b []byte) (int, error) {
	if len(b) == 0 || len(b) > 1 && b[0] == '0' || len(b) > 18 {
		return 0, errBadIndex
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errBadIndex
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// parseIndex decodes a whole index and checks every line, every seal's
// checksum and counts, and that it ends with a seal. It returns the live
// reservations and the last seal.
func parseIndex(b []byte) (map[netip.Addr]lease, seal, error) {
	var last seal
	if !bytes.HasPrefix(b, header) || b[len(b)-1] != '\n' {
		return nil, last, errBadIndex
	}
	leases := make(map[netip.Addr]lease)
	block, lines, sealed := len(header), 0, false
	for pos := len(header); pos < len(b); {
		end := pos + bytes.IndexByte(b[pos:], '\n')
		line := b[pos:end]
		lines++
		sealed = false
		switch {
		case len(line) > 2 && line[0] == '+' && line[1] == ' ':
			a, l, err := decodeReserve(line)
			if err != nil {
				return nil, last, err
			}
			if _, dup := leases[a]; dup {
				return nil, last, errBadIndex
			}
			leases[a] = l
		case len(line) > 2 && line[0] == '-' && line[1] == ' ':
			a, err := parseAddr(line[2:])
			if err != nil {
				return nil, last, err
			}
			if _, ok := leases[a]; !ok {
				return nil, last, errBadIndex
			}
			delete(leases, a)
		default:
			s, start, ok := checkSeal(b, pos)
			if !ok || start != block || s.live != len(leases) || s.lines != lines {
				return nil, last, errBadIndex
			}
			last, sealed, block = s, true, end+1
		}
		pos = end + 1
	}
	if !sealed {
		return nil, last, errBadIndex
	}
	return leases, last, nil
}

// decodeReserve parses a "+" line (without its newline).
func decodeReserve(line []byte) (netip.Addr, lease, error) {
	var l lease
	line = line[2:]
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return netip.Addr{}, l, errBadIndex
	}
	a, err := parseAddr(line[:sp])
	if err != nil {
		return a, l, err
	}
	line = line[sp+1:]
	sp = bytes.IndexByte(line, ' ')
	if sp < 0 {
		return a, l, errBadIndex
	}
	if l.ino, err = strconv.ParseUint(string(line[:sp]), 10, 64); err != nil {
		return a, l, errBadIndex
	}
	id, rest, err := unquote(line[sp+1:])
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

// parseAddr parses an address in the canonical form AppendTo writes.
func parseAddr(b []byte) (netip.Addr, error) {
	a, err := netip.ParseAddr(string(b))
	var buf [64]byte
	if err != nil || a.Zone() != "" || !bytes.Equal(a.AppendTo(buf[:0]), b) {
		return netip.Addr{}, errBadIndex
	}
	return a, nil
}

// unquote reads one Go-quoted string at the start of b, which must be
// quoted exactly as appendQuoted does it (scanOwned compares encodings).
func unquote(b []byte) (string, []byte, error) {
	var s string
	var n int
	if i := bytes.IndexByte(b[min(1, len(b)):], '"'); len(b) >= 2 && b[0] == '"' && i >= 0 && bytes.IndexByte(b[1:1+i], '\\') < 0 {
		// Fast path: no escapes.
		s, n = string(b[1:1+i]), i+2
	} else {
		q, err := strconv.QuotedPrefix(string(b))
		if err != nil {
			return "", nil, errBadIndex
		}
		if s, err = strconv.Unquote(q); err != nil {
			return "", nil, errBadIndex
		}
		n = len(q)
	}
	var buf [128]byte
	if !bytes.Equal(appendQuoted(buf[:0], s), b[:n]) {
		return "", nil, errBadIndex
	}
	return s, b[n:], nil
}

// scanOwned returns the addresses whose live reservation in the index b
// belongs to (id, ifName), in file order; with legacy, ID-only reservations
// of id count too. It decodes nothing but the addresses it returns: it
// compares the end of every "+" line with the owner's encoding and, once
// there is a match, the address of every later line with the matches (a
// later line about a matched address ends that reservation). b must have
// passed lastSeal.
//
// Comparing encodings is exact: inside a Go-quoted string every '"' is
// escaped, so ` "` only starts a field, and a line that ends with
// ` "<id>" "<ifname>"` holds exactly that owner. A line ending with
// ` "<id>"` is a legacy reservation of id when the byte before is not the
// closing quote of an ID field (the interface name of a non-legacy line
// can look like an ID).
func scanOwned(b []byte, id, ifName string, legacy bool) ([]netip.Addr, error) {
	full := appendOwner(nil, Owner{ID: id, IfName: ifName})
	var old []byte
	if legacy {
		old = appendOwner(nil, Owner{ID: id, Legacy: true})
	}
	var hits [][]byte // the matched addresses as written
	for pos := len(header); pos < len(b); {
		end := pos + bytes.IndexByte(b[pos:], '\n')
		if end < pos {
			return nil, errBadIndex
		}
		line := b[pos:end]
		pos = end + 1
		if len(line) < 3 || line[1] != ' ' || line[0] != '+' && line[0] != '-' {
			continue
		}
		// A later line about a matched address ends its reservation.
		for i := 0; i < len(hits); i++ {
			if h := hits[i]; len(line) >= 2+len(h) && bytes.Equal(line[2:2+len(h)], h) &&
				(len(line) == 2+len(h) || line[2+len(h)] == ' ') {
				hits = slices.Delete(hits, i, i+1)
				i--
			}
		}
		if line[0] != '+' {
			continue
		}
		n := len(line)
		if n > len(full) && line[n-len(full)+2] == full[2] && bytes.Equal(line[n-len(full):], full) ||
			old != nil && n > len(old) && line[n-len(old)+2] == old[2] && bytes.Equal(line[n-len(old):], old) &&
				line[n-len(old)-1] != '"' {
			if sp := bytes.IndexByte(line[2:], ' '); sp > 0 {
				hits = append(hits, line[2:2+sp])
			}
		}
	}
	out := make([]netip.Addr, len(hits))
	for i, h := range hits {
		a, err := parseAddr(h)
		if err != nil {
			return nil, err
		}
		out[i] = a
	}
	return out, nil
}

// liveIn reports, for each of addrs, whether the index b holds a live
// reservation of it. b must have passed lastSeal.
func liveIn(b []byte, addrs []netip.Addr) []bool {
	texts := make([][]byte, len(addrs))
	for i, a := range addrs {
		texts[i] = a.AppendTo(nil)
	}
	live := make([]bool, len(addrs))
	for pos := len(header); pos < len(b); {
		end := pos + bytes.IndexByte(b[pos:], '\n')
		if end < pos {
			break
		}
		line := b[pos:end]
		pos = end + 1
		if len(line) < 3 || line[1] != ' ' || line[0] != '+' && line[0] != '-' {
			continue
		}
		text := line[2:]
		if i := bytes.IndexByte(text, ' '); i >= 0 {
			text = text[:i]
		}
		for i := range texts {
			if bytes.Equal(texts[i], text) {
				live[i] = line[0] == '+'
			}
		}
	}
	return live
}
