package vxlan

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Defaults, as flannel's.
const (
	DefaultVNI  = 1
	DefaultPort = 8472 // the Linux kernel's VXLAN default (IANA's is 4789)
	// Overhead is what encapsulation adds to an inner frame over an IPv4
	// underlay: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
	Overhead = 50
	// Overhead6 is the same over an IPv6 underlay (outer header 40).
	Overhead6 = 70
	maxVNI    = 1<<24 - 1
)

// Config is the Backend object of net-conf.json for "Type": "vxlan". Keys
// match case-insensitively, as Go's encoding/json does for flannel; unknown
// keys (Type, flannel's Windows-only MacPrefix and Name) are ignored.
type Config struct {
	VNI           int  // VXLAN network identifier, default 1
	Port          int  // UDP port, 0 = DefaultPort
	MTU           int  // underlay MTU to compute from, 0 = the external interface's
	GBP           bool // VXLAN Group Based Policy extension
	Learning      bool // let the kernel learn remote MACs (off: linen programs every entry)
	DirectRouting bool // plain routes, no encapsulation, to peers on the same L2 network
}

// ParseConfig decodes and validates the Backend object (raw may be empty:
// all defaults). Every problem is reported, each with its field path.
func ParseConfig(raw json.RawMessage) (Config, error) {
	c := Config{VNI: DefaultVNI}
	if len(strings.TrimSpace(string(raw))) == 0 {
		return c, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return c, fmt.Errorf("Backend: %w", err)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	seen := map[string]string{}
	for _, k := range keys {
		lk := strings.ToLower(k)
		if prev, dup := seen[lk]; dup {
			errs = append(errs, fmt.Errorf("Backend.%s: given twice (also as %s)", k, prev))
			continue
		}
		seen[lk] = k
		v := obj[k]
		field := "Backend." + k
		num := func(dst *int) {
			if err := json.Unmarshal(v, dst); err != nil {
				errs = append(errs, fmt.Errorf("%s: must be an integer, not %s", field, v))
			}
		}
		flag := func(dst *bool) {
			if err := json.Unmarshal(v, dst); err != nil {
				errs = append(errs, fmt.Errorf("%s: must be true or false, not %s", field, v))
			}
		}
		switch lk {
		case "vni":
			num(&c.VNI)
			if c.VNI < 0 || c.VNI > maxVNI {
				errs = append(errs, fmt.Errorf("%s: %d is out of range 0-%d", field, c.VNI, maxVNI))
			}
		case "port":
			num(&c.Port)
			if c.Port < 0 || c.Port > 65535 {
				errs = append(errs, fmt.Errorf("%s: %d is out of range 0-65535 (0 = %d)", field, c.Port, DefaultPort))
			}
		case "mtu":
			num(&c.MTU)
			if c.MTU != 0 && (c.MTU < 68+Overhead || c.MTU > 65535) {
				errs = append(errs, fmt.Errorf("%s: %d is out of range %d-65535 (0 = the external interface's)", field, c.MTU, 68+Overhead))
			}
		case "gbp":
			flag(&c.GBP)
		case "learning":
			flag(&c.Learning)
		case "directrouting":
			flag(&c.DirectRouting)
		}
	}
	return c, errors.Join(errs...)
}

// port is the UDP port the device uses.
func (c Config) port() int {
	if c.Port == 0 {
		return DefaultPort
	}
	return c.Port
}
