package dhcp4

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Route is a route a server hands out. Router is 0.0.0.0 for a destination
// reached directly on the link (RFC 3442).
type Route struct {
	Dst    netip.Prefix
	Router netip.Addr
}

// ParseClasslessRoutes decodes option 121 (RFC 3442): a sequence of
// (prefix length, significant destination octets, router) entries.
func ParseClasslessRoutes(b []byte) ([]Route, error) {
	var out []Route
	for i := 0; i < len(b); {
		bits := int(b[i])
		i++
		if bits > 32 {
			return nil, fmt.Errorf("classless static route %d: prefix length %d exceeds 32", len(out), bits)
		}
		n := (bits + 7) / 8
		if i+n+4 > len(b) {
			return nil, fmt.Errorf("classless static route %d: truncated", len(out))
		}
		var dst [4]byte
		copy(dst[:], b[i:i+n])
		i += n
		router := addr4(b[i : i+4])
		i += 4
		p := netip.PrefixFrom(netip.AddrFrom4(dst), bits)
		if p.Masked() != p {
			return nil, fmt.Errorf("classless static route %d: %s has bits set past its prefix length", len(out), p)
		}
		out = append(out, Route{Dst: p, Router: router})
	}
	return out, nil
}

// EncodeClasslessRoutes is the inverse of ParseClasslessRoutes.
func EncodeClasslessRoutes(rs []Route) []byte {
	var b []byte
	for _, r := range rs {
		n := (r.Dst.Bits() + 7) / 8
		d := r.Dst.Masked().Addr().As4()
		g := r.Router.As4()
		b = append(b, byte(r.Dst.Bits()))
		b = append(b, d[:n]...)
		b = append(b, g[:]...)
	}
	return b
}

// ParseStaticRoutes decodes option 33: (destination, router) pairs of
// classful host or network routes. A default destination (0.0.0.0) is
// illegal in this option and is rejected.
func ParseStaticRoutes(b []byte) ([]Route, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("static routes: length %d is not a multiple of 8", len(b))
	}
	var out []Route
	for i := 0; i < len(b); i += 8 {
		dst, router := addr4(b[i:]), addr4(b[i+4:])
		if dst.IsUnspecified() {
			return nil, errors.New("static routes: 0.0.0.0 is not a valid destination (RFC 2132 5.8)")
		}
		out = append(out, Route{Dst: netip.PrefixFrom(dst, ClassBits(dst)).Masked(), Router: router})
	}
	return out, nil
}

// ClassBits is the prefix length of an address's class (A /8, B /16, C /24,
// else /32), used when a server gives no subnet mask.
func ClassBits(a netip.Addr) int {
	b := a.As4()[0]
	switch {
	case b < 128:
		return 8
	case b < 192:
		return 16
	case b < 224:
		return 24
	}
	return 32
}

// MaskBits converts a subnet mask option to a prefix length; a mask whose
// ones are not contiguous is an error.
func MaskBits(b []byte) (int, error) {
	if len(b) != 4 {
		return 0, fmt.Errorf("subnet mask: length %d, want 4", len(b))
	}
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n := 0
	for n < 32 && v&(1<<(31-n)) != 0 {
		n++
	}
	if n < 32 && v<<n != 0 {
		return 0, fmt.Errorf("subnet mask %d.%d.%d.%d is not contiguous", b[0], b[1], b[2], b[3])
	}
	return n, nil
}

// ParseDomainSearch decodes option 119 (RFC 3397): DNS names in wire
// format, with compression pointers that may only point backwards into the
// option. It returns the names without the trailing dot.
func ParseDomainSearch(b []byte) ([]string, error) {
	var out []string
	for i := 0; i < len(b); {
		name, next, err := readName(b, i)
		if err != nil {
			return nil, fmt.Errorf("domain search %d: %w", len(out), err)
		}
		if name != "" {
			out = append(out, name)
		}
		i = next
	}
	return out, nil
}

// readName reads one name at off; next is the offset after it in the
// uncompressed stream.
func readName(b []byte, off int) (string, int, error) {
	var labels []string
	next := -1
	total := 0
	for jumps := 0; ; {
		if off >= len(b) {
			return "", 0, errors.New("truncated name")
		}
		l := int(b[off])
		switch {
		case l == 0:
			if next < 0 {
				next = off + 1
			}
			return strings.Join(labels, "."), next, nil
		case l&0xc0 == 0xc0:
			if off+1 >= len(b) {
				return "", 0, errors.New("truncated compression pointer")
			}
			ptr := (l&0x3f)<<8 | int(b[off+1])
			if ptr >= off {
				return "", 0, errors.New("compression pointer does not point backwards")
			}
			if next < 0 {
				next = off + 2
			}
			if jumps++; jumps > 128 {
				return "", 0, errors.New("too many compression pointers")
			}
			off = ptr
		case l&0xc0 != 0:
			return "", 0, fmt.Errorf("label type 0x%x is not supported", l&0xc0)
		default:
			if off+1+l > len(b) {
				return "", 0, errors.New("truncated label")
			}
			total += l + 1
			if total > 255 {
				return "", 0, errors.New("name longer than 255 octets")
			}
			labels = append(labels, string(b[off+1:off+1+l]))
			off += 1 + l
		}
	}
}

// EncodeDomainSearch renders names without compression.
func EncodeDomainSearch(names []string) ([]byte, error) {
	var b []byte
	for _, n := range names {
		for _, l := range strings.Split(strings.TrimSuffix(n, "."), ".") {
			if l == "" || len(l) > 63 {
				return nil, fmt.Errorf("domain %q has an empty or too long label", n)
			}
			b = append(b, byte(len(l)))
			b = append(b, l...)
		}
		b = append(b, 0)
	}
	return b, nil
}
