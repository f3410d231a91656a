package bandwidth

import (
	"bytes"
	"encoding/json"
	"math"
	"net/netip"
	"strconv"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// maxBurst is the largest burst in bits: the bucket is programmed in bytes
// as a 32-bit number.
const maxBurst = uint64(math.MaxUint32) * 8

// minRate is the smallest rate in bits/s: the kernel takes rates in bytes.
const minRate = 8

// maxSubnets bounds each subnet list (one classifier entry per subnet).
const maxSubnets = 1024

// entry is one set of limits as it arrives, both at the top level and as
// runtimeConfig.bandwidth. The numbers stay raw so that every bad value is
// reported with its path, not only the first the JSON decoder meets.
type entry struct {
	IngressRate     json.RawMessage `json:"ingressRate,omitempty"`
	IngressBurst    json.RawMessage `json:"ingressBurst,omitempty"`
	EgressRate      json.RawMessage `json:"egressRate,omitempty"`
	EgressBurst     json.RawMessage `json:"egressBurst,omitempty"`
	UnshapedSubnets json.RawMessage `json:"unshapedSubnets,omitempty"`
	ShapedSubnets   json.RawMessage `json:"shapedSubnets,omitempty"`
}

// wireConf is the configuration as it arrives on stdin.
type wireConf struct {
	types.NetConf
	entry
	RuntimeConfig *struct {
		Bandwidth json.RawMessage `json:"bandwidth,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// Shape is the limit of one direction: Rate in bits per second (0: not
// shaped) and Burst in bits.
type Shape struct {
	Rate  uint64
	Burst uint64
}

// SubnetMode says which traffic of a shaped direction is shaped.
type SubnetMode int

const (
	// ShapeAll shapes all traffic (no subnet list).
	ShapeAll SubnetMode = iota
	// ShapeExcept shapes everything but traffic with the subnets
	// (unshapedSubnets).
	ShapeExcept
	// ShapeOnly shapes only traffic with the subnets (shapedSubnets).
	ShapeOnly
)

func (m SubnetMode) String() string {
	switch m {
	case ShapeExcept:
		return "unshapedSubnets"
	case ShapeOnly:
		return "shapedSubnets"
	}
	return "all traffic"
}

// Subnets selects the traffic that is shaped by the address of the other
// end: the source of traffic to the pod, the destination of traffic from it.
type Subnets struct {
	Mode     SubnetMode
	Prefixes []netip.Prefix
}

// Config is the validated configuration.
type Config struct {
	Network    string
	CNIVersion string
	// Ingress is traffic into the pod, Egress traffic out of it.
	Ingress, Egress Shape
	Subnets         Subnets
	// FromRuntime says the limits came from runtimeConfig.bandwidth.
	FromRuntime bool
	PrevResult  *current.Result
}

// Shaping reports whether any direction is limited.
func (c *Config) Shaping() bool { return c.Ingress.Rate > 0 || c.Egress.Rate > 0 }

// parseConfig decodes and validates stdin, reporting every problem at
// once. Limits from runtimeConfig.bandwidth (the "bandwidth" capability)
// replace the static ones; the subnet lists of runtimeConfig replace the
// static lists when it has one.
func parseConfig(stdin []byte) (*Config, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	c := &Config{Network: w.Name, CNIVersion: w.CNIVersion}
	static := parseEntry(&w.entry, "", fe)
	c.Ingress, c.Egress, c.Subnets = static.ingress, static.egress, static.subnets
	if w.RuntimeConfig != nil && len(w.RuntimeConfig.Bandwidth) > 0 && !isNull(w.RuntimeConfig.Bandwidth) {
		const path = "runtimeConfig.bandwidth"
		var rt entry
		if err := json.Unmarshal(w.RuntimeConfig.Bandwidth, &rt); err != nil {
			fe.Add(path, "must be an object {ingressRate, ingressBurst, egressRate, egressBurst, unshapedSubnets, shapedSubnets}")
		} else {
			r := parseEntry(&rt, path+".", fe)
			c.Ingress, c.Egress, c.FromRuntime = r.ingress, r.egress, true
			if r.hasSubnets {
				c.Subnets = r.subnets
			}
		}
	}
	if err := fe.Err(); err != nil {
		return nil, err
	}
	prev, err := pluginmain.PrevResult(&w.NetConf)
	if err != nil {
		return nil, err
	}
	c.PrevResult = prev
	return c, nil
}

type parsedEntry struct {
	ingress, egress Shape
	subnets         Subnets
	hasSubnets      bool
}

func parseEntry(e *entry, prefix string, fe *pluginmain.FieldErrors) parsedEntry {
	var p parsedEntry
	p.ingress = parseShape(e.IngressRate, e.IngressBurst, prefix+"ingressRate", prefix+"ingressBurst", fe)
	p.egress = parseShape(e.EgressRate, e.EgressBurst, prefix+"egressRate", prefix+"egressBurst", fe)
	unshaped, hasU := parseSubnets(e.UnshapedSubnets, prefix+"unshapedSubnets", fe)
	shaped, hasS := parseSubnets(e.ShapedSubnets, prefix+"shapedSubnets", fe)
	switch {
	case hasU && hasS:
		fe.Add(prefix+"shapedSubnets", "cannot be combined with unshapedSubnets (give the traffic to shape or the traffic to leave alone, not both)")
	case hasU:
		p.subnets, p.hasSubnets = Subnets{Mode: ShapeExcept, Prefixes: unshaped}, true
	case hasS:
		p.subnets, p.hasSubnets = Subnets{Mode: ShapeOnly, Prefixes: shaped}, true
	}
	return p
}

func parseShape(rawRate, rawBurst json.RawMessage, rateField, burstField string, fe *pluginmain.FieldErrors) Shape {
	rate, rok := parseBits(rawRate, rateField, fe)
	burst, bok := parseBits(rawBurst, burstField, fe)
	if !rok || !bok {
		return Shape{}
	}
	if rate == 0 && burst == 0 {
		return Shape{}
	}
	ok := true
	switch {
	case rate == 0:
		fe.Add(rateField, "missing: %s is set, so the rate must be too", burstField)
		ok = false
	case rate < minRate:
		fe.Add(rateField, "%d bits/s is below the minimum of %d bits/s (one byte per second)", rate, minRate)
		ok = false
	}
	switch {
	case burst == 0:
		fe.Add(burstField, "missing or 0: %s is set, so the burst must be a positive number of bits", rateField)
		ok = false
	case burst > maxBurst:
		fe.Add(burstField, "%d bits is more than the maximum of %d bits (4 GiB)", burst, maxBurst)
		ok = false
	}
	if !ok {
		return Shape{}
	}
	return Shape{Rate: rate, Burst: burst}
}

// parseBits reads a non-negative whole number of bits (or bits per
// second). JSON numbers in exponent form (1e6) are accepted when whole.
func parseBits(raw json.RawMessage, field string, fe *pluginmain.FieldErrors) (uint64, bool) {
	s := string(bytes.TrimSpace(raw))
	if s == "" || s == "null" {
		return 0, true
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return n, true
	}
	if s[0] == '"' {
		fe.Add(field, "%s is a string; give a number (bits or bits per second)", short(s))
		return 0, false
	}
	// The document is valid JSON, so anything ParseFloat takes here is a
	// JSON number.
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f != math.Trunc(f) || f >= math.Exp2(64) {
		fe.Add(field, "%s is not a whole number from 0 to %d", short(s), uint64(math.MaxUint64))
		return 0, false
	}
	return uint64(f), true
}

func parseSubnets(raw json.RawMessage, field string, fe *pluginmain.FieldErrors) ([]netip.Prefix, bool) {
	if len(raw) == 0 || isNull(raw) {
		return nil, false
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		fe.Add(field, "must be a list of CIDR strings, e.g. [\"10.0.0.0/8\", \"fd00::/8\"]")
		return nil, false
	}
	if len(list) == 0 {
		fe.Add(field, "is empty; leave the key out to shape all traffic")
		return nil, false
	}
	if len(list) > maxSubnets {
		fe.Add(field, "has %d entries, more than the maximum of %d", len(list), maxSubnets)
		return nil, false
	}
	out := make([]netip.Prefix, 0, len(list))
	seen := map[netip.Prefix]bool{}
	for i, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			fe.Add(pluginmain.Idx(field, i), "%q is not a CIDR subnet", s)
			continue
		}
		if m := p.Masked(); m != p {
			fe.Add(pluginmain.Idx(field, i), "%q has host bits set (did you mean %s?)", s, m)
			continue
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, true
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// short renders a JSON value for a message, shortened.
func short(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}
