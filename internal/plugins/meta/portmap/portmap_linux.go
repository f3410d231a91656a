package portmap

import (
	"fmt"
	"net"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// allowLocalnet sets route_localnet=1 on the host interface that leads to
// pod (the bridge for the bridge plugin, the veth for ptp), found by a
// route lookup in the host namespace; when the lookup fails, on the
// host-side interfaces of the previous result.
func allowLocalnet(env *pluginmain.Env, pod netip.Addr, prev *current.Result) error {
	var links []netlink.Link
	if routes, err := netlink.RouteGet(net.IP(pod.AsSlice())); err == nil && len(routes) > 0 && routes[0].LinkIndex > 0 {
		if l, err := netlink.LinkByIndex(routes[0].LinkIndex); err == nil && l.Attrs().Name != "lo" {
			links = append(links, l)
		}
	}
	if len(links) == 0 {
		for _, in := range prev.Interfaces {
			if in != nil && in.Sandbox == "" && in.Name != "" {
				l, err := netlink.LinkByName(in.Name)
				if err != nil {
					continue // a result interface that is not in this namespace
				}
				links = append(links, l)
			}
		}
	}
	if len(links) == 0 {
		env.Log.Warn("portmap: no host interface towards the pod; host ports on 127.0.0.1 will not work", "pod", pod)
		return nil
	}
	// Read and written through netlink: a /proc/sys/net path walk in the
	// host namespace costs O(namespaces on the node) (see nl.IPv4DevConf).
	for _, l := range links {
		idx, name := l.Attrs().Index, l.Attrs().Name
		if v, err := nl.IPv4DevConf(idx, nl.DevConfRouteLocalnet); err == nil && v == 1 {
			continue
		}
		if err := nl.SetIPv4DevConf(idx, nl.DevConfRouteLocalnet, 1); err != nil {
			return fmt.Errorf("allow localhost host ports through %q: %w", name, err)
		}
	}
	return nil
}
