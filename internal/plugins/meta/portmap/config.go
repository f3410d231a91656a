package portmap

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/ipcfg"
	"linen.dev/linen/internal/nft"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// wireConf is the configuration as it arrives on stdin.
type wireConf struct {
	types.NetConf
	SNAT    *bool `json:"snat,omitempty"`
	MasqAll bool  `json:"masqAll,omitempty"`
	// Options of the reference plugin's iptables backend, accepted so that
	// its configurations work; linen does not use packet marks.
	MarkMasqBit          *int    `json:"markMasqBit,omitempty"`
	ExternalSetMarkChain *string `json:"externalSetMarkChain,omitempty"`
	Backend              string  `json:"backend,omitempty"`
	// Raw nftables or iptables match syntax: not supported.
	ConditionsV4 *[]string `json:"conditionsV4,omitempty"`
	ConditionsV6 *[]string `json:"conditionsV6,omitempty"`

	RuntimeConfig *struct {
		PortMappings json.RawMessage `json:"portMappings,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	// GC's valid attachments under both keys, telling null from missing
	// (these outrank types.NetConf's field of the same key, which cannot).
	ValidAttachments  pluginmain.GCList `json:"cni.dev/valid-attachments"`
	LegacyAttachments pluginmain.GCList `json:"cni.dev/attachments"`
}

// Config is the validated configuration.
type Config struct {
	Network    string
	CNIVersion string
	SNAT       bool
	MasqAll    bool
	// Mappings are runtimeConfig.portMappings; HasMappings says whether the
	// runtime passed the capability at all (DEL treats "passed, empty" as
	// "nothing was mapped").
	Mappings    []nft.PortMapping
	HasMappings bool
	PrevResult  *current.Result
	// Valid is cni.dev/valid-attachments (GC); HasValid whether present.
	Valid    pluginmain.Attachments
	HasValid bool
}

// parseConfig decodes and validates stdin, reporting every problem at once.
func parseConfig(stdin []byte) (*Config, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	c := &Config{Network: w.Name, CNIVersion: w.CNIVersion, SNAT: true, MasqAll: w.MasqAll}
	if w.SNAT != nil {
		c.SNAT = *w.SNAT
	}
	unsupported := pluginmain.NewFieldErrors(pluginmain.CodeUnsupportedField)
	for _, cond := range []struct {
		name string
		v    *[]string
	}{{"conditionsV4", w.ConditionsV4}, {"conditionsV6", w.ConditionsV6}} {
		if cond.v != nil && len(*cond.v) > 0 {
			unsupported.Add(cond.name, "%q is not supported: linen's portmap does not take raw match syntax (remove the key)", strings.Join(*cond.v, " "))
		}
	}
	if err := unsupported.Err(); err != nil {
		return nil, err
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	if w.MarkMasqBit != nil {
		if b := *w.MarkMasqBit; b < 0 || b > 31 {
			fe.Add("markMasqBit", "%d is outside 0..31", b)
		}
		if w.ExternalSetMarkChain != nil {
			fe.Add("markMasqBit", "cannot be combined with externalSetMarkChain")
		}
	}
	switch w.Backend {
	case "", "nftables", "iptables":
	default:
		fe.Add("backend", "%q is not a backend (want \"nftables\" or \"iptables\", both meaning nftables here)", w.Backend)
	}
	if w.RuntimeConfig != nil && len(w.RuntimeConfig.PortMappings) > 0 {
		c.HasMappings = true
		c.Mappings = parsePortMappings(w.RuntimeConfig.PortMappings, "runtimeConfig.portMappings", fe)
	}
	c.Valid, c.HasValid = pluginmain.GCAttachments(w.ValidAttachments, w.LegacyAttachments)
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

// ParsePortMappings decodes the portMappings capability: a list of
// {hostPort, containerPort, protocol (tcp, udp or sctp; default tcp),
// hostIP (optional)}. Every problem is reported, with its field path.
func ParsePortMappings(raw []byte) ([]nft.PortMapping, error) {
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	out := parsePortMappings(raw, "runtimeConfig.portMappings", fe)
	if err := fe.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func parsePortMappings(raw []byte, path string, fe *pluginmain.FieldErrors) []nft.PortMapping {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		fe.Add(path, "must be a list of port mappings")
		return nil
	}
	type scope struct {
		proto  nft.Protocol
		port   uint16
		family int
		addr   netip.Addr // zero: any address of the family
	}
	seen := map[scope]int{} // scope -> index of the mapping that claims it
	var out []nft.PortMapping
	byIndex := map[int]nft.PortMapping{}
	for i, item := range list {
		f := pluginmain.Idx(path, i)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(item, &m); err != nil || m == nil {
			fe.Add(f, "must be an object {hostPort, containerPort, protocol, hostIP}")
			continue
		}
		canonicalKeys(m, "hostPort", "containerPort", "protocol", "hostIP")
		pm, ok := nft.PortMapping{Protocol: nft.TCP}, true
		port := func(key string) uint16 {
			v, present := m[key]
			if !present {
				fe.Add(f+"."+key, "missing")
				ok = false
				return 0
			}
			var n int64
			if err := json.Unmarshal(v, &n); err != nil || n < 1 || n > 65535 {
				fe.Add(f+"."+key, "%s is not a port number (an integer from 1 to 65535)", compact(v))
				ok = false
				return 0
			}
			return uint16(n)
		}
		pm.HostPort = port("hostPort")
		pm.ContainerPort = port("containerPort")
		if v, present := m["protocol"]; present && string(v) != "null" {
			var s string
			p, known := nft.Protocol(0), false
			if json.Unmarshal(v, &s) == nil {
				if s == "" {
					p, known = nft.TCP, true
				} else {
					p, known = nft.ParseProtocol(s)
				}
			}
			if !known {
				fe.Add(f+".protocol", "%s is not a protocol (want \"tcp\", \"udp\" or \"sctp\")", compact(v))
				ok = false
			}
			pm.Protocol = p
		}
		if v, present := m["hostIP"]; present && string(v) != "null" {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				fe.Add(f+".hostIP", "%s is not an IP address string", compact(v))
				ok = false
			} else if s != "" {
				a, err := netip.ParseAddr(s)
				if err != nil || a.Zone() != "" {
					fe.Add(f+".hostIP", "%q is not an IP address", s)
					ok = false
				} else {
					pm.HostIP = a.Unmap()
				}
			}
		}
		if !ok {
			continue
		}
		// Two mappings may not claim the same port for the same addresses.
		var scopes []scope
		switch a := pm.HostIP; {
		case !a.IsValid():
			scopes = []scope{{pm.Protocol, pm.HostPort, 4, netip.Addr{}}, {pm.Protocol, pm.HostPort, 6, netip.Addr{}}}
		case a.IsUnspecified():
			scopes = []scope{{pm.Protocol, pm.HostPort, family(a), netip.Addr{}}}
		default:
			scopes = []scope{{pm.Protocol, pm.HostPort, family(a), a}}
		}
		dup := -1
		for _, s := range scopes {
			if j, taken := seen[s]; taken && dup < 0 {
				dup = j
			}
		}
		if dup >= 0 {
			fe.Add(f, "%s duplicates %s (%s)", pm, pluginmain.Idx("portMappings", dup), byIndex[dup])
		}
		for _, s := range scopes {
			if _, taken := seen[s]; !taken {
				seen[s] = i
			}
		}
		byIndex[i] = pm
		out = append(out, pm)
	}
	if fe.Len() > 0 {
		return nil
	}
	return out
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// compact renders a JSON value for a message, shortened.
func compact(v json.RawMessage) string {
	s := strings.TrimSpace(string(v))
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

// entry builds the attachment's port mappings: the first IPv4 and first
// IPv6 address of the sandbox interface ifName in the previous result (any
// of its addresses if that interface has none).
func (c *Config) entry(containerID, ifName string) (nft.PortMapEntry, error) {
	e := nft.PortMapEntry{Network: c.Network, ContainerID: containerID, IfName: ifName,
		Mappings: c.Mappings, SNAT: c.SNAT, MasqAll: c.MasqAll}
	ips := ipcfg.IPsFor(c.PrevResult, ifName)
	if len(ips) == 0 {
		ips = c.PrevResult.IPs
	}
	for _, ip := range ips {
		if ip == nil {
			continue
		}
		p := ipcfg.Prefix(ip.Address)
		switch {
		case p.Addr().Is4() && !e.IPv4.IsValid():
			e.IPv4 = p
		case p.Addr().Is6() && !e.IPv6.IsValid():
			e.IPv6 = p
		}
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	if !e.IPv4.IsValid() && !e.IPv6.IsValid() {
		fe.Add("prevResult.ips", "no IP address for interface %q to map ports to", ifName)
	}
	for i, m := range c.Mappings {
		a := m.HostIP
		switch {
		case !a.IsValid():
		case a.Is4() && !e.IPv4.IsValid():
			fe.Add(pluginmain.Idx("runtimeConfig.portMappings", i)+".hostIP", "%s is IPv4 but the pod has no IPv4 address", a)
		case a.Is6() && !e.IPv6.IsValid():
			fe.Add(pluginmain.Idx("runtimeConfig.portMappings", i)+".hostIP", "%s is IPv6 but the pod has no IPv6 address", a)
		}
	}
	if err := fe.Err(); err != nil {
		return e, err
	}
	return e, nil
}

// conflictError names the mapping that another attachment holds.
func conflictError(err *nft.PortConflictError) error {
	return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "%s: %v",
		pluginmain.Idx("runtimeConfig.portMappings", err.Mapping), err)
}

// canonicalKeys renames a key that matches one of names case-insensitively
// to that name, as encoding/json matches struct fields (and so the
// reference plugin does): containerd's go-cni sends {"HostPort", "ContainerPort",
// "Protocol", "HostIP"}. An exact key wins; among other spellings the
// lexically first one does, so the result never depends on map order.
func canonicalKeys(m map[string]json.RawMessage, names ...string) {
	for _, n := range names {
		if _, ok := m[n]; ok {
			continue
		}
		best := ""
		for k := range m {
			if strings.EqualFold(k, n) && (best == "" || k < best) {
				best = k
			}
		}
		if best != "" {
			m[n] = m[best]
		}
	}
}
