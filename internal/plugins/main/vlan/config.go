package vlan

import (
	"linen.dev/linen/internal/plugins/main/sublink"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// wireConf is the configuration as it arrives on stdin.
type wireConf struct {
	sublink.Wire
	VlanID *int `json:"vlanId,omitempty"`
}

// parseConfig decodes and validates stdin, reporting every problem at
// once, and returns the plan for the verbs.
func parseConfig(stdin []byte, cniArgs string) (*sublink.Spec, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	if _, err := pluginmain.ParseCNIArgs(cniArgs); err != nil {
		return nil, err
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	common := w.Validate(fe, true)
	id := 0
	switch {
	case w.VlanID == nil:
		fe.Add("vlanId", "missing: the VLAN id (1..4094) the interface tags its frames with")
	case *w.VlanID < 1 || *w.VlanID > 4094:
		fe.Add("vlanId", "%d is outside 1..4094 (0 and 4095 are reserved by 802.1Q)", *w.VlanID)
	default:
		id = *w.VlanID
	}
	if err := sublink.Finish(fe, &w.Wire, &common); err != nil {
		return nil, err
	}
	return spec(common, id), nil
}
