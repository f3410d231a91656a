package vlan

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/plugins/main/sublink"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// Plugin returns the vlan plugin.
func Plugin() *pluginmain.Plugin {
	return sublink.Plugin("vlan", "linen vlan: an 802.1Q VLAN link on a node device per pod", parseConfig)
}

// spec is the plan the verbs run: an 802.1Q VLAN link with the configured
// id.
func spec(common sublink.Common, id int) *sublink.Spec {
	return &sublink.Spec{
		Common: common,
		Kind:   "vlan",
		Module: "8021q",
		Build: func(la netlink.LinkAttrs) netlink.Link {
			return &netlink.Vlan{LinkAttrs: la, VlanId: id, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}
		},
		Verify: func(l netlink.Link) error {
			v := l.(*netlink.Vlan)
			if v.VlanId != id {
				return fmt.Errorf("VLAN id is %d, the configuration says %d", v.VlanId, id)
			}
			if v.VlanProtocol != netlink.VLAN_PROTOCOL_UNKNOWN && v.VlanProtocol != netlink.VLAN_PROTOCOL_8021Q {
				return fmt.Errorf("VLAN protocol is %s, not 802.1Q", v.VlanProtocol)
			}
			return nil
		},
		Explain: func(err error, master string) error {
			if errors.Is(err, unix.EEXIST) {
				return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "vlanId: VLAN %d already exists on master %q (a master carries each VLAN id once; another pod or the node uses it)", id, master)
			}
			return nil
		},
	}
}
