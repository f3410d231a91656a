package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/ipcfg"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/reaper"
)

// cmdDel undoes ADD as far as anything is left: the pod's veth (which takes
// the host end with it), the IPAM reservation, the netfilter elements. It
// succeeds when the namespace, the link or the state is already gone. The
// bridge itself stays: other pods may use it.
func cmdDel(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData, a.Args)
	if err != nil {
		// A configuration that does not validate (any more: a stricter
		// release, a cached configuration edited by hand) must not keep
		// the pod from going: DEL removes what it finds without it.
		lc, ok := delConfig(a.StdinData)
		if !ok {
			return err
		}
		env.Log.Warn("bridge DEL with a configuration that does not validate; removing what can be found", "error", err)
		conf = lc
	}
	var pod *netlink.Handle
	var link netlink.Link
	var podIPs []net.IPNet
	if a.NS != nil {
		pod, err = netlink.NewHandleAt(a.NS.Handle())
		if err != nil {
			return fmt.Errorf("open netlink in %q: %w", a.Netns, err)
		}
		defer pod.Close()
		link, err = pod.LinkByName(a.IfName)
		if err != nil {
			if !nl.IsNotFound(err) {
				return fmt.Errorf("find %q in %s: %w", a.IfName, a.Netns, err)
			}
			link = nil
		}
		if link != nil && !ownLink(link, conf, a.IfName) {
			// Another network's interface of that name (this
			// network's ADD failed on it): not this DEL's to delete.
			env.Log.Warn("bridge DEL leaves an interface that is not this network's", "ifname", a.IfName, "type", link.Type())
			link = nil
		}
		if link != nil && conf.IPMasq && conf.PrevResult == nil {
			// Without a cached result, the interface tells which
			// masquerade entries were ours.
			addrs, _ := nl.Retry(func() ([]netlink.Addr, error) { return pod.AddrList(link, netlink.FAMILY_ALL) })
			for _, ad := range addrs {
				if !ad.IP.IsLinkLocalUnicast() {
					podIPs = append(podIPs, *ad.IPNet)
				}
			}
		}
	}

	filters, err := openFilters(conf)
	if err != nil {
		return err
	}
	defer filters.close()

	var errs []error
	ipamDel := func() {
		if conf.IPAMType != "" {
			if err := env.DelegateDel(ctx, conf.IPAMType, a, a.StdinData); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// The release normally overlaps the link's deletion; an IPAM plugin
	// that needs the interface for it goes first.
	early := pluginmain.IPAMUsesLink(conf.IPAMType)
	if early {
		ipamDel()
	}
	t0 := time.Now()
	del := reaper.Begin(a.NS, pod, link, env.Detach, filters.hold())
	t1 := time.Now()
	if !early {
		ipamDel()
	}
	t2 := time.Now()
	if err := filters.del(a, conf, podIPs); err != nil {
		errs = append(errs, err)
	}
	t3 := time.Now()
	if err := del.Finish(); err != nil {
		errs = append(errs, err)
	}
	env.Log.Debug("bridge DEL", "helper", t1.Sub(t0), "ipam", t2.Sub(t1), "netfilter", t3.Sub(t2), "link", time.Since(t3))
	return errors.Join(errs...)
}

// cmdCheck verifies what ADD set up against the cached result.
func cmdCheck(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: required for CHECK")
	}
	if conf.IPAMType != "" {
		if err := env.DelegateCheck(ctx, conf.IPAMType, a, a.StdinData); err != nil {
			return err
		}
	}
	res := conf.PrevResult
	var podIf, hostIf *current.Interface
	for _, in := range res.Interfaces {
		switch {
		case in.Sandbox != "" && in.Name == a.IfName:
			podIf = in
		case in.Sandbox == "" && in.Name != conf.Bridge && hostIf == nil:
			hostIf = in
		}
	}
	if podIf == nil {
		return fmt.Errorf("prevResult: no interface %q in the sandbox", a.IfName)
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	pod, err := netlink.NewHandleAt(a.NS.Handle())
	if err != nil {
		return err
	}
	defer pod.Close()

	br, err := host.LinkByName(conf.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %q: %w", conf.Bridge, err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("bridge %q is a %s", conf.Bridge, br.Type())
	}
	link, err := pod.LinkByName(a.IfName)
	if err != nil {
		return fmt.Errorf("interface %q in %s: %w", a.IfName, a.Netns, err)
	}
	if _, ok := link.(*netlink.Veth); !ok {
		return fmt.Errorf("interface %q is a %s, not a veth", a.IfName, link.Type())
	}
	if podIf.Mac != "" && podIf.Mac != link.Attrs().HardwareAddr.String() {
		return fmt.Errorf("interface %q has MAC %s, want %s", a.IfName, link.Attrs().HardwareAddr, podIf.Mac)
	}
	if hostIf != nil {
		hl, err := host.LinkByName(hostIf.Name)
		if err != nil {
			return fmt.Errorf("host veth %q: %w", hostIf.Name, err)
		}
		if hl.Attrs().MasterIndex != br.Attrs().Index {
			return fmt.Errorf("host veth %q is not a port of %q", hostIf.Name, conf.Bridge)
		}
		if nl.VethPeerIndex(link) != hl.Attrs().Index {
			return fmt.Errorf("interface %q is not the peer of host veth %q", a.IfName, hostIf.Name)
		}
	}
	if conf.NoContainerIf || conf.IPAMType == "" {
		if !conf.MacSpoofChk {
			return nil
		}
		// Layer 2 only: no addresses to check, the spoof check all the same.
		conf = conf.spoofOnly()
	} else {
		ips := ipcfg.IPsFor(res, a.IfName)
		if err := ipcfg.Check(pod, link, ips, res.Routes); err != nil {
			return err
		}
	}
	filters, err := openFilters(conf)
	if err != nil {
		return err
	}
	defer filters.close()
	return filters.check(a, conf, res, hostIf)
}

// cmdGC forwards GC to IPAM and removes netfilter elements of attachments
// that are no longer valid.
func cmdGC(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseGCConfig(a.StdinData)
	if err != nil {
		return err
	}
	if conf.valid, err = pluginmain.ValidAttachments(a.StdinData); err != nil {
		return err
	}
	var errs []error
	if conf.ipamType != "" {
		if err := env.DelegateGC(ctx, conf.ipamType, a, a.StdinData); err != nil {
			errs = append(errs, err)
		}
	}
	if err := gcFilters(conf); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cmdStatus forwards STATUS to IPAM.
func cmdStatus(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseGCConfig(a.StdinData)
	if err != nil {
		return err
	}
	if conf.ipamType == "" {
		return nil
	}
	return env.DelegateStatus(ctx, conf.ipamType, a, a.StdinData)
}

// delConfig is the configuration of a DEL whose stdin does not validate
// (see pluginmain.DelFallback): masquerade and spoof-check elements are
// looked for whatever the flags said, found by their tag.
func delConfig(stdin []byte) (*Config, bool) {
	name, ipamType, ok := pluginmain.DelFallback(stdin)
	if !ok {
		return nil, false
	}
	return &Config{Network: name, IPAMType: ipamType, IPMasq: true, MacSpoofChk: true}, true
}

// ownLink reports whether link, the pod's interface named CNI_IFNAME, can
// be this network's: a veth whose host end is a port of the network's
// bridge, or on no bridge at all (the bridge was removed). A device of
// another kind, or a veth whose host end is a port of another bridge, is
// another network's: an ADD of this one failed on the name, and the DEL
// that follows must not take the other network's interface. When the
// host end cannot be looked at, the name decides, as before. The usual
// DEL carries the cached result, whose MAC for the interface settles it
// without a look at the host.
func ownLink(link netlink.Link, conf *Config, ifName string) bool {
	if _, ok := link.(*netlink.Veth); !ok {
		return false
	}
	if conf.PrevResult != nil {
		if in := ipcfg.SandboxInterface(conf.PrevResult, ifName); in != nil && strings.EqualFold(in.Mac, link.Attrs().HardwareAddr.String()) {
			return true
		}
	}
	if conf.Bridge == "" {
		return true // a configuration that did not validate names none
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return true
	}
	defer host.Close()
	peer, err := host.LinkByIndex(nl.VethPeerIndex(link))
	if err != nil || peer.Attrs().MasterIndex == 0 {
		return true
	}
	br, err := host.LinkByName(conf.Bridge)
	if err != nil {
		// No such bridge: the host end is a port of another one.
		return !nl.IsNotFound(err)
	}
	return peer.Attrs().MasterIndex == br.Attrs().Index
}
