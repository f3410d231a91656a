package subnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
)

// DefaultBackendType is the backend used when net-conf.json names none.
// flannel's code falls back to "udp" there, but its documentation says
// vxlan and every manifest it ships sets {"Type":"vxlan"}; linen follows
// the documentation.
const DefaultBackendType = "vxlan"

// ConfigError lists every problem ParseConfig found, each prefixed with the
// key it is about ("SubnetLen: ...").
type ConfigError struct {
	Problems []string
}

func (e *ConfigError) Error() string {
	return "network configuration: " + strings.Join(e.Problems, "; ")
}

// wireConfig holds the raw value of each key; encoding/json matches the
// keys case-insensitively, as it does for flannel.
type wireConfig struct {
	Network, SubnetLen, SubnetMin, SubnetMax                 json.RawMessage
	EnableIPv4, EnableIPv6, EnableNFTables                   json.RawMessage
	IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax json.RawMessage
	Backend                                                  json.RawMessage
}

// ParseConfig parses and validates net-conf.json (flannel's keys, defaults
// and checks) and reports every problem at once in a *ConfigError (a JSON
// syntax error alone is returned as is).
//
// Defaults: EnableIPv4 true; SubnetLen 24 when the Network prefix is /22
// or shorter, else prefix+2 (the Network may be at most a /28 then);
// SubnetMin the Network address plus one subnet (the first subnet is never
// leased); SubnetMax the last subnet. IPv6 alike with 64, /62 and /124.
// Checks: SubnetLen at most 30 (IPv6: 126) and at least prefix+2;
// SubnetMin and SubnetMax inside the Network, aligned to SubnetLen, in
// order.
func ParseConfig(b []byte) (*Config, error) {
	var w wireConfig
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("network configuration: %w", err)
	}
	var probs []string
	bad := func(key, format string, args ...any) {
		probs = append(probs, key+": "+fmt.Sprintf(format, args...))
	}
	c := &Config{EnableIPv4: true}
	decodeBool(w.EnableIPv4, "EnableIPv4", &c.EnableIPv4, bad)
	decodeBool(w.EnableIPv6, "EnableIPv6", &c.EnableIPv6, bad)
	decodeBool(w.EnableNFTables, "EnableNFTables", &c.EnableNFTables, bad)
	if !c.EnableIPv4 && !c.EnableIPv6 {
		bad("EnableIPv4", "false and EnableIPv6 false: no address family left")
	}
	if c.EnableIPv4 {
		f := family{name: "", bits: 32, maxLen: 30, defLen: 24, defMaxPrefix: 22, minPrefix: 28}
		c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax = f.parse(w.Network, w.SubnetLen, w.SubnetMin, w.SubnetMax, bad)
	}
	if c.EnableIPv6 {
		f := family{name: "IPv6", bits: 128, maxLen: 126, defLen: 64, defMaxPrefix: 62, minPrefix: 124}
		c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax = f.parse(w.IPv6Network, w.IPv6SubnetLen, w.IPv6SubnetMin, w.IPv6SubnetMax, bad)
	}
	c.BackendType, c.Backend = parseBackend(w.Backend, bad)
	if len(probs) > 0 {
		return nil, &ConfigError{Problems: probs}
	}
	return c, nil
}

func isNull(r json.RawMessage) bool {
	return len(r) == 0 || string(r) == "null"
}

func decodeBool(r json.RawMessage, key string, dst *bool, bad func(string, string, ...any)) {
	if isNull(r) {
		return
	}
	if err := json.Unmarshal(r, dst); err != nil {
		bad(key, "want true or false, got %s", r)
	}
}

// family describes one address family's keys and limits.
type family struct {
	name         string // "" or "IPv6": key prefix
	bits         int    // address length
	maxLen       int    // longest subnet length
	defLen       int    // default subnet length ...
	defMaxPrefix int    // ... when the network prefix is at most this long
	minPrefix    int    // longest network prefix when the subnet length is defaulted
}

func (f family) is(a netip.Addr) bool {
	if f.bits == 32 {
		return a.Is4()
	}
	return a.Is6() && !a.Is4In6() && a.Zone() == ""
}

