package portmap

import (
	"context"
	"errors"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/nft"
	"linen.dev/linen/internal/plugins/ipmasq"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// Plugin returns the portmap plugin.
func Plugin() *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:     "portmap",
		About:    "linen portmap: host port mappings in nftables (chained after an interface plugin)",
		Versions: []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"},
		Add:      add,
		Del:      del,
		Check:    check,
		GC:       gc,
		Status:   status,
	}
}

func add(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) (types.Result, error) {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return nil, err
	}
	if len(conf.Mappings) == 0 {
		if conf.PrevResult != nil {
			return conf.PrevResult, nil
		}
		return &current.Result{CNIVersion: current.ImplementedSpecVersion}, nil
	}
	if conf.PrevResult == nil {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: missing: portmap must follow an interface plugin in the chain")
	}
	entry, err := conf.entry(a.ContainerID, a.IfName)
	if err != nil {
		return nil, err
	}
	if conf.SNAT && entry.IPv4.IsValid() {
		// 127.0.0.1:hostPort leaves through the pod's host interface with
		// a loopback source, which the kernel drops unless allowed there.
		if err := allowLocalnet(env, entry.IPv4.Addr(), conf.PrevResult); err != nil {
			return nil, err
		}
	}
	c, err := ipmasq.Dial()
	if err != nil {
		return nil, err
	}
	defer c.Release(env)
	if err := nft.AddPortMaps(c.Conn, entry); err != nil {
		var pce *nft.PortConflictError
		if errors.As(err, &pce) {
			return nil, conflictError(pce)
		}
		return nil, err
	}
	if n, err := nft.DeleteStaleUDPConntrack(c.Conn, entry); err != nil {
		// The mappings work for new flows; only datagrams of a flow that
		// started before them may still miss the pod until it times out.
		env.Log.Warn("portmap: stale UDP conntrack entries not deleted", "error", err)
	} else if n > 0 {
		env.Log.Debug("portmap: deleted stale UDP conntrack entries", "count", n)
	}
	return conf.PrevResult, nil
}

func del(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	var known *nft.PortMapEntry
	switch {
	case err == nil && conf.HasMappings && len(conf.Mappings) == 0:
		return nil // the runtime says the pod had no host ports
	case err == nil && len(conf.Mappings) > 0 && conf.PrevResult != nil:
		if e, eerr := conf.entry(a.ContainerID, a.IfName); eerr == nil {
			known = &e
		}
	case err != nil:
		// DEL must not fail on a configuration it could clean up without:
		// all it needs is the network name, to find elements by tag.
		name, ok := pluginmain.NetworkName(a.StdinData)
		if !ok {
			return err
		}
		env.Log.Warn("portmap: ignoring invalid configuration on DEL; removing by owner", "error", err)
		conf = &Config{Network: name}
	}
	c, err := ipmasq.Dial()
	if err != nil {
		return err
	}
	defer c.Release(env)
	return nft.DelPortMaps(c.Conn, conf.Network, a.ContainerID, a.IfName, known)
}

func check(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	if len(conf.Mappings) == 0 {
		return nil
	}
	if conf.PrevResult == nil {
		return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: missing: CHECK needs the result of ADD")
	}
	entry, err := conf.entry(a.ContainerID, a.IfName)
	if err != nil {
		return err
	}
	return ipmasq.Do(env, func(c *ipmasq.Conn) error { return nft.CheckPortMaps(c.Conn, entry) })
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
		return nft.GCPortMaps(c.Conn, conf.Network, ipmasq.Valid(conf.Valid))
	})
}

func status(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	if _, err := parseConfig(a.StdinData); err != nil {
		return err
	}
	return ipmasq.Status(env, func(c *ipmasq.Conn) error { return c.NATUsable() })
}
