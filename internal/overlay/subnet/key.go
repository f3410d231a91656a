package subnet

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParseKey parses a subnet key as flannel writes it below
// <prefix>/subnets/: "10.5.52.0-24", "10.5.52.0-24&fc00::-64", or (linen's
// IPv6-only form) "fc00::-64". The key must be canonical: addresses in
// their shortest form, lower-case, the prefix length without leading zeros
// and no host bits set, so that MakeKey gives back the same string.
func ParseKey(key string) (v4, v6 netip.Prefix, err error) {
	p4, p6, dual := strings.Cut(key, "&")
	if !dual && strings.Contains(p4, ":") {
		p4, p6 = "", p4
	}
	if p4 != "" || dual {
		if v4, err = parseKeyPart(p4, true); err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("subnet key %q: %w", key, err)
		}
	}
	if p6 != "" || dual {
		if v6, err = parseKeyPart(p6, false); err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("subnet key %q: %w", key, err)
		}
	}
	if !v4.IsValid() && !v6.IsValid() {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("subnet key %q: empty", key)
	}
	return v4, v6, nil
}

func parseKeyPart(s string, want4 bool) (netip.Prefix, error) {
	fam := "IPv6"
	if want4 {
		fam = "IPv4"
	}
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("%s part %q: want <address>-<length>", fam, s)
	}
	as, bs := s[:i], s[i+1:]
	a, err := netip.ParseAddr(as)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s part %q: %w", fam, s, err)
	}
	if want4 && !a.Is4() || !want4 && (!a.Is6() || a.Is4In6() || a.Zone() != "") {
		return netip.Prefix{}, fmt.Errorf("%s part %q: not an %s address", fam, s, fam)
	}
	if a.String() != as {
		return netip.Prefix{}, fmt.Errorf("%s part %q: address not in canonical form (%s)", fam, s, a)
	}
	if bs == "" || len(bs) > 3 || (len(bs) > 1 && bs[0] == '0') || strings.Trim(bs, "0123456789") != "" {
		return netip.Prefix{}, fmt.Errorf("%s part %q: bad prefix length %q", fam, s, bs)
	}
	bits, _ := strconv.Atoi(bs)
	if bits > a.BitLen() {
		return netip.Prefix{}, fmt.Errorf("%s part %q: prefix length %d out of range", fam, s, bits)
	}
	p := netip.PrefixFrom(a, bits)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%s part %q: host bits set (subnet is %s)", fam, s, p.Masked())
	}
	return p, nil
}
