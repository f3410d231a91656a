package ipvlan

import (
	"strings"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/plugins/main/sublink"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// wireConf is the configuration as it arrives on stdin.
type wireConf struct {
	sublink.Wire
	Mode string `json:"mode,omitempty"`
}

// modes maps the configuration's mode names to the kernel's.
var modes = map[string]netlink.IPVlanMode{
	"l2":  netlink.IPVLAN_MODE_L2,
	"l3":  netlink.IPVLAN_MODE_L3,
	"l3s": netlink.IPVLAN_MODE_L3S,
}

func modeName(m netlink.IPVlanMode) string {
	for n, v := range modes {
		if v == m {
			return n
		}
	}
	return "unknown mode"
}

// parseConfig decodes and validates stdin, reporting every problem at
// once, and returns the plan for the verbs. CNI_ARGS carries nothing for
// ipvlan (an ipvlan has no MAC of its own) but must be well formed.
func parseConfig(stdin []byte, cniArgs string) (*sublink.Spec, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	if _, err := pluginmain.ParseCNIArgs(cniArgs); err != nil {
		return nil, err
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	common := w.Validate(fe, false)
	mode := netlink.IPVLAN_MODE_L2
	if w.Mode != "" {
		m, ok := modes[strings.ToLower(w.Mode)]
		if !ok {
			fe.Add("mode", "%q is not an ipvlan mode (want l2, l3 or l3s)", w.Mode)
		}
		mode = m
	}
	if err := sublink.Finish(fe, &w.Wire, &common); err != nil {
		return nil, err
	}
	return spec(common, mode), nil
}
