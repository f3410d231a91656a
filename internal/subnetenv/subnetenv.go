// Package subnetenv reads and writes subnet.env, the file through which the
// overlay daemon (linen daemon, or flanneld) tells the node's CNI plugin
// which pod subnet the node leased:
//
//	FLANNEL_NETWORK=10.244.0.0/16
//	FLANNEL_SUBNET=10.244.7.1/24
//	FLANNEL_IPV6_NETWORK=fd00:10:244::/56
//	FLANNEL_IPV6_SUBNET=fd00:10:244:7::1/64
//	FLANNEL_MTU=1450
//	FLANNEL_IPMASQ=true
//
// The keys and their form are flannel's, so a node can switch between
// flanneld and linen daemon (and between the two CNI plugins) without
// changing the file. The v4 lines are absent on an IPv6-only network and
// the v6 lines on an IPv4-only one.
//
// The package is deliberately small: linen-cni imports it, and must not
// pull in etcd or the daemon's packages.
package subnetenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"linen.dev/linen/internal/atomicfile"
)

// DefaultPath is where flanneld writes the file and the CNI plugins read it.
const DefaultPath = "/run/flannel/subnet.env"

// The keys of the file.
const (
	KeyNetwork     = "FLANNEL_NETWORK"
	KeySubnet      = "FLANNEL_SUBNET"
	KeyIPv6Network = "FLANNEL_IPV6_NETWORK"
	KeyIPv6Subnet  = "FLANNEL_IPV6_SUBNET"
	KeyMTU         = "FLANNEL_MTU"
	KeyIPMasq      = "FLANNEL_IPMASQ"
)

// Env is the content of subnet.env. A zero prefix means the line is absent.
type Env struct {
	// Network is the cluster's IPv4 pod network (FLANNEL_NETWORK), masked.
	Network netip.Prefix
	// Subnet is this node's IPv4 pod subnet in the file's "gateway form":
	// the first host address with the subnet's length, 10.244.7.1/24.
	// Subnet.Masked() is the subnet itself.
	Subnet netip.Prefix
	// IPv6Network and IPv6Subnet are the same for IPv6.
	IPv6Network netip.Prefix
	IPv6Subnet  netip.Prefix
	// MTU is the MTU pods should use (FLANNEL_MTU).
	MTU int
	// IPMasq tells whether the daemon masquerades traffic leaving the
	// cluster network itself (flanneld --ip-masq), so the pod's bridge
	// need not.
	IPMasq bool
	// ExtraNetworks and ExtraIPv6Networks hold further networks when a
	// *_NETWORK line is a comma-separated list (duplicates dropped).
	ExtraNetworks     []netip.Prefix
	ExtraIPv6Networks []netip.Prefix
}

// Networks lists every network of the file: the IPv4 ones, then the IPv6
// ones.
func (e *Env) Networks() []netip.Prefix {
	var out []netip.Prefix
	if e.Network.IsValid() {
		out = append(out, e.Network)
	}
	out = append(out, e.ExtraNetworks...)
	if e.IPv6Network.IsValid() {
		out = append(out, e.IPv6Network)
	}
	return append(out, e.ExtraIPv6Networks...)
}

// Subnets lists the node's subnets (masked): the IPv4 one, then the IPv6
// one, each only when present.
func (e *Env) Subnets() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []netip.Prefix{e.Subnet, e.IPv6Subnet} {
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Read reads and parses the file at path. A missing file gives an error
// for which errors.Is(err, fs.ErrNotExist) holds.
func Read(path string) (*Env, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	e, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// Parse parses the file's content. Blank lines, '#' comments, CRLF line
// ends, an "export " prefix and quoted values (as a shell would read them)
// are accepted; keys other than FLANNEL_* above are ignored; a key given
// twice takes its last value. Every problem is reported at once, each with
// the key it concerns.
func Parse(data []byte) (*Env, error) {
	vals := map[string]string{}
	var errs []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), len(data)+1)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		line = strings.TrimSpace(strings.TrimPrefix(line, "export "))
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			errs = append(errs, fmt.Sprintf("line %d: %q is not KEY=VALUE", n, clip(line)))
			continue
		}
		vals[k] = unquote(strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}

	e := &Env{}
	// bad holds the keys whose value was malformed (and reported), so
	// that they are not reported as missing too.
	bad := map[string]bool{}
	nets := networks(vals, KeyNetwork, false, &errs, bad)
	nets6 := networks(vals, KeyIPv6Network, true, &errs, bad)
	if len(nets) > 0 {
		e.Network = nets[0]
	}
	if len(nets) > 1 {
		e.ExtraNetworks = nets[1:]
	}
	if len(nets6) > 0 {
		e.IPv6Network = nets6[0]
	}
	if len(nets6) > 1 {
		e.ExtraIPv6Networks = nets6[1:]
	}
	e.Subnet = subnet(vals, KeySubnet, false, &errs, bad)
	e.IPv6Subnet = subnet(vals, KeyIPv6Subnet, true, &errs, bad)
	v, hasMTU := vals[KeyMTU]
	if hasMTU {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %q is not a number", KeyMTU, clip(v)))
			bad[KeyMTU] = true
		}
		e.MTU = n
	}
	v, hasMasq := vals[KeyIPMasq]
	if hasMasq {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %q is not true or false", KeyIPMasq, clip(v)))
		}
		e.IPMasq = b
	}
	errs = e.check(errs, hasMTU, hasMasq, bad)
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	return e, nil
}

