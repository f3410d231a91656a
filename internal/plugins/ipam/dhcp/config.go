package dhcp

import (
	"fmt"
	"path/filepath"

	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/plugins/ipam/dhcp/dhcp4"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// DefaultSocketPath is where the daemon listens unless told otherwise.
const DefaultSocketPath = "/run/cni/dhcp.sock"

// DefaultParams are the options requested when the configuration does not
// say skipDefault: the address's subnet, routers and classless routes, DNS
// and the lease times.
var DefaultParams = []uint8{
	dhcp4.OptSubnetMask, dhcp4.OptRouter, dhcp4.OptDNS, dhcp4.OptDomainName,
	dhcp4.OptDomainSearch, dhcp4.OptClasslessRoutes, dhcp4.OptStaticRoutes,
	dhcp4.OptLeaseTime, dhcp4.OptRenewalTime, dhcp4.OptRebindingTime,
}

// reserved are options the daemon controls; configurations may not
// provide them.
var reserved = map[uint8]string{
	dhcp4.OptOverload:       "is used by the server only",
	dhcp4.OptMessageType:    "is set by the protocol",
	dhcp4.OptServerID:       "is set by the protocol",
	dhcp4.OptParamRequest:   "is built from ipam.request",
	dhcp4.OptMaxMessageSize: "is set from the interface MTU",
	dhcp4.OptClientID:       "identifies the lease and is derived from the container ID, network and interface",
}

type wireRequest struct {
	Option      string `json:"option"`
	SkipDefault bool   `json:"skipDefault"`
}

type wireProvide struct {
	Option  string `json:"option"`
	Value   string `json:"value"`
	FromArg string `json:"fromArg"`
}

type wireIPAM struct {
	Type             string        `json:"type"`
	DaemonSocketPath string        `json:"daemonSocketPath"`
	Request          []wireRequest `json:"request"`
	Provide          []wireProvide `json:"provide"`
	Priority         int           `json:"priority"`
}

type wireConf struct {
	CNIVersion string         `json:"cniVersion"`
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	IPAM       *wireIPAM      `json:"ipam"`
	PrevResult map[string]any `json:"prevResult"`
}

// Provide is an option the client sends: a fixed value, or the value of a
// CNI_ARGS key (falling back to the fixed value when the key is absent).
type Provide struct {
	Def     dhcp4.Def
	Value   []byte // encoded fixed value; nil when none
	FromArg string
	Field   string
}

// Config is the validated configuration.
type Config struct {
	Network    string
	CNIVersion string
	SocketPath string
	// Params is the parameter request list sent to servers.
	Params   []uint8
	Provide  []Provide
	Priority int
	// PrevResult is the configuration's prevResult, nil when absent.
	PrevResult *current.Result
}

// ParseConfig decodes and validates stdin, reporting every problem at once
// with its field path.
func ParseConfig(stdin []byte) (*Config, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	pfx := "ipam."
	if w.IPAM == nil && w.Type == "dhcp" {
		// Run directly: the top level is the ipam section.
		var top wireIPAM
		if err := pluginmain.DecodeConf(stdin, &top); err != nil {
			return nil, err
		}
		w.IPAM, pfx = &top, ""
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	if w.IPAM == nil {
		fe.Add("ipam", "missing (the dhcp plugin is configured in the ipam section)")
		return nil, fe.Err()
	}
	cv := w.CNIVersion
	if cv == "" {
		cv = "0.1.0"
	}
	c := &Config{Network: w.Name, CNIVersion: cv, SocketPath: w.IPAM.DaemonSocketPath, Priority: w.IPAM.Priority}
	if c.SocketPath == "" {
		c.SocketPath = DefaultSocketPath
	} else if !filepath.IsAbs(c.SocketPath) {
		fe.Add(pfx+"daemonSocketPath", "%q is not an absolute path", c.SocketPath)
	} else if len(c.SocketPath) > 107 {
		fe.Add(pfx+"daemonSocketPath", "%d bytes is longer than a unix socket path may be (107)", len(c.SocketPath))
	}
	if c.Priority < 0 {
		fe.Add(pfx+"priority", "%d is negative", c.Priority)
	}

	skip := false
	var asked []uint8
	for i, r := range w.IPAM.Request {
		f := pluginmain.Idx(pfx+"request", i)
		skip = skip || r.SkipDefault
		if r.Option == "" {
			continue // an entry may carry only skipDefault
		}
		d, ok := dhcp4.Lookup(r.Option)
		if !ok {
			fe.Add(f+".option", "%q is not a DHCP option name or a code 1..254", r.Option)
			continue
		}
		asked = append(asked, d.Code)
	}
	if !skip {
		c.Params = append(c.Params, DefaultParams...)
	}
	for _, code := range asked {
		if !containsCode(c.Params, code) {
			c.Params = append(c.Params, code)
		}
	}

	seen := map[uint8]string{}
	for i, p := range w.IPAM.Provide {
		f := pluginmain.Idx(pfx+"provide", i)
		if p.Option == "" {
			fe.Add(f+".option", "missing (an option name such as \"host-name\", or a code)")
			continue
		}
		d, ok := dhcp4.Lookup(p.Option)
		if !ok {
			fe.Add(f+".option", "%q is not a DHCP option name or a code 1..254", p.Option)
			continue
		}
		if why, bad := reserved[d.Code]; bad {
			fe.Add(f+".option", "%s (%d) cannot be provided: it %s", d.Name, d.Code, why)
			continue
		}
		if prev, dup := seen[d.Code]; dup {
			fe.Add(f+".option", "%s is already provided by %s", d.Name, prev)
			continue
		}
		seen[d.Code] = f
		pv := Provide{Def: d, FromArg: p.FromArg, Field: f}
		if p.Value == "" && p.FromArg == "" {
			fe.Add(f, "give a value or fromArg (a CNI_ARGS key such as K8S_POD_NAME)")
			continue
		}
		if p.Value != "" {
			v, err := dhcp4.EncodeValue(d.Kind, p.Value)
			switch {
			case err != nil:
				fe.Add(f+".value", "%s wants %s: %v", d.Name, d.Kind, err)
				continue
			case len(v) > 255*4:
				fe.Add(f+".value", "%d bytes is too long", len(v))
				continue
			}
			pv.Value = v
		}
		c.Provide = append(c.Provide, pv)
	}
	if err := fe.Err(); err != nil {
		return nil, err
	}
	prev, err := pluginmain.RawPrevResult(w.CNIVersion, w.PrevResult)
	if err != nil {
		return nil, err
	}
	c.PrevResult = prev
	return c, nil
}

// ProvidedOptions resolves the provide entries against CNI_ARGS.
func (c *Config) ProvidedOptions(args pluginmain.CNIArgs) (dhcp4.Options, error) {
	var out dhcp4.Options
	for _, p := range c.Provide {
		v := p.Value
		if p.FromArg != "" {
			if s := args.Get(p.FromArg); s != "" {
				enc, err := dhcp4.EncodeValue(p.Def.Kind, s)
				if err != nil {
					return nil, pluginmain.Errorf(pluginmain.CodeInvalidEnv, "CNI_ARGS %s (for %s.fromArg, option %s): %v", p.FromArg, p.Field, p.Def.Name, err)
				}
				if len(enc) > 255*4 {
					return nil, pluginmain.Errorf(pluginmain.CodeInvalidEnv, "CNI_ARGS %s (for %s.fromArg): %d bytes is too long", p.FromArg, p.Field, len(enc))
				}
				v = enc
			}
		}
		if v != nil {
			out = append(out, dhcp4.Option{Code: p.Def.Code, Data: v})
		}
	}
	return out, nil
}

func containsCode(l []uint8, c uint8) bool {
	for _, x := range l {
		if x == c {
			return true
		}
	}
	return false
}

// clientID derives the client identifier (option 61) of an attachment:
// type 0 (not a hardware address) followed by
// "<containerID>/<network>/<ifName>", which identifies the lease to the
// server across renewals and restarts. Identifiers that would exceed the
// option's 255 bytes are shortened, keeping a hash of the whole.
func clientID(containerID, network, ifName string) []byte {
	id := fmt.Sprintf("%s/%s/%s", containerID, network, ifName)
	if len(id) > 254 {
		id = id[:254-17] + "~" + shortHash(id)
	}
	return append([]byte{0}, id...)
}
