package sublink

import (
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// Wire holds the configuration keys every stacked-link plugin reads; a
// plugin's wire struct embeds it and adds its own keys.
type Wire struct {
	types.NetConf
	Master          string `json:"master,omitempty"`
	MTU             int    `json:"mtu,omitempty"`
	LinkInContainer bool   `json:"linkInContainer,omitempty"`
}

// Common is the validated configuration the stacked-link plugins share.
type Common struct {
	Network    string
	CNIVersion string
	// Master names the parent device; "" means the interface of the
	// default route of the master's namespace (or, for a plugin that
	// allows it, the single interface of prevResult).
	Master string
	// MTU of the pod interface, 0 for the master's.
	MTU int
	// LinkInContainer: the master lives in the pod's namespace.
	LinkInContainer bool
	IPAMType        string
	DNS             types.DNS
	PrevResult      *current.Result
}

// Validate checks the shared keys, recording problems in fe, and returns
// the domain values. masterRequired makes a missing master an error.
func (w *Wire) Validate(fe *pluginmain.FieldErrors, masterRequired bool) Common {
	c := Common{
		Network: w.Name, CNIVersion: w.CNIVersion, Master: w.Master, MTU: w.MTU,
		LinkInContainer: w.LinkInContainer, IPAMType: w.IPAM.Type, DNS: w.DNS,
	}
	switch {
	case w.Master == "" && masterRequired:
		fe.Add("master", "missing: name the device the interface is stacked on")
	case w.Master != "":
		if why := pluginmain.ValidateIfName(w.Master); why != "" {
			fe.Add("master", "%q %s", w.Master, why)
		}
	}
	if w.MTU != 0 && (w.MTU < 68 || w.MTU > 65535) {
		fe.Add("mtu", "%d is outside 68..65535", w.MTU)
	}
	return c
}

// MACSource is one place a requested MAC address may come from.
type MACSource struct {
	Field string // "runtimeConfig.mac", for messages
	Value string
}

// ParseMAC picks the requested MAC address from sources, highest precedence
// first, and validates it: a unicast Ethernet address. It returns nil when
// no source sets one.
func ParseMAC(fe *pluginmain.FieldErrors, sources ...MACSource) net.HardwareAddr {
	for _, s := range sources {
		if s.Value == "" {
			continue
		}
		hw, err := net.ParseMAC(s.Value)
		switch {
		case err != nil || len(hw) != 6:
			fe.Add(s.Field, "%q is not an Ethernet MAC address", s.Value)
		case hw[0]&1 == 1:
			fe.Add(s.Field, "%q is a multicast address", s.Value)
		case isZero(hw):
			fe.Add(s.Field, "%q is the all-zero address", s.Value)
		default:
			return hw
		}
		return nil
	}
	return nil
}

func isZero(hw net.HardwareAddr) bool {
	for _, b := range hw {
		if b != 0 {
			return false
		}
	}
	return true
}

// WireMAC holds the places besides CNI_ARGS where the reference plugins
// accept a requested MAC: the mac capability and args.cni.mac.
type WireMAC struct {
	Args *struct {
		CNI *struct {
			MAC string `json:"mac,omitempty"`
		} `json:"cni,omitempty"`
	} `json:"args,omitempty"`
	RuntimeConfig *struct {
		MAC string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// Sources lists the MAC sources in precedence order: runtimeConfig.mac,
// args.cni.mac, CNI_ARGS MAC, then the configuration's own key (staticField,
// staticValue; empty when the plugin has none).
func (w *WireMAC) Sources(cniArgs pluginmain.CNIArgs, staticField, staticValue string) []MACSource {
	var out []MACSource
	if w.RuntimeConfig != nil {
		out = append(out, MACSource{"runtimeConfig.mac", w.RuntimeConfig.MAC})
	}
	if w.Args != nil && w.Args.CNI != nil {
		out = append(out, MACSource{"args.cni.mac", w.Args.CNI.MAC})
	}
	out = append(out, MACSource{"CNI_ARGS MAC", cniArgs.Get("MAC")})
	if staticField != "" {
		out = append(out, MACSource{staticField, staticValue})
	}
	return out
}

// Finish turns collected problems into the CNI error, or decodes the
// previous result into c.
func Finish(fe *pluginmain.FieldErrors, w *Wire, c *Common) error {
	if err := fe.Err(); err != nil {
		return err
	}
	prev, err := pluginmain.PrevResult(&w.NetConf)
	if err != nil {
		return err
	}
	c.PrevResult = prev
	return nil
}