func (f family) parse(rNet, rLen, rMin, rMax json.RawMessage, bad func(string, string, ...any)) (network netip.Prefix, sublen int, smin, smax netip.Addr) {
	kNet, kLen, kMin, kMax := f.name+"Network", f.name+"SubnetLen", f.name+"SubnetMin", f.name+"SubnetMax"
	fam := "IPv4"
	if f.bits == 128 {
		fam = "IPv6"
	}
	netOK := false
	if isNull(rNet) {
		bad(kNet, "missing (required when Enable%s is true)", fam)
	} else {
		var s string
		if err := json.Unmarshal(rNet, &s); err != nil {
			bad(kNet, "want a CIDR string, got %s", rNet)
		} else if p, err := netip.ParsePrefix(s); err != nil || !f.is(p.Addr()) {
			bad(kNet, "%q is not an %s CIDR", s, fam)
		} else {
			network, netOK = p.Masked(), true
		}
	}
	lenOK := true
	if !isNull(rLen) {
		if err := json.Unmarshal(rLen, &sublen); err != nil || sublen < 0 {
			bad(kLen, "want a prefix length, got %s", rLen)
			lenOK, sublen = false, 0
		}
	}
	addr := func(r json.RawMessage, key string) (netip.Addr, bool) {
		if isNull(r) {
			return netip.Addr{}, true
		}
		var s string
		if err := json.Unmarshal(r, &s); err != nil {
			bad(key, "want an %s address string, got %s", fam, r)
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(s)
		if err != nil || !f.is(a) {
			bad(key, "%q is not an %s address", s, fam)
			return netip.Addr{}, false
		}
		if a.IsUnspecified() { // flannel treats the zero address as unset
			return netip.Addr{}, true
		}
		return a, true
	}
	smin, minOK := addr(rMin, kMin)
	smax, maxOK := addr(rMax, kMax)
	if !netOK || !lenOK {
		return network, sublen, smin, smax
	}
	pl := network.Bits()
	if sublen > 0 {
		if sublen > f.maxLen {
			bad(kLen, "%d is longer than /%d", sublen, f.maxLen)
			lenOK = false
		} else if sublen < pl+2 {
			bad(kLen, "/%d leaves %s %s room for fewer than four subnets (want at least /%d)", sublen, kNet, network, pl+2)
			lenOK = false
		}
	} else {
		switch {
		case pl > f.minPrefix:
			bad(kNet, "%s is too small: the longest usable prefix is /%d", network, f.minPrefix)
			lenOK = false
		case pl <= f.defMaxPrefix:
			sublen = f.defLen
		default:
			sublen = pl + 2
		}
	}
	if !lenOK {
		return network, sublen, smin, smax
	}
	size := u128One().shl(uint(f.bits - sublen))
	first := u128From(network.Addr())
	last := first.add(u128One().shl(uint(f.bits - pl))).sub(size) // last subnet
	check := func(a netip.Addr, ok *bool, key string, def u128) netip.Addr {
		if !*ok {
			return a
		}
		if !a.IsValid() {
			return def.addr(f.bits)
		}
		if !network.Contains(a) {
			bad(key, "%s is outside %s %s", a, kNet, network)
			*ok = false
		} else if netip.PrefixFrom(a, sublen).Masked().Addr() != a {
			bad(key, "%s is not on a /%d boundary", a, sublen)
			*ok = false
		}
		return a
	}
	smin = check(smin, &minOK, kMin, first.add(size))
	smax = check(smax, &maxOK, kMax, last)
	if minOK && maxOK && smin.Compare(smax) > 0 {
		bad(kMin, "%s is above %s %s", smin, kMax, smax)
	}
	return network, sublen, smin, smax
}

func parseBackend(r json.RawMessage, bad func(string, string, ...any)) (string, json.RawMessage) {
	if isNull(r) {
		return DefaultBackendType, json.RawMessage(`{}`)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(r, &obj); err != nil {
		bad("Backend", "want an object, got %s", r)
		return "", nil
	}
	var t struct{ Type json.RawMessage }
	_ = json.Unmarshal(r, &t) // an object: cannot fail
	typ := DefaultBackendType
	if !isNull(t.Type) {
		var s string
		if err := json.Unmarshal(t.Type, &s); err != nil {
			bad("Backend.Type", "want a string, got %s", t.Type)
		} else if s != "" {
			typ = strings.ToLower(s)
		}
	}
	var buf bytes.Buffer
	_ = json.Compact(&buf, r)
	return typ, buf.Bytes()
}
