package runtime

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// PodSpec is what AddPod needs to know about a pod sandbox.
type PodSpec struct {
	// Name is the pod name: a DNS subdomain (lower-case letters, digits,
	// '-' and '.', at most 253 characters). It names the namespace
	// (NetnsPrefix+Name) and the record, so it is unique per Runtime.
	Name string
	// Namespace is the Kubernetes namespace (a DNS label); "" means
	// "default".
	Namespace string
	// UID is the pod UID; "" means a random UUID.
	UID string
	// Capabilities are the capability arguments (runtimeConfig) offered to
	// the plugins that declare them.
	Capabilities Capabilities
}

// Capabilities are the capability arguments a runtime passes to the plugins
// (CNI CONVENTIONS.md). A plugin receives a key in runtimeConfig only when
// its configuration enables the capability and the value is set.
type Capabilities struct {
	PortMappings []PortMapping `json:"portMappings,omitempty"`
	Bandwidth    *Bandwidth    `json:"bandwidth,omitempty"`
	// IPs are requested addresses, each an address with or without a
	// prefix length ("10.1.2.3/24", "2001:db8::5").
	IPs []string `json:"ips,omitempty"`
	// MAC is the requested MAC address of the pod interface.
	MAC string `json:"mac,omitempty"`
}

// PortMapping is one entry of the portMappings capability.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Bandwidth is the bandwidth capability: rates in bits per second, bursts in
// bits. Zero means no limit in that direction.
type Bandwidth struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// DefaultBurst is the burst (bits) given to a rate without an explicit one.
// It is containerd's choice for pods with bandwidth annotations, so the same
// pod is shaped the same way by linen and by containerd.
const DefaultBurst = math.MaxUint32

// Args returns the capability arguments as libcni's CapabilityArgs: only the
// keys that have a value.
func (c Capabilities) Args() map[string]any {
	m := make(map[string]any, 4)
	if len(c.PortMappings) > 0 {
		m["portMappings"] = c.PortMappings
	}
	if c.Bandwidth != nil {
		m["bandwidth"] = c.Bandwidth
	}
	if len(c.IPs) > 0 {
		m["ips"] = c.IPs
	}
	if c.MAC != "" {
		m["mac"] = c.MAC
	}
	return m
}

