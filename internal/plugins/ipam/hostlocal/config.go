package hostlocal

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// DefaultDataDir is where reservations live when ipam.dataDir is not set.
const DefaultDataDir = "/var/lib/cni/networks"

// wireRange is one range as written in the configuration.
type wireRange struct {
	Subnet     string `json:"subnet,omitempty"`
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
}

func (w wireRange) empty() bool { return w == wireRange{} }

// wireIPAM is the ipam section. The embedded wireRange is the legacy
// single-range form (ipam.subnet, ipam.rangeStart, ...).
type wireIPAM struct {
	Type string `json:"type"`
	wireRange
	Ranges     [][]wireRange `json:"ranges"`
	Routes     []WireRoute   `json:"routes"`
	DataDir    string        `json:"dataDir"`
	ResolvConf string        `json:"resolvConf"`
}

// wireConf is the part of stdin host-local reads. IPAM plugins get the
// complete configuration of the plugin that delegates to them, so every
// other key is ignored.
type wireConf struct {
	CNIVersion    string    `json:"cniVersion"`
	Name          string    `json:"name"`
	Type          string    `json:"type"`
	IPAM          *wireIPAM `json:"ipam"`
	RuntimeConfig *struct {
		IPRanges [][]wireRange `json:"ipRanges"`
		IPs      []string      `json:"ips"`
	} `json:"runtimeConfig"`
	Args *struct {
		CNI *struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
	PrevResult map[string]any `json:"prevResult"`
}

// Range is one validated range: the addresses Start..End (inclusive) of
// Subnet. Field is the configuration path it came from.
type Range struct {
	Subnet  netip.Prefix
	Start   netip.Addr
	End     netip.Addr
	Gateway netip.Addr
	Field   string
}

// RangeSet is a pool of ranges of one family; ADD takes one address from
// each set. Requested is the address asked for through runtimeConfig.ips,
// args.cni.ips or CNI_ARGS IP that falls in this set (zero if none).
type RangeSet struct {
	Ranges    []Range
	Field     string
	Requested netip.Addr
}

// Config is the validated configuration.
type Config struct {
	Network    string
	CNIVersion string
	DataDir    string
	ResolvConf string
	Sets       []RangeSet
	Routes     []Route
	// PrevIPs are the addresses of the configuration's prevResult, if any.
	PrevIPs []netip.Addr
}

// Dir is the directory holding the network's reservations.
func (c *Config) Dir() string { return filepath.Join(c.DataDir, c.Network) }

// ParseConfig decodes and validates a host-local configuration (the whole
// stdin of the invocation) with CNI_ARGS; every problem is reported at once,
// each with its field path (code 7), JSON type errors with code 6.
func ParseConfig(stdin []byte, cniArgs string) (*Config, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	cv := w.CNIVersion
	if cv == "" {
		cv = "0.1.0"
	}
	c := &Config{Network: w.Name, CNIVersion: cv, DataDir: DefaultDataDir}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	pfx, err := ipamSection(stdin, &w)
	if err != nil {
		return nil, err
	}
	if w.IPAM == nil {
		fe.Add("ipam", "missing (host-local needs an ipam section with ranges)")
		return nil, fe.Err()
	}
	c.DataDir = checkDataDir(fe, pfx, w.IPAM.DataDir)
	c.ResolvConf = w.IPAM.ResolvConf

	// Range sets: runtimeConfig.ipRanges, then the legacy single range,
	// then ipam.ranges, as the reference plugin orders them.
	var sets []RangeSet
	if w.RuntimeConfig != nil {
		for i, rs := range w.RuntimeConfig.IPRanges {
			sets = append(sets, parseSet(fe, pluginmain.Idx("runtimeConfig.ipRanges", i), rs))
		}
	}
	if !w.IPAM.wireRange.empty() {
		r, ok := parseRange(fe, pfx+"subnet", pfx, w.IPAM.wireRange)
		if ok {
			sets = append(sets, RangeSet{Ranges: []Range{r}, Field: pfx + "subnet"})
		} else {
			sets = append(sets, RangeSet{Field: pfx + "subnet"})
		}
	}
	for i, rs := range w.IPAM.Ranges {
		sets = append(sets, parseSet(fe, pluginmain.Idx(pfx+"ranges", i), rs))
	}
	if len(sets) == 0 {
		fe.Add(pfx+"ranges", "no range set (give %sranges, %ssubnet or runtimeConfig.ipRanges)", pfx, pfx)
	}
	checkOverlaps(fe, sets)
	checkFamilies(fe, sets, cv)
	c.Sets = sets
	c.Routes = ParseRoutes(fe, pfx+"routes", w.IPAM.Routes)
	if fe.Len() == 0 {
		if err := requestIPs(fe, c, &w, cniArgs); err != nil {
			return nil, err // malformed CNI_ARGS: code 4
		}
	}
	if err := fe.Err(); err != nil {
		return nil, err
	}
	if w.PrevResult != nil {
		ips, err := prevIPs(&w)
		if err != nil {
			return nil, err
		}
		c.PrevIPs = ips
	}
	return c, nil
}

// ipamSection finds the ipam section. When the configuration has none but
// is itself a host-local configuration (the plugin run directly rather
// than delegated to), its top level is the section. It returns the prefix
// of field paths: "ipam." or "".
func ipamSection(stdin []byte, w *wireConf) (string, error) {
	if w.IPAM != nil || w.Type != "host-local" {
		return "ipam.", nil
	}
	var top wireIPAM
	if err := pluginmain.DecodeConf(stdin, &top); err != nil {
		return "", err
	}
	w.IPAM = &top
	return "", nil
}

func checkDataDir(fe *pluginmain.FieldErrors, pfx, d string) string {
	if d == "" {
		return DefaultDataDir
	}
	if !filepath.IsAbs(d) {
		fe.Add(pfx+"dataDir", "%q must be an absolute path", d)
	}
	return filepath.Clean(d)
}

// lenientConf is what DEL and GC need. They must work with whatever
// configuration the runtime cached, so only the data directory has to make
// sense; Sets is the number of range sets when the ranges are valid, else 0.
type lenientConf struct {
	Network string
	DataDir string
	Sets    int
	PrevIPs []netip.Addr
	// NoRanges: the configuration declares no range at all; they come
	// from the runtime (runtimeConfig.ipRanges) at ADD time.
	NoRanges bool
}

func parseLenient(stdin []byte) (*lenientConf, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	lc := &lenientConf{Network: w.Name, DataDir: DefaultDataDir}
	pfx, err := ipamSection(stdin, &w)
	if err != nil {
		return nil, err
	}
	if w.IPAM == nil {
		return lc, nil
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	lc.DataDir = checkDataDir(fe, pfx, w.IPAM.DataDir)
	if err := fe.Err(); err != nil {
		return nil, err
	}
	lc.NoRanges = w.IPAM.wireRange.empty() && len(w.IPAM.Ranges) == 0 &&
		(w.RuntimeConfig == nil || len(w.RuntimeConfig.IPRanges) == 0)
	if c, err := ParseConfig(stdin, ""); err == nil {
		lc.Sets = len(c.Sets)
		lc.PrevIPs = c.PrevIPs
	} else if w.PrevResult != nil {
		lc.PrevIPs, _ = prevIPs(&w)
	}
	return lc, nil
}

func prevIPs(w *wireConf) ([]netip.Addr, error) {
	nc := types.NetConf{CNIVersion: w.CNIVersion, RawPrevResult: w.PrevResult}
	res, err := pluginmain.PrevResult(&nc)
	if err != nil || res == nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ip := range res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

func parseSet(fe *pluginmain.FieldErrors, field string, rs []wireRange) RangeSet {
	set := RangeSet{Field: field}
	if len(rs) == 0 {
		fe.Add(field, "empty range set (needs at least one range with a subnet)")
		return set
	}
	for j, wr := range rs {
		path := pluginmain.Idx(field, j)
		r, ok := parseRange(fe, path, path+".", wr)
		if !ok {
			continue
		}
		if len(set.Ranges) > 0 && set.Ranges[0].Subnet.Addr().Is4() != r.Subnet.Addr().Is4() {
			fe.Add(path+".subnet", "%s is %s but %s is %s: a range set holds one address family",
				r.Subnet, family(r.Subnet.Addr()), set.Ranges[0].Field, family(set.Ranges[0].Subnet.Addr()))
			continue
		}
		set.Ranges = append(set.Ranges, r)
	}
	return set
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// parseRange validates one range. path names the range in messages, prefix
// is prepended to its keys ("ipam.ranges[0][1]." or "ipam." for the legacy
// form).
func parseRange(fe *pluginmain.FieldErrors, path, prefix string, w wireRange) (Range, bool) {
	r := Range{Field: path}
	n := fe.Len()
	if w.Subnet == "" {
		fe.Add(prefix+"subnet", "missing (a CIDR such as 10.22.0.0/16)")
		return r, false
	}
	p, err := netip.ParsePrefix(w.Subnet)
	switch {
	case err != nil:
		fe.Add(prefix+"subnet", "%q is not a CIDR", w.Subnet)
		return r, false
	case p.Addr().Is4In6():
		fe.Add(prefix+"subnet", "%q is an IPv4-mapped IPv6 prefix; write the IPv4 subnet", w.Subnet)
		return r, false
	case p.Masked() != p:
		fe.Add(prefix+"subnet", "%s has host bits set (the network is %s)", w.Subnet, p.Masked())
		return r, false
	case p.Bits() > p.Addr().BitLen()-2:
		fe.Add(prefix+"subnet", "%s is too small to allocate from (needs /%d or shorter)", p, p.Addr().BitLen()-2)
		return r, false
	}
	r.Subnet = p
	network := p.Addr()
	r.Start = network.Next()
	r.Gateway = network.Next()
	r.End = lastAddr(p)
	if p.Addr().Is4() {
		r.End = r.End.Prev()
	}
	inSubnet := func(key, s string) (netip.Addr, bool) {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			fe.Add(prefix+key, "%q is not an IP address", s)
			return a, false
		}
		if !p.Contains(a) {
			fe.Add(prefix+key, "%s is outside the subnet %s", a, p)
			return a, false
		}
		return a, true
	}
	if w.RangeStart != "" {
		if a, ok := inSubnet("rangeStart", w.RangeStart); ok {
			r.Start = a
		}
	}
	if w.RangeEnd != "" {
		if a, ok := inSubnet("rangeEnd", w.RangeEnd); ok {
			r.End = a
		}
	}
	if w.Gateway != "" {
		if a, ok := inSubnet("gateway", w.Gateway); ok {
			r.Gateway = a
		}
	}
	if fe.Len() != n {
		return r, false
	}
	if r.Start.Compare(r.End) > 0 {
		fe.Add(prefix+"rangeEnd", "%s is before rangeStart %s", r.End, r.Start)
		return r, false
	}
	return r, true
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	off := 0
	if p.Addr().Is4() {
		off = 12
	}
	for i := p.Bits(); i < p.Addr().BitLen(); i++ {
		b[off+i/8] |= 0x80 >> (i % 8)
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// overlaps reports whether two ranges share an address.
func overlaps(a, b *Range) bool {
	if a.Start.Is4() != b.Start.Is4() {
		return false
	}
	return a.Start.Compare(b.End) <= 0 && b.Start.Compare(a.End) <= 0
}

func checkOverlaps(fe *pluginmain.FieldErrors, sets []RangeSet) {
	var all []*Range
	for i := range sets {
		for j := range sets[i].Ranges {
			all = append(all, &sets[i].Ranges[j])
		}
	}
	for i, a := range all {
		for _, b := range all[:i] {
			if overlaps(a, b) {
				fe.Add(a.Field, "%s overlaps %s %s", a, b.Field, b)
				break
			}
		}
	}
}

// String renders the range as "10.0.0.0/24" or, when narrowed,
// "10.0.0.0/24 (10.0.0.10-10.0.0.20)".
func (r *Range) String() string {
	def := Range{}
	def.Start = r.Subnet.Addr().Next()
	def.End = lastAddr(r.Subnet)
	if r.Subnet.Addr().Is4() {
		def.End = def.End.Prev()
	}
	if r.Start == def.Start && r.End == def.End {
		return r.Subnet.String()
	}
	return fmt.Sprintf("%s (%s-%s)", r.Subnet, r.Start, r.End)
}

func checkFamilies(fe *pluginmain.FieldErrors, sets []RangeSet, cv string) {
	if ok, _ := version.GreaterThanOrEqualTo(cv, "0.3.0"); ok {
		return
	}
	seen := map[bool]bool{}
	for _, s := range sets {
		if len(s.Ranges) == 0 {
			continue
		}
		v4 := s.Ranges[0].Start.Is4()
		if seen[v4] {
			fe.Add(s.Field, "a second %s range set needs cniVersion 0.3.0 or later (this configuration is %s)", family(s.Ranges[0].Start), cv)
		}
		seen[v4] = true
	}
}

// requestIPs resolves the requested addresses, highest precedence first:
// runtimeConfig.ips, args.cni.ips, CNI_ARGS IP (comma separated). Each must
// fall in a distinct range set, and be neither a gateway nor an IPv4
// network or broadcast address.
func requestIPs(fe *pluginmain.FieldErrors, c *Config, w *wireConf, cniArgs string) error {
	type req struct {
		field, text string
	}
	var reqs []req
	switch {
	case w.RuntimeConfig != nil && len(w.RuntimeConfig.IPs) > 0:
		for i, s := range w.RuntimeConfig.IPs {
			reqs = append(reqs, req{pluginmain.Idx("runtimeConfig.ips", i), s})
		}
	case w.Args != nil && w.Args.CNI != nil && len(w.Args.CNI.IPs) > 0:
		for i, s := range w.Args.CNI.IPs {
			reqs = append(reqs, req{pluginmain.Idx("args.cni.ips", i), s})
		}
	default:
		ca, err := pluginmain.ParseCNIArgs(cniArgs)
		if err != nil {
			return err
		}
		if v := ca.Get("IP"); v != "" {
			for _, s := range strings.Split(v, ",") {
				reqs = append(reqs, req{"CNI_ARGS IP", strings.TrimSpace(s)})
			}
		}
	}
	for _, r := range reqs {
		a, err := parseIPOrCIDR(r.text)
		if err != nil {
			fe.Add(r.field, "%q is not an IP address (want ip or ip/prefix)", r.text)
			continue
		}
		si, ri := -1, -1
		for i := range c.Sets {
			if j := c.Sets[i].rangeOf(a); j >= 0 {
				si, ri = i, j
				break
			}
		}
		if si < 0 {
			fe.Add(r.field, "requested address %s is in no configured range", a)
			continue
		}
		set := &c.Sets[si]
		rg := &set.Ranges[ri]
		switch {
		case a == rg.Gateway:
			fe.Add(r.field, "requested address %s is the gateway of %s", a, rg.Field)
		case rg.excluded(a):
			fe.Add(r.field, "requested address %s is the network or broadcast address of %s", a, rg.Subnet)
		case set.Requested.IsValid():
			fe.Add(r.field, "requested address %s is in range set %s, which already has the requested address %s (one address per range set)", a, set.Field, set.Requested)
		default:
			set.Requested = a
		}
	}
	return nil
}

func parseIPOrCIDR(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, err
		}
		return p.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("zone not allowed")
	}
	return a.Unmap(), nil
}
