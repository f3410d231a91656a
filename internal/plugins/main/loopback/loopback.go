// Package loopback is the loopback plugin: it sets the pod's "lo" up on ADD
// and down on DEL. CNI_IFNAME is ignored (the runtime calls the plugin for
// "lo").
package loopback

import (
	"context"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// Plugin returns the loopback plugin.
func Plugin() *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:  "loopback",
		About: "linen loopback: brings the pod's lo up",
		Add:   cmdAdd,
		Del:   cmdDel,
		Check: cmdCheck,
	}
}

func lo(a *pluginmain.Args) (*netlink.Handle, netlink.Link, error) {
	h, err := netlink.NewHandleAt(a.NS.Handle())
	if err != nil {
		return nil, nil, fmt.Errorf("open netlink in %q: %w", a.Netns, err)
	}
	l, err := h.LinkByName("lo")
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("find lo in %s: %w", a.Netns, err)
	}
	return h, l, nil
}

func cmdAdd(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) (types.Result, error) {
	var conf types.NetConf
	if err := pluginmain.DecodeConf(a.StdinData, &conf); err != nil {
		return nil, err
	}
	prev, err := pluginmain.PrevResult(&conf)
	if err != nil {
		return nil, err
	}
	h, l, err := lo(a)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	if err := h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set lo up: %w", err)
	}
	if prev != nil {
		return prev, nil
	}
	addrs, err := nl.Retry(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of lo: %w", err)
	}
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: "lo", Mac: "00:00:00:00:00:00", Sandbox: a.Netns}},
	}
	idx := 0
	for _, ad := range addrs {
		if !ad.IP.IsLoopback() {
			return nil, fmt.Errorf("lo in %s has the non-loopback address %s", a.Netns, ad.IPNet)
		}
		res.IPs = append(res.IPs, &current.IPConfig{Interface: &idx, Address: net.IPNet{IP: ad.IP, Mask: ad.Mask}})
	}
	return res, nil
}

func cmdDel(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) error {
	if a.NS == nil {
		return nil // namespace gone: nothing to undo
	}
	h, l, err := lo(a)
	if err != nil {
		if nl.IsNotFound(err) {
			return nil
		}
		return err
	}
	defer h.Close()
	if err := h.LinkSetDown(l); err != nil && !nl.IsNotFound(err) {
		return fmt.Errorf("set lo down: %w", err)
	}
	return nil
}

func cmdCheck(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) error {
	h, l, err := lo(a)
	if err != nil {
		return err
	}
	defer h.Close()
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("lo in %s is down", a.Netns)
	}
	return nil
}