// Validate reports every problem of the capability arguments at once.
func (c Capabilities) Validate() error {
	var errs []error
	for i, pm := range c.PortMappings {
		if err := pm.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("portMappings[%d]: %w", i, err))
		}
	}
	if c.Bandwidth != nil {
		if err := c.Bandwidth.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("bandwidth: %w", err))
		}
	}
	for i, s := range c.IPs {
		if _, err := ParseIP(s); err != nil {
			errs = append(errs, fmt.Errorf("ips[%d]: %w", i, err))
		}
	}
	if c.MAC != "" {
		if _, err := net.ParseMAC(c.MAC); err != nil {
			errs = append(errs, fmt.Errorf("mac: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Validate checks one port mapping.
func (pm PortMapping) Validate() error {
	var errs []error
	if pm.HostPort < 1 || pm.HostPort > 65535 {
		errs = append(errs, fmt.Errorf("hostPort %d out of range 1-65535", pm.HostPort))
	}
	if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
		errs = append(errs, fmt.Errorf("containerPort %d out of range 1-65535", pm.ContainerPort))
	}
	switch pm.Protocol {
	case "tcp", "udp", "sctp":
	default:
		errs = append(errs, fmt.Errorf("protocol %q: want tcp, udp or sctp", pm.Protocol))
	}
	if pm.HostIP != "" {
		if _, err := netip.ParseAddr(pm.HostIP); err != nil {
			errs = append(errs, fmt.Errorf("hostIP: %w", err))
		}
	}
	return errors.Join(errs...)
}

// String formats the mapping in the syntax ParsePortMapping reads.
func (pm PortMapping) String() string {
	s := fmt.Sprintf("%d:%d/%s", pm.HostPort, pm.ContainerPort, pm.Protocol)
	if pm.HostIP == "" {
		return s
	}
	if strings.Contains(pm.HostIP, ":") {
		return "[" + pm.HostIP + "]:" + s
	}
	return pm.HostIP + ":" + s
}

// ParsePortMapping reads "[hostIP:]hostPort:containerPort[/proto]", the
// syntax of `docker run -p`: "8080:80", "8080:80/udp",
// "127.0.0.1:8080:80/tcp", "[2001:db8::1]:8080:80". The protocol is tcp,
// udp or sctp, tcp when omitted.
func ParsePortMapping(s string) (PortMapping, error) {
	pm := PortMapping{Protocol: "tcp"}
	rest := s
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		pm.Protocol = strings.ToLower(rest[i+1:])
		rest = rest[:i]
	}
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 || end+1 >= len(rest) || rest[end+1] != ':' {
			return PortMapping{}, fmt.Errorf("port mapping %q: want [hostIP]:hostPort:containerPort[/proto]", s)
		}
		pm.HostIP = rest[1:end]
		rest = rest[end+2:]
	}
	parts := strings.Split(rest, ":")
	switch {
	case len(parts) == 3 && pm.HostIP == "":
		pm.HostIP = parts[0]
		parts = parts[1:]
	case len(parts) != 2:
		return PortMapping{}, fmt.Errorf("port mapping %q: want [hostIP:]hostPort:containerPort[/proto]", s)
	}
	var errs []error
	if pm.HostIP != "" {
		a, err := netip.ParseAddr(pm.HostIP)
		if err != nil || a.Zone() != "" {
			errs = append(errs, fmt.Errorf("host IP %q is not an IP address", pm.HostIP))
		} else {
			pm.HostIP = a.String()
		}
	}
	hp, err := parsePort(parts[0])
	if err != nil {
		errs = append(errs, fmt.Errorf("host port: %w", err))
	}
	cp, err := parsePort(parts[1])
	if err != nil {
		errs = append(errs, fmt.Errorf("container port: %w", err))
	}
	pm.HostPort, pm.ContainerPort = hp, cp
	switch pm.Protocol {
	case "tcp", "udp", "sctp":
	default:
		errs = append(errs, fmt.Errorf("protocol %q: want tcp, udp or sctp", pm.Protocol))
	}
	if err := errors.Join(errs...); err != nil {
		return PortMapping{}, fmt.Errorf("port mapping %q: %w", s, err)
	}
	return pm, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return int(n), nil
}

// Validate checks that a rate and its burst are set together, as the
// bandwidth plugin requires.
func (b *Bandwidth) Validate() error {
	var errs []error
	check := func(dir string, rate, burst uint64) {
		if (rate == 0) != (burst == 0) {
			errs = append(errs, fmt.Errorf("%s: rate and burst must be set together (rate %d, burst %d)", dir, rate, burst))
		}
		if burst/8 >= math.MaxUint32 {
			errs = append(errs, fmt.Errorf("%s: burst %d bits exceeds 4 GiB", dir, burst))
		}
	}
	check("ingress", b.IngressRate, b.IngressBurst)
	check("egress", b.EgressRate, b.EgressBurst)
	if b.IngressRate == 0 && b.EgressRate == 0 {
		errs = append(errs, errors.New("no rate set"))
	}
	return errors.Join(errs...)
}

// ParseBandwidth reads "ingress=RATE,egress=RATE[,ingress-burst=SIZE]
// [,egress-burst=SIZE]" (any subset, at least one rate). RATE is in bits per
// second and SIZE in bits, each a number with an optional Kubernetes
// quantity suffix: k (or K), M, G, T (powers of 1000) or Ki, Mi, Gi, Ti
// (powers of 1024), as in the kubernetes.io/ingress-bandwidth annotation.
// A rate without a burst gets DefaultBurst.
func ParseBandwidth(s string) (*Bandwidth, error) {
	b := &Bandwidth{}
	seen := map[string]bool{}
	var errs []error
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			errs = append(errs, fmt.Errorf("%q: want key=value", kv))
			continue
		}
		if seen[k] {
			errs = append(errs, fmt.Errorf("%s given twice", k))
			continue
		}
		seen[k] = true
		n, err := ParseQuantity(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
			continue
		}
		if n == 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive", k))
			continue
		}
		switch k {
		case "ingress":
			b.IngressRate = n
		case "egress":
			b.EgressRate = n
		case "ingress-burst":
			b.IngressBurst = n
		case "egress-burst":
			b.EgressBurst = n
		default:
			errs = append(errs, fmt.Errorf("unknown key %q (want ingress, egress, ingress-burst, egress-burst)", k))
		}
	}
	if b.IngressRate == 0 && b.IngressBurst != 0 {
		errs = append(errs, errors.New("ingress-burst without ingress"))
	}
	if b.EgressRate == 0 && b.EgressBurst != 0 {
		errs = append(errs, errors.New("egress-burst without egress"))
	}
	if b.IngressRate == 0 && b.EgressRate == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no rate given (want ingress=RATE and/or egress=RATE)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bandwidth %q: %w", s, err)
	}
	if b.IngressRate != 0 && b.IngressBurst == 0 {
		b.IngressBurst = DefaultBurst
	}
	if b.EgressRate != 0 && b.EgressBurst == 0 {
		b.EgressBurst = DefaultBurst
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("bandwidth %q: %w", s, err)
	}
	return b, nil
}

