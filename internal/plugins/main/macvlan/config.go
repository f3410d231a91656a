package macvlan

import (
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/plugins/main/sublink"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// wireConf is the configuration as it arrives on stdin.
type wireConf struct {
	sublink.Wire
	pluginmain.WireMAC
	Mode       string `json:"mode,omitempty"`
	MAC        string `json:"mac,omitempty"`
	BCQueueLen *int64 `json:"bcqueuelen,omitempty"`
}

// modes maps the configuration's mode names to the kernel's.
var modes = map[string]netlink.MacvlanMode{
	"bridge":   netlink.MACVLAN_MODE_BRIDGE,
	"private":  netlink.MACVLAN_MODE_PRIVATE,
	"vepa":     netlink.MACVLAN_MODE_VEPA,
	"passthru": netlink.MACVLAN_MODE_PASSTHRU,
}

func modeName(m netlink.MacvlanMode) string {
	for n, v := range modes {
		if v == m {
			return n
		}
	}
	if m == netlink.MACVLAN_MODE_SOURCE {
		return "source"
	}
	return fmt.Sprintf("mode %d", m)
}

// Config is the validated configuration: the shared part and the kind's
// own settings.
type Config struct {
	Mode       netlink.MacvlanMode
	BCQueueLen uint32 // 0: the kernel's default
}

// parseConfig decodes and validates stdin with CNI_ARGS, reporting every
// problem at once, and returns the plan for the verbs.
func parseConfig(stdin []byte, cniArgs string) (*sublink.Spec, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	args, err := pluginmain.ParseCNIArgs(cniArgs)
	if err != nil {
		return nil, err
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	common := w.Validate(fe, false)
	c := Config{Mode: netlink.MACVLAN_MODE_BRIDGE}
	switch m := strings.ToLower(w.Mode); {
	case m == "":
	case m == "source":
		fe.Add("mode", "\"source\" is not offered: a source-mode macvlan only receives from a list of sender MACs, which does not make a pod interface (want bridge, private, vepa or passthru)")
	default:
		mode, ok := modes[m]
		if !ok {
			fe.Add("mode", "%q is not a macvlan mode (want bridge, private, vepa or passthru)", w.Mode)
		}
		c.Mode = mode
	}
	if w.BCQueueLen != nil {
		if q := *w.BCQueueLen; q < 0 || q > 1<<32-1 {
			fe.Add("bcqueuelen", "%d is outside 0..4294967295", q)
		} else {
			c.BCQueueLen = uint32(q)
		}
	}
	fields := fe.Len()
	mac, field := pluginmain.RequestedMAC(fe, w.Sources(args, "mac", w.MAC)...)
	if mac != nil && c.Mode == netlink.MACVLAN_MODE_PASSTHRU && fe.Len() == fields {
		fe.Add(field, "cannot be combined with mode passthru: a passthru interface takes the master's MAC, and changing it would change the master's")
	}
	if err := sublink.Finish(fe, &w.Wire, &common); err != nil {
		return nil, err
	}
	return spec(common, c, mac), nil
}
