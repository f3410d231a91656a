package firewall

import (
	"context"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/ipcfg"
	"linen.dev/linen/internal/nft"
	"linen.dev/linen/internal/plugins/ipmasq"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// Plugin returns the firewall plugin.
func Plugin() *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:   "firewall",
		About:  "linen firewall: pods' forwarded traffic through the node's packet filter, ingress policies, in nftables (chained after an interface plugin)",
		Add:    add,
		Del:    del,
		Check:  check,
		GC:     gc,
		Status: status,
	}
}

func add(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) (types.Result, error) {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return nil, err
	}
	if conf.PrevResult == nil {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: missing: firewall must follow an interface plugin in the chain")
	}
	ips := podIPs(conf.PrevResult, a.IfName)
	if len(ips) == 0 {
		// An L2-only attachment: nothing is forwarded by address.
		env.Log.Debug("firewall: the pod has no IP address; nothing to do", "ifname", a.IfName)
		return conf.PrevResult, nil
	}
	entry := nft.FirewallEntry{Network: conf.Network, ContainerID: a.ContainerID, IfName: a.IfName,
		IPs: ips, Policy: conf.Policy, AdminChain: conf.AdminChain}
	if conf.Policy != nft.IngressOpen {
		if entry.Bridge, err = podBridge(conf.PrevResult); err != nil {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "ingressPolicy: %s: %v", conf.Policy, err)
		}
	}
	if conf.Policy == nft.IngressIsolated {
		if err := requireBridgeFilter(ips, entry.Bridge); err != nil {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "ingressPolicy: isolated: %v", err)
		}
	}
	c, err := ipmasq.Dial()
	if err != nil {
		return nil, err
	}
	defer c.Release(env)
	early, err := nft.AddFirewall(c.Conn, entry)
	if err != nil {
		return nil, err
	}
	for _, ch := range early {
		env.Log.Warn("firewall: a forward chain with a drop policy runs before linen's and may drop the pod's traffic", "chain", ch)
	}
	return conf.PrevResult, nil
}

func del(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		// DEL must not fail on a configuration it can clean up without:
		// the network name is all it needs to find elements by tag.
		name, ok := pluginmain.NetworkName(a.StdinData)
		if !ok {
			return err
		}
		env.Log.Warn("firewall: ignoring invalid configuration on DEL; removing by owner", "error", err)
		conf = &Config{Network: name}
	}
	var known *nft.FirewallEntry
	if conf.PrevResult != nil {
		if ips := podIPs(conf.PrevResult, a.IfName); len(ips) > 0 {
			// Look the elements up by key when every key is known: the
			// addresses and, for the bridge sets, the bridge (ADD's
			// policy may have been another). Otherwise search by tag.
			if br, berr := podBridge(conf.PrevResult); berr == nil {
				known = &nft.FirewallEntry{IPs: ips, Bridge: br}
			} else if conf.Policy == nft.IngressOpen {
				known = &nft.FirewallEntry{IPs: ips}
			}
		}
	}
	c, err := ipmasq.Dial()
	if err != nil {
		return err
	}
	defer c.Release(env)
	return nft.DelFirewall(c.Conn, conf.Network, a.ContainerID, a.IfName, known)
}

func check(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: missing: CHECK needs the result of ADD")
	}
	ips := podIPs(conf.PrevResult, a.IfName)
	if len(ips) == 0 {
		return nil
	}
	entry := nft.FirewallEntry{Network: conf.Network, ContainerID: a.ContainerID, IfName: a.IfName,
		IPs: ips, Policy: conf.Policy, AdminChain: conf.AdminChain}
	if conf.Policy != nft.IngressOpen {
		if entry.Bridge, err = podBridge(conf.PrevResult); err != nil {
			return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "ingressPolicy: %s: %v", conf.Policy, err)
		}
	}
	return ipmasq.Do(env, func(c *ipmasq.Conn) error { return nft.CheckFirewall(c.Conn, entry) })
}

func gc(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	if !conf.HasValid {
		// Without the list every attachment would look stale.
		return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "cni.dev/valid-attachments: missing")
	}
	return ipmasq.Do(env, func(c *ipmasq.Conn) error {
		return nft.GCFirewall(c.Conn, conf.Network, ipmasq.Valid(conf.Valid))
	})
}

func status(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	if _, err := parseConfig(a.StdinData); err != nil {
		return err
	}
	return ipmasq.Status(env, func(c *ipmasq.Conn) error { return c.FirewallUsable() })
}

// podIPs returns the addresses of the sandbox interface ifName in the
// previous result (every address of the result when that interface has
// none), without link-local ones, which are never forwarded.
func podIPs(prev *current.Result, ifName string) []netip.Addr {
	cfgs := ipcfg.IPsFor(prev, ifName)
	if len(cfgs) == 0 {
		cfgs = prev.IPs
	}
	return ipcfg.RoutedAddrs(cfgs)
}
