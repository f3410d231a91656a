// Package registry lists the plugins linked into linen-cni. It is a value
// built on demand, not a table filled by init functions.
package registry

import (
	"linen.dev/linen/internal/plugins/ipam/dhcp"
	"linen.dev/linen/internal/plugins/ipam/hostlocal"
	"linen.dev/linen/internal/plugins/ipam/static"
	"linen.dev/linen/internal/plugins/main/bridge"
	"linen.dev/linen/internal/plugins/main/hostdevice"
	"linen.dev/linen/internal/plugins/main/ipvlan"
	"linen.dev/linen/internal/plugins/main/loopback"
	"linen.dev/linen/internal/plugins/main/macvlan"
	"linen.dev/linen/internal/plugins/main/ptp"
	"linen.dev/linen/internal/plugins/main/vlan"
	"linen.dev/linen/internal/plugins/meta/bandwidth"
	"linen.dev/linen/internal/plugins/meta/firewall"
	"linen.dev/linen/internal/plugins/meta/linen"
	"linen.dev/linen/internal/plugins/meta/portmap"
	"linen.dev/linen/internal/plugins/meta/sbr"
	"linen.dev/linen/internal/plugins/meta/tuning"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// New returns a registry of every plugin.
func New() *pluginmain.Registry {
	meta := linen.Plugin()
	reg := pluginmain.NewRegistry(
		bridge.Plugin(),
		ptp.Plugin(),
		macvlan.Plugin(),
		ipvlan.Plugin(),
		vlan.Plugin(),
		hostdevice.Plugin(),
		loopback.Plugin(),
		hostlocal.Plugin(),
		dhcp.Plugin(),
		static.Plugin(),
		portmap.Plugin(),
		firewall.Plugin(),
		sbr.Plugin(),
		bandwidth.Plugin(),
		tuning.Plugin(),
		meta,
	)
	// flannel's conflists name the meta-plugin "flannel".
	reg.Add("flannel", meta)
	return reg
}
