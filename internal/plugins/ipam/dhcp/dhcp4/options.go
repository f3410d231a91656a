package dhcp4

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Option codes used by name in this package.
const (
	OptPad             uint8 = 0
	OptSubnetMask      uint8 = 1
	OptRouter          uint8 = 3
	OptDNS             uint8 = 6
	OptHostName        uint8 = 12
	OptDomainName      uint8 = 15
	OptInterfaceMTU    uint8 = 26
	OptBroadcastAddr   uint8 = 28
	OptStaticRoutes    uint8 = 33
	OptRequestedIP     uint8 = 50
	OptLeaseTime       uint8 = 51
	OptOverload        uint8 = 52
	OptMessageType     uint8 = 53
	OptServerID        uint8 = 54
	OptParamRequest    uint8 = 55
	OptMessage         uint8 = 56
	OptMaxMessageSize  uint8 = 57
	OptRenewalTime     uint8 = 58
	OptRebindingTime   uint8 = 59
	OptVendorClass     uint8 = 60
	OptClientID        uint8 = 61
	OptDomainSearch    uint8 = 119
	OptClasslessRoutes uint8 = 121
	OptEnd             uint8 = 255
)

// Option is one option: its code and (complete, concatenated) data.
type Option struct {
	Code uint8
	Data []byte
}

// Options keeps options in the order they were added or received.
type Options []Option

// Get returns the data of code, nil when absent.
func (o Options) Get(code uint8) []byte {
	for _, x := range o {
		if x.Code == code {
			return x.Data
		}
	}
	return nil
}

// Has reports whether code is present.
func (o Options) Has(code uint8) bool {
	for _, x := range o {
		if x.Code == code {
			return true
		}
	}
	return false
}

// Set replaces or appends code.
func (o *Options) Set(code uint8, data []byte) {
	for i := range *o {
		if (*o)[i].Code == code {
			(*o)[i].Data = data
			return
		}
	}
	*o = append(*o, Option{Code: code, Data: data})
}

// Addr reads a single IPv4 address option.
func (o Options) Addr(code uint8) (netip.Addr, bool) {
	v := o.Get(code)
	if len(v) != 4 {
		return netip.Addr{}, false
	}
	return addr4(v), true
}

// Addrs reads a list of IPv4 addresses; a length that is not a multiple of
// four is malformed (ok false).
func (o Options) Addrs(code uint8) ([]netip.Addr, bool) {
	v := o.Get(code)
	if len(v) == 0 || len(v)%4 != 0 {
		return nil, false
	}
	out := make([]netip.Addr, 0, len(v)/4)
	for i := 0; i < len(v); i += 4 {
		out = append(out, addr4(v[i:]))
	}
	return out, true
}

// Duration reads a 32-bit seconds value (lease, T1, T2).
func (o Options) Duration(code uint8) (time.Duration, bool) {
	v := o.Get(code)
	if len(v) != 4 {
		return 0, false
	}
	s := binary.BigEndian.Uint32(v)
	if s == 0xffffffff {
		return Infinite, true
	}
	return time.Duration(s) * time.Second, true
}

// Infinite is the lease time 0xffffffff.
const Infinite = time.Duration(1<<63 - 1)

// Kind is the value format of an option, used to encode values given as
// text in a configuration.
type Kind uint8

// Value kinds.
const (
	KindBytes Kind = iota // text as is, or hex written 0x0102... / 01:02:...
	KindString
	KindAddr
	KindAddrs
	KindUint8
	KindUint16
	KindUint32
	KindBool
)

func (k Kind) String() string {
	return [...]string{"bytes", "text", "an IPv4 address", "a comma-separated list of IPv4 addresses", "an integer 0..255", "an integer 0..65535", "an integer 0..4294967295", "true or false"}[k]
}

// Def describes an option linen knows by name.
type Def struct {
	Code uint8
	Name string
	Kind Kind
}

