package ipvlan

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/plugins/main/sublink"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// Plugin returns the ipvlan plugin.
func Plugin() *pluginmain.Plugin {
	return sublink.Plugin("ipvlan", "linen ipvlan: an ipvlan link on a node device per pod", parseConfig)
}

// spec is the plan the verbs run: an ipvlan in the configured mode. It
// takes no MAC: the interface has the master's.
func spec(common sublink.Common, mode netlink.IPVlanMode) *sublink.Spec {
	return &sublink.Spec{
		Common:  common,
		Kind:    "ipvlan",
		Module:  "ipvlan",
		Chained: true,
		Build: func(la netlink.LinkAttrs) netlink.Link {
			return &netlink.IPVlan{LinkAttrs: la, Mode: mode}
		},
		Verify: func(l netlink.Link) error {
			if m := l.(*netlink.IPVlan).Mode; m != mode {
				return fmt.Errorf("ipvlan mode is %s, the configuration says %s", modeName(m), modeName(mode))
			}
			return nil
		},
	}
}
