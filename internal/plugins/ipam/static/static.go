package static

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// Plugin returns the static IPAM plugin.
func Plugin() *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:   "static",
		About:  "linen static: IPAM from addresses written in the configuration",
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     func(context.Context, *pluginmain.Env, *pluginmain.Args) error { return nil },
		Status: func(context.Context, *pluginmain.Env, *pluginmain.Args) error { return nil },
	}
}

// Result is the abbreviated IPAM result for c.
func Result(c *Config) *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: c.DNS}
	for _, a := range c.Addresses {
		ip := &current.IPConfig{Address: ipNet(a.Prefix)}
		if a.Gateway.IsValid() {
			ip.Gateway = a.Gateway.AsSlice()
		}
		res.IPs = append(res.IPs, ip)
	}
	for _, r := range c.Routes {
		res.Routes = append(res.Routes, r.CNI())
	}
	return res
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func cmdAdd(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) (types.Result, error) {
	c, err := ParseConfig(a.StdinData, a.Args)
	if err != nil {
		return nil, err
	}
	return Result(c), nil
}

// cmdDel has nothing to release: static keeps no state. It does not even
// validate the configuration, so that no DEL can ever fail.
func cmdDel(context.Context, *pluginmain.Env, *pluginmain.Args) error { return nil }

func cmdCheck(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) error {
	c, err := ParseConfig(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	if c.PrevResult == nil {
		return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: missing (CHECK compares the configured addresses with the result of ADD)")
	}
	for _, want := range c.Addresses {
		var found *current.IPConfig
		for _, ip := range c.PrevResult.IPs {
			got, ok := netip.AddrFromSlice(ip.Address.IP)
			ones, bits := ip.Address.Mask.Size()
			if ok && got.Unmap() == want.Prefix.Addr() && ones == want.Prefix.Bits() && bits == want.Prefix.Addr().BitLen() {
				found = ip
				break
			}
		}
		if found == nil {
			return fmt.Errorf("static: %s: address %s is not in prevResult", want.Field, want.Prefix)
		}
		if want.Gateway.IsValid() {
			g, ok := netip.AddrFromSlice(found.Gateway)
			if !ok || g.Unmap() != want.Gateway {
				return fmt.Errorf("static: %s: address %s has gateway %v in prevResult, want %s", want.Field, want.Prefix, found.Gateway, want.Gateway)
			}
		}
	}
	return nil
}
