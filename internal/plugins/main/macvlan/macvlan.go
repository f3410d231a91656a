package macvlan

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/plugins/main/sublink"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// Plugin returns the macvlan plugin.
func Plugin() *pluginmain.Plugin {
	return sublink.Plugin("macvlan", "linen macvlan: a macvlan link on a node device per pod", parseConfig)
}

// spec is the plan the verbs run: a macvlan in the configured mode.
func spec(common sublink.Common, c Config, mac net.HardwareAddr) *sublink.Spec {
	return &sublink.Spec{
		Common: common,
		Kind:   "macvlan",
		Module: "macvlan",
		MAC:    mac,
		Build: func(la netlink.LinkAttrs) netlink.Link {
			return &netlink.Macvlan{LinkAttrs: la, Mode: c.Mode, BCQueueLen: c.BCQueueLen}
		},
		Verify: func(l netlink.Link) error {
			m := l.(*netlink.Macvlan)
			if m.Mode != c.Mode {
				return fmt.Errorf("macvlan mode is %s, the configuration says %s", modeName(m.Mode), modeName(c.Mode))
			}
			if c.BCQueueLen != 0 && m.BCQueueLen != c.BCQueueLen {
				return fmt.Errorf("bcqueuelen is %d, the configuration says %d", m.BCQueueLen, c.BCQueueLen)
			}
			return nil
		},
		Explain: func(err error, master string) error {
			if errors.Is(err, unix.EINVAL) {
				if c.Mode == netlink.MACVLAN_MODE_PASSTHRU {
					return fmt.Errorf("create passthru macvlan on %q: the kernel refused it; a master takes a passthru macvlan only when it has no other macvlan: %w", master, err)
				}
				return fmt.Errorf("create macvlan on %q: the kernel refused it; the master must be an Ethernet device without a passthru macvlan: %w", master, err)
			}
			return nil
		},
	}
}
