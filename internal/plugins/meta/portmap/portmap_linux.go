package portmap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/sysctl"
)

// allowLocalnet sets route_localnet=1 on the host interface that leads to
// pod (the bridge for the bridge plugin, the veth for ptp), found by a
// route lookup in the host namespace; when the lookup fails, on the
// host-side interfaces of the previous result.
func allowLocalnet(env *pluginmain.Env, pod netip.Addr, prev *current.Result) error {
	var names []string
	if routes, err := netlink.RouteGet(net.IP(pod.AsSlice())); err == nil && len(routes) > 0 && routes[0].LinkIndex > 0 {
		if l, err := netlink.LinkByIndex(routes[0].LinkIndex); err == nil && l.Attrs().Name != "lo" {
			names = append(names, l.Attrs().Name)
		}
	}
	if len(names) == 0 {
		for _, in := range prev.Interfaces {
			if in != nil && in.Sandbox == "" && in.Name != "" {
				names = append(names, in.Name)
			}
		}
	}
	if len(names) == 0 {
		env.Log.Warn("portmap: no host interface towards the pod; host ports on 127.0.0.1 will not work", "pod", pod)
		return nil
	}
	for _, n := range names {
		err := sysctl.Ensure(sysctl.Link("ipv4", n, "route_localnet"), "1")
		if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
			continue // a result interface that is not in this namespace
		}
		if err != nil {
			return fmt.Errorf("allow localhost host ports through %q: %w", n, err)
		}
	}
	return nil
}