// Validate checks that e describes a usable file: a subnet of at least one
// family with its network, addresses of the right family, an MTU.
func (e *Env) Validate() error {
	var errs []string
	fam := func(key string, p netip.Prefix, v6 bool) {
		if p.IsValid() && (p.Addr().Is4() == v6 || p.Addr().Is4In6()) {
			errs = append(errs, fmt.Sprintf("%s: %s is not an %s prefix", key, p, famName(v6)))
		}
	}
	fam(KeyNetwork, e.Network, false)
	fam(KeySubnet, e.Subnet, false)
	fam(KeyIPv6Network, e.IPv6Network, true)
	fam(KeyIPv6Subnet, e.IPv6Subnet, true)
	for _, p := range e.ExtraNetworks {
		fam(KeyNetwork, p, false)
	}
	for _, p := range e.ExtraIPv6Networks {
		fam(KeyIPv6Network, p, true)
	}
	errs = e.check(errs, true, true, nil)
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// check adds the cross-key requirements to errs. Keys in bad were
// malformed and are reported already.
func (e *Env) check(errs []string, hasMTU, hasMasq bool, bad map[string]bool) []string {
	if !e.Network.IsValid() && !e.IPv6Network.IsValid() && !bad[KeyNetwork] && !bad[KeyIPv6Network] {
		errs = append(errs, fmt.Sprintf("%s (or %s): missing", KeyNetwork, KeyIPv6Network))
	}
	if !e.Subnet.IsValid() && !e.IPv6Subnet.IsValid() && !bad[KeySubnet] && !bad[KeyIPv6Subnet] {
		errs = append(errs, fmt.Sprintf("%s (or %s): missing", KeySubnet, KeyIPv6Subnet))
	}
	if e.Subnet.IsValid() && !e.Network.IsValid() && !bad[KeyNetwork] {
		errs = append(errs, fmt.Sprintf("%s: missing, but %s is set", KeyNetwork, KeySubnet))
	}
	if e.IPv6Subnet.IsValid() && !e.IPv6Network.IsValid() && !bad[KeyIPv6Network] {
		errs = append(errs, fmt.Sprintf("%s: missing, but %s is set", KeyIPv6Network, KeyIPv6Subnet))
	}
	switch {
	case !hasMTU:
		errs = append(errs, KeyMTU+": missing")
	case !bad[KeyMTU] && (e.MTU < 68 || e.MTU > 65535):
		errs = append(errs, fmt.Sprintf("%s: %d is outside 68..65535", KeyMTU, e.MTU))
	}
	if !hasMasq {
		errs = append(errs, KeyIPMasq+": missing")
	}
	return errs
}

// networks parses a comma-separated list of prefixes of one family,
// masking each and dropping duplicates.
func networks(vals map[string]string, key string, v6 bool, errs *[]string, bad map[string]bool) []netip.Prefix {
	v, ok := vals[key]
	if !ok || v == "" {
		return nil
	}
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			*errs = append(*errs, fmt.Sprintf("%s: %q is not a CIDR prefix", key, clip(s)))
			bad[key] = true
			continue
		}
		if p.Addr().Is4() == v6 || p.Addr().Is4In6() {
			*errs = append(*errs, fmt.Sprintf("%s: %s is not an %s prefix", key, p, famName(v6)))
			bad[key] = true
			continue
		}
		p = p.Masked()
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// subnet parses a single prefix in gateway form (the address is kept).
func subnet(vals map[string]string, key string, v6 bool, errs *[]string, bad map[string]bool) netip.Prefix {
	v, ok := vals[key]
	if !ok || v == "" {
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(v)
	if err != nil {
		*errs = append(*errs, fmt.Sprintf("%s: %q is not a CIDR prefix", key, clip(v)))
		bad[key] = true
		return netip.Prefix{}
	}
	if p.Addr().Is4() == v6 || p.Addr().Is4In6() {
		*errs = append(*errs, fmt.Sprintf("%s: %s is not an %s prefix", key, p, famName(v6)))
		bad[key] = true
		return netip.Prefix{}
	}
	return p
}

func famName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// unquote strips one pair of matching surrounding quotes.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// clip keeps error messages short whatever the file holds.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Marshal renders e in flanneld's layout and order.
func (e *Env) Marshal() []byte {
	var b bytes.Buffer
	list := func(first netip.Prefix, extra []netip.Prefix) string {
		s := []string{first.Masked().String()}
		for _, p := range extra {
			s = append(s, p.Masked().String())
		}
		return strings.Join(s, ",")
	}
	if e.Network.IsValid() {
		fmt.Fprintf(&b, "%s=%s\n", KeyNetwork, list(e.Network, e.ExtraNetworks))
	}
	if e.Subnet.IsValid() {
		fmt.Fprintf(&b, "%s=%s\n", KeySubnet, e.Subnet)
	}
	if e.IPv6Network.IsValid() {
		fmt.Fprintf(&b, "%s=%s\n", KeyIPv6Network, list(e.IPv6Network, e.ExtraIPv6Networks))
	}
	if e.IPv6Subnet.IsValid() {
		fmt.Fprintf(&b, "%s=%s\n", KeyIPv6Subnet, e.IPv6Subnet)
	}
	fmt.Fprintf(&b, "%s=%d\n", KeyMTU, e.MTU)
	fmt.Fprintf(&b, "%s=%t\n", KeyIPMasq, e.IPMasq)
	return b.Bytes()
}

// Write validates e and replaces the file at path atomically: readers see
// the old content or the new one, never a partial file, also across a
// crash (temporary file in the same directory, fsync, rename, fsync of the
// directory). The directory is created (0755) when missing; the file is
// 0644, as flanneld leaves it.
func Write(path string, e *Env) error {
	if err := e.Validate(); err != nil {
		return fmt.Errorf("subnet.env for %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, e.Marshal(), 0o644)
}
