package static

import (
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"linen.dev/linen/internal/plugins/ipam/hostlocal"
	"linen.dev/linen/internal/plugins/pluginmain"
)

type wireAddress struct {
	Address string `json:"address"`
	Gateway string `json:"gateway,omitempty"`
}

type wireIPAM struct {
	Type      string                `json:"type"`
	Addresses []wireAddress         `json:"addresses"`
	Routes    []hostlocal.WireRoute `json:"routes"`
	DNS       *types.DNS            `json:"dns"`
}

// wireConf is the part of stdin static reads; every other key (the
// delegating plugin's) is ignored.
type wireConf struct {
	CNIVersion    string    `json:"cniVersion"`
	Name          string    `json:"name"`
	Type          string    `json:"type"`
	IPAM          *wireIPAM `json:"ipam"`
	RuntimeConfig *struct {
		IPs []string `json:"ips"`
	} `json:"runtimeConfig"`
	Args *struct {
		CNI *struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
	PrevResult map[string]any `json:"prevResult"`
}

// Address is one interface address: Prefix keeps the host bits
// (10.10.0.1/24). Gateway is the zero Addr when none is set. Field names
// where it came from.
type Address struct {
	Prefix  netip.Prefix
	Gateway netip.Addr
	Field   string
}

// Config is the validated configuration.
type Config struct {
	Network    string
	CNIVersion string
	Addresses  []Address
	Routes     []hostlocal.Route
	DNS        types.DNS
	// PrevResult is the configuration's prevResult, nil when absent.
	PrevResult *current.Result
}

// ParseConfig decodes and validates a static configuration (the whole stdin)
// with CNI_ARGS; every problem is reported at once with its field path.
func ParseConfig(stdin []byte, cniArgs string) (*Config, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	cv := w.CNIVersion
	if cv == "" {
		cv = "0.1.0"
	}
	c := &Config{Network: w.Name, CNIVersion: cv}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	// Run directly rather than delegated to, a static configuration may
	// keep its keys at the top level.
	pfx := "ipam."
	if w.IPAM == nil && w.Type == "static" {
		var top wireIPAM
		if err := pluginmain.DecodeConf(stdin, &top); err != nil {
			return nil, err
		}
		w.IPAM, pfx = &top, ""
	}
	if w.IPAM == nil {
		fe.Add("ipam", "missing (static needs an ipam section with addresses)")
		return nil, fe.Err()
	}
	ca, err := pluginmain.ParseCNIArgs(cniArgs)
	if err != nil {
		return nil, err
	}

	// Addresses: the highest-precedence source that gives any replaces
	// the configured ones.
	type src struct {
		field string
		text  string
		gw    string
	}
	var list []src
	switch {
	case w.RuntimeConfig != nil && len(w.RuntimeConfig.IPs) > 0:
		for i, s := range w.RuntimeConfig.IPs {
			list = append(list, src{field: pluginmain.Idx("runtimeConfig.ips", i), text: s})
		}
	case w.Args != nil && w.Args.CNI != nil && len(w.Args.CNI.IPs) > 0:
		for i, s := range w.Args.CNI.IPs {
			list = append(list, src{field: pluginmain.Idx("args.cni.ips", i), text: s})
		}
	case ca.Get("IP") != "":
		for _, s := range strings.Split(ca.Get("IP"), ",") {
			list = append(list, src{field: "CNI_ARGS IP", text: strings.TrimSpace(s)})
		}
	default:
		for i, a := range w.IPAM.Addresses {
			f := pluginmain.Idx(pfx+"addresses", i)
			list = append(list, src{field: f + ".address", text: a.Address, gw: a.Gateway})
		}
	}
	for _, s := range list {
		field := strings.TrimSuffix(s.field, ".address")
		if s.text == "" {
			fe.Add(s.field, "missing (a CIDR such as 10.10.0.1/24)")
			continue
		}
		p, err := netip.ParsePrefix(s.text)
		if err != nil {
			fe.Add(s.field, "%q is not an address in CIDR notation (such as 10.10.0.1/24)", s.text)
			continue
		}
		if p.Addr().Is4In6() {
			fe.Add(s.field, "%q is an IPv4-mapped IPv6 address; write the IPv4 form", s.text)
			continue
		}
		a := Address{Prefix: p, Field: field}
		if s.gw != "" {
			g, err := netip.ParseAddr(s.gw)
			switch {
			case err != nil || g.Zone() != "":
				fe.Add(field+".gateway", "%q is not an IP address", s.gw)
			case g.Unmap().Is4() != p.Addr().Is4():
				fe.Add(field+".gateway", "%s is %s but the address %s is %s", g, family(g.Unmap()), p, family(p.Addr()))
			default:
				a.Gateway = g.Unmap()
			}
		}
		dup := false
		for _, o := range c.Addresses {
			if o.Prefix.Addr() == p.Addr() {
				fe.Add(s.field, "%s repeats the address of %s", p, o.Field)
				dup = true
			}
		}
		if !dup {
			c.Addresses = append(c.Addresses, a)
		}
	}
	if gws := ca.Get("GATEWAY"); gws != "" {
		for _, s := range strings.Split(gws, ",") {
			s = strings.TrimSpace(s)
			g, err := netip.ParseAddr(s)
			if err != nil || g.Zone() != "" {
				fe.Add("CNI_ARGS GATEWAY", "%q is not an IP address", s)
				continue
			}
			g = g.Unmap()
			used := false
			for i := range c.Addresses {
				if c.Addresses[i].Prefix.Contains(g) {
					c.Addresses[i].Gateway = g
					used = true
				}
			}
			if !used {
				fe.Add("CNI_ARGS GATEWAY", "%s is in none of the addresses' subnets", g)
			}
		}
	}
	if len(list) == 0 {
		fe.Add(pfx+"addresses", "no address (give %saddresses, or runtimeConfig.ips, args.cni.ips or CNI_ARGS IP)", pfx)
	}
	if ok, _ := version.GreaterThanOrEqualTo(cv, "0.3.0"); !ok {
		seen := map[bool]bool{}
		for _, a := range c.Addresses {
			v4 := a.Prefix.Addr().Is4()
			if seen[v4] {
				fe.Add(a.Field, "a second %s address needs cniVersion 0.3.0 or later (this configuration is %s)", family(a.Prefix.Addr()), cv)
			}
			seen[v4] = true
		}
	}
	c.Routes = hostlocal.ParseRoutes(fe, pfx+"routes", w.IPAM.Routes)
	if w.IPAM.DNS != nil {
		c.DNS = *w.IPAM.DNS
		for i, ns := range c.DNS.Nameservers {
			if _, err := netip.ParseAddr(ns); err != nil {
				fe.Add(pluginmain.Idx(pfx+"dns.nameservers", i), "%q is not an IP address", ns)
			}
		}
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

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