var quantitySuffixes = map[string]int64{
	"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
}

// ParseQuantity reads a non-negative integer quantity such as "10M", "1.5G"
// or "512Ki" (see ParseBandwidth). The value must be a whole number.
func ParseQuantity(s string) (uint64, error) {
	i := len(s)
	for i > 0 && (s[i-1] < '0' || s[i-1] > '9') {
		i--
	}
	num, suf := s[:i], s[i:]
	mult, ok := quantitySuffixes[suf]
	if !ok {
		if suf == "m" {
			return 0, fmt.Errorf("%q: suffix m means milli; did you mean M (mega)?", s)
		}
		return 0, fmt.Errorf("%q: unknown suffix %q (want k, M, G, T, Ki, Mi, Gi, Ti)", s, suf)
	}
	if num == "" || strings.ContainsAny(num, "+-eE") {
		return 0, fmt.Errorf("%q is not a quantity", s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("%q is not a quantity", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	n := r.Num()
	if !n.IsUint64() {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n.Uint64(), nil
}

// ParseIP reads an ips capability entry: an address with or without a
// prefix length. It returns the entry in canonical form.
func ParseIP(s string) (string, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Zone() != "" {
			return "", fmt.Errorf("%q: zones are not allowed", s)
		}
		return p.String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", fmt.Errorf("%q is not an IP address or prefix", s)
	}
	return a.String(), nil
}

var (
	podNameRE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	uidRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)
)

// ValidatePodName checks a pod name: a DNS subdomain of at most 253
// characters (lower-case letters, digits, '-', '.', beginning and ending
// with a letter or digit), as Kubernetes requires. Such a name is also a
// safe file name.
func ValidatePodName(name string) error {
	switch {
	case name == "":
		return errors.New("pod name is empty")
	case len(name) > 253:
		return fmt.Errorf("pod name %.20q...: longer than 253 characters", name)
	case !podNameRE.MatchString(name):
		return fmt.Errorf("pod name %q: want lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("pod name %q: contains \"..\"", name)
	}
	return nil
}

// ValidateNamespace checks a Kubernetes namespace name (a DNS label).
func ValidateNamespace(ns string) error {
	if len(ns) > 63 || !namespaceRE.MatchString(ns) {
		return fmt.Errorf("namespace %q: want a DNS label (lower-case letters, digits and '-', at most 63 characters)", ns)
	}
	return nil
}

// ValidateUID checks a pod UID: it travels in CNI_ARGS, so it may not
// contain ';' or '='.
func ValidateUID(uid string) error {
	if len(uid) > 253 || !uidRE.MatchString(uid) {
		return fmt.Errorf("pod UID %q: want letters, digits, '.', '_', ':' and '-'", uid)
	}
	return nil
}
