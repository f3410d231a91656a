package pluginmain

import "net"

// MACSource is one place a requested MAC address may come from.
type MACSource struct {
	Field string // "runtimeConfig.mac", for messages
	Value string // "" when the place sets none
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
func (w *WireMAC) Sources(cniArgs CNIArgs, staticField, staticValue string) []MACSource {
	var out []MACSource
	if w.RuntimeConfig != nil {
		out = append(out, MACSource{Field: "runtimeConfig.mac", Value: w.RuntimeConfig.MAC})
	}
	if w.Args != nil && w.Args.CNI != nil {
		out = append(out, MACSource{Field: "args.cni.mac", Value: w.Args.CNI.MAC})
	}
	out = append(out, MACSource{Field: "CNI_ARGS MAC", Value: cniArgs.Get("MAC")})
	if staticField != "" {
		out = append(out, MACSource{Field: staticField, Value: staticValue})
	}
	return out
}

// RequestedMAC picks the requested MAC address from sources, highest
// precedence first, and validates it: a unicast Ethernet address other
// than all zeros. A bad address is recorded in fe under its source's field
// (a lower source does not stand in for it). It returns the address and
// the field it came from, or nil and "" when no source sets a valid one.
func RequestedMAC(fe *FieldErrors, sources ...MACSource) (net.HardwareAddr, string) {
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
		case isZeroMAC(hw):
			fe.Add(s.Field, "%q is the all-zero address", s.Value)
		default:
			return hw, s.Field
		}
		return nil, ""
	}
	return nil, ""
}

func isZeroMAC(hw net.HardwareAddr) bool {
	for _, b := range hw {
		if b != 0 {
			return false
		}
	}
	return true
}