// defs are the options known by name: the names of dhcp-options(5), plus a
// few aliases. The plugin accepts any other code by number.
var defs = []Def{
	{1, "subnet-mask", KindAddr},
	{2, "time-offset", KindUint32},
	{3, "routers", KindAddrs},
	{4, "time-servers", KindAddrs},
	{6, "domain-name-servers", KindAddrs},
	{7, "log-servers", KindAddrs},
	{12, "host-name", KindString},
	{13, "boot-size", KindUint16},
	{15, "domain-name", KindString},
	{17, "root-path", KindString},
	{19, "ip-forwarding", KindBool},
	{23, "default-ip-ttl", KindUint8},
	{26, "interface-mtu", KindUint16},
	{28, "broadcast-address", KindAddr},
	{33, "static-routes", KindAddrs},
	{40, "nis-domain", KindString},
	{41, "nis-servers", KindAddrs},
	{42, "ntp-servers", KindAddrs},
	{43, "vendor-encapsulated-options", KindBytes},
	{44, "netbios-name-servers", KindAddrs},
	{50, "dhcp-requested-address", KindAddr},
	{51, "dhcp-lease-time", KindUint32},
	{52, "dhcp-option-overload", KindUint8},
	{53, "dhcp-message-type", KindUint8},
	{54, "dhcp-server-identifier", KindAddr},
	{55, "dhcp-parameter-request-list", KindBytes},
	{56, "dhcp-message", KindString},
	{57, "dhcp-max-message-size", KindUint16},
	{58, "dhcp-renewal-time", KindUint32},
	{59, "dhcp-rebinding-time", KindUint32},
	{60, "vendor-class-identifier", KindString},
	{61, "dhcp-client-identifier", KindBytes},
	{66, "tftp-server-name", KindString},
	{67, "bootfile-name", KindString},
	{77, "user-class", KindBytes},
	{81, "fqdn", KindBytes},
	{119, "domain-search", KindBytes},
	{121, "classless-static-routes", KindBytes},
}

var aliases = map[string]uint8{
	"ip-address":     50,
	"router":         3,
	"dns-servers":    6,
	"hostname":       12,
	"lease-time":     51,
	"renewal-time":   58,
	"rebinding-time": 59,
	"client-id":      61,
	"mtu":            26,
}

// Lookup finds an option by name (case-insensitive) or decimal code.
func Lookup(s string) (Def, bool) {
	t := strings.ToLower(strings.TrimSpace(s))
	if n, err := strconv.ParseUint(t, 10, 8); err == nil {
		if n == 0 || n == 255 {
			return Def{}, false
		}
		for _, d := range defs {
			if d.Code == uint8(n) {
				return d, true
			}
		}
		return Def{Code: uint8(n), Name: "option-" + t, Kind: KindBytes}, true
	}
	if c, ok := aliases[t]; ok {
		return ByCode(c), true
	}
	for _, d := range defs {
		if d.Name == t {
			return d, true
		}
	}
	return Def{}, false
}

// ByCode returns the definition of code (bytes for unknown codes).
func ByCode(c uint8) Def {
	for _, d := range defs {
		if d.Code == c {
			return d
		}
	}
	return Def{Code: c, Name: "option-" + strconv.Itoa(int(c)), Kind: KindBytes}
}

// EncodeValue turns a configured text value into option data of kind k.
func EncodeValue(k Kind, s string) ([]byte, error) {
	switch k {
	case KindString:
		if s == "" {
			return nil, fmt.Errorf("empty")
		}
		return []byte(s), nil
	case KindAddr:
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%q is not an IPv4 address", s)
		}
		v := a.As4()
		return v[:], nil
	case KindAddrs:
		var out []byte
		for _, f := range strings.Split(s, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(f))
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("%q is not an IPv4 address", f)
			}
			v := a.As4()
			out = append(out, v[:]...)
		}
		return out, nil
	case KindUint8, KindUint16, KindUint32:
		bits := map[Kind]int{KindUint8: 8, KindUint16: 16, KindUint32: 32}[k]
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, bits)
		if err != nil {
			return nil, fmt.Errorf("%q is not %s", s, k)
		}
		out := make([]byte, bits/8)
		for i := range out {
			out[len(out)-1-i] = byte(n >> (8 * i))
		}
		return out, nil
	case KindBool:
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "true", "1", "on":
			return []byte{1}, nil
		case "false", "0", "off":
			return []byte{0}, nil
		}
		return nil, fmt.Errorf("%q is not true or false", s)
	default:
		if s == "" {
			return nil, fmt.Errorf("empty")
		}
		if h, ok := strings.CutPrefix(s, "0x"); ok {
			b, err := hex.DecodeString(h)
			if err != nil {
				return nil, fmt.Errorf("%q is not hex after 0x", s)
			}
			return b, nil
		}
		if strings.Count(s, ":") > 0 && len(s) >= 5 {
			if b, err := hex.DecodeString(strings.ReplaceAll(s, ":", "")); err == nil && len(s) == 3*len(b)-1 {
				return b, nil
			}
		}
		return []byte(s), nil
	}
}
