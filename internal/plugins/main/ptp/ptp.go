package ptp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/ipcfg"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/reaper"
	"linen.dev/linen/internal/sysctl"
)

// Plugin returns the ptp plugin.
func Plugin() *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:   "ptp",
		About:  "linen ptp: a routed veth pair per pod",
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}
}

type wireConf struct {
	types.NetConf
	IPMasq        bool   `json:"ipMasq"`
	IPMasqBackend string `json:"ipMasqBackend,omitempty"`
	MTU           int    `json:"mtu"`
}

// Config is the validated configuration.
type Config struct {
	Network    string
	IPMasq     bool
	MTU        int
	IPAMType   string
	DNS        types.DNS
	PrevResult *current.Result
}

func parseConfig(stdin []byte) (*Config, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	if w.IPAM.Type == "" {
		fe.Add("ipam.type", "missing: ptp needs an IPAM plugin")
	}
	if w.MTU != 0 && (w.MTU < 68 || w.MTU > 65535) {
		fe.Add("mtu", "%d is outside 68..65535", w.MTU)
	}
	switch strings.ToLower(w.IPMasqBackend) {
	case "", "nftables":
	case "iptables":
		fe.Add("ipMasqBackend", "\"iptables\" is not supported: linen programs nftables over netlink")
	default:
		fe.Add("ipMasqBackend", "%q is not a backend (want \"nftables\")", w.IPMasqBackend)
	}
	if err := fe.Err(); err != nil {
		return nil, err
	}
	prev, err := pluginmain.PrevResult(&w.NetConf)
	if err != nil {
		return nil, err
	}
	return &Config{Network: w.Name, IPMasq: w.IPMasq, MTU: w.MTU, IPAMType: w.IPAM.Type, DNS: w.DNS, PrevResult: prev}, nil
}

// cmdAdd: IPAM first (the addresses decide the routes), then a veth pair
// whose pod end gets the addresses with "gateway/32 scope link" and the
// subnet routed via the gateway, and whose host end gets the gateway /32
// and a host route to each pod address.
func cmdAdd(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) (_ types.Result, err error) {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return nil, err
	}
	host, pod, closeNL, err := nl.Handles(a.NS)
	if err != nil {
		return nil, err
	}
	defer closeNL()
	// Registered after closeNL, so it runs first, while the handles are open.
	var undo pluginmain.Undo
	defer undo.OnError(&err)
	if _, err := pod.LinkByName(a.IfName); err == nil {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidEnv, "CNI_IFNAME: interface %q already exists in %s", a.IfName, a.Netns)
	}

	ipamRes, err := env.DelegateAdd(ctx, conf.IPAMType, a, a.StdinData)
	if err != nil {
		return nil, err
	}
	undo.Push(func() { _ = env.DelegateDel(ctx, conf.IPAMType, a, a.StdinData) })
	if len(ipamRes.IPs) == 0 {
		return nil, errors.New("IPAM plugin returned no IP addresses")
	}
	for _, ip := range ipamRes.IPs {
		if ip.Gateway == nil {
			return nil, fmt.Errorf("IPAM result: address %s has no gateway; ptp routes through it", ip.Address.String())
		}
	}
	if err := enableForwarding(ipamRes.IPs); err != nil {
		return nil, err
	}

	hostVeth, err := nl.CreateVeth(host, pod, nl.Veth{PodNS: a.NS, PodIf: a.IfName, MTU: conf.MTU, HostUp: true})
	if err != nil {
		if errors.Is(err, nl.ErrPodIfExists) {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidEnv, "CNI_IFNAME: interface %q already exists in %s", a.IfName, a.Netns)
		}
		return nil, err
	}
	undo.Push(func() { _ = host.LinkDel(hostVeth) })
	podLink, err := pod.LinkByName(a.IfName)
	if err != nil {
		return nil, fmt.Errorf("find %q in %s: %w", a.IfName, a.Netns, err)
	}

	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: hostVeth.Attrs().Name, Mac: hostVeth.Attrs().HardwareAddr.String()},
			{Name: a.IfName, Mac: podLink.Attrs().HardwareAddr.String(), Sandbox: a.Netns},
		},
		IPs:    ipamRes.IPs,
		Routes: ipamRes.Routes,
		DNS:    ipamRes.DNS,
	}
	if !conf.DNS.IsEmpty() {
		res.DNS = conf.DNS
	}
	podIdx := 1
	hasV6 := false
	for _, ip := range res.IPs {
		ip.Interface = &podIdx
		if ip.Address.IP.To4() == nil {
			hasV6 = true
		}
	}
	if hasV6 {
		if err := a.NS.Do(func() error {
			for _, k := range []string{"disable_ipv6", "accept_dad"} {
				if err := sysctl.Ensure(sysctl.Link("ipv6", a.IfName, k), "0"); err != nil && !errors.Is(err, unix.ENOENT) {
					return err
				}
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}

	// Pod side: addresses without their prefix route; the subnet goes via
	// the gateway, which is reachable on the link.
	for _, ip := range res.IPs {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.Address.IP, Mask: ip.Address.Mask}, Flags: unix.IFA_F_NOPREFIXROUTE}
		if ip.Address.IP.To4() == nil {
			addr.Flags |= unix.IFA_F_NODAD
		}
		if err := pod.AddrAdd(podLink, addr); err != nil {
			return nil, fmt.Errorf("add address %s to %q: %w", ip.Address.String(), a.IfName, err)
		}
	}
	if err := pod.LinkSetUp(podLink); err != nil {
		return nil, fmt.Errorf("set %q up: %w", a.IfName, err)
	}
	for _, ip := range res.IPs {
		bits := 32
		if ip.Gateway.To4() == nil {
			bits = 128
		}
		idx := podLink.Attrs().Index
		if err := pod.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: &net.IPNet{IP: ip.Gateway, Mask: net.CIDRMask(bits, bits)}, Scope: netlink.SCOPE_LINK, Src: ip.Address.IP}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("add route to gateway %s: %w", ip.Gateway, err)
		}
		subnet := &net.IPNet{IP: ip.Address.IP.Mask(ip.Address.Mask), Mask: ip.Address.Mask}
		if ones, b := subnet.Mask.Size(); ones < b {
			if err := pod.RouteAdd(&netlink.Route{LinkIndex: idx, Dst: subnet, Gw: ip.Gateway, Src: ip.Address.IP}); err != nil && !errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("add route %s via %s: %w", subnet, ip.Gateway, err)
			}
		}
	}
	for _, r := range res.Routes {
		nr := ipcfg.RouteFor(podLink.Attrs().Index, res.IPs, r)
		if err := pod.RouteAdd(nr); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("add route %s: %w", r.Dst.String(), err)
		}
	}

	// Host side: the gateway address (so the host answers ARP/ND for it and
	// has a source address) and a host route to each pod address.
	for _, ip := range res.IPs {
		bits := 32
		if ip.Gateway.To4() == nil {
			bits = 128
		}
		ga := &netlink.Addr{IPNet: &net.IPNet{IP: ip.Gateway, Mask: net.CIDRMask(bits, bits)}, Flags: unix.IFA_F_NOPREFIXROUTE}
		if bits == 128 {
			ga.Flags |= unix.IFA_F_NODAD
		}
		if err := host.AddrAdd(hostVeth, ga); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("add gateway %s to %q: %w", ip.Gateway, hostVeth.Attrs().Name, err)
		}
		if err := host.RouteAdd(&netlink.Route{LinkIndex: hostVeth.Attrs().Index, Dst: &net.IPNet{IP: ip.Address.IP, Mask: net.CIDRMask(bits, bits)}, Scope: netlink.SCOPE_LINK, Src: ip.Gateway}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("add host route to %s: %w", ip.Address.IP, err)
		}
	}

	if conf.IPMasq {
		undoMasq, err := addMasq(a, conf, res)
		if err != nil {
			return nil, err
		}
		undo.Push(undoMasq)
	}
	return res, nil
}

func enableForwarding(ips []*current.IPConfig) error {
	for _, ip := range ips {
		if ip.Address.IP.To4() != nil {
			if err := nl.EnsureIPv4Forwarding(); err != nil {
				return err
			}
			continue
		}
		if err := sysctl.Ensure("net/ipv6/conf/all/forwarding", "1"); err != nil {
			return err
		}
	}
	return nil
}

// cmdDel releases the addresses first (as the reference plugin does), then
// deletes the veth and the masquerade elements; anything already gone is
// fine.
func cmdDel(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		// Not valid (any more): remove what can be found without it;
		// masquerade elements are found by their tag.
		name, ipamType, ok := pluginmain.DelFallback(a.StdinData)
		if !ok {
			return err
		}
		env.Log.Warn("ptp DEL with a configuration that does not validate; removing what can be found", "error", err)
		conf = &Config{Network: name, IPAMType: ipamType, IPMasq: true}
	}
	var pod *netlink.Handle
	var link netlink.Link
	if a.NS != nil {
		pod, err = netlink.NewHandleAt(a.NS.Handle())
		if err != nil {
			return fmt.Errorf("open netlink in %q: %w", a.Netns, err)
		}
		defer pod.Close()
		if l, lerr := pod.LinkByName(a.IfName); lerr == nil {
			link = l
		} else if !nl.IsNotFound(lerr) {
			return fmt.Errorf("find %q in %s: %w", a.IfName, a.Netns, lerr)
		}
	}
	masq, err := openMasq(conf)
	if err != nil {
		return err
	}
	defer masq.close()
	var errs []error
	ipamDel := func() {
		if conf.IPAMType == "" {
			return
		}
		if err := env.DelegateDel(ctx, conf.IPAMType, a, a.StdinData); err != nil {
			errs = append(errs, err)
		}
	}
	// The release normally overlaps the link's deletion; an IPAM plugin
	// that needs the interface for it goes first.
	early := pluginmain.IPAMUsesLink(conf.IPAMType)
	if early {
		ipamDel()
	}
	del := reaper.Begin(a.NS, pod, link, env.Detach, masq.hold())
	if !early {
		ipamDel()
	}
	if err := masq.del(a, conf, link, pod); err != nil {
		errs = append(errs, err)
	}
	if err := del.Finish(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func cmdCheck(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: required for CHECK")
	}
	if err := env.DelegateCheck(ctx, conf.IPAMType, a, a.StdinData); err != nil {
		return err
	}
	res := conf.PrevResult
	pod, err := netlink.NewHandleAt(a.NS.Handle())
	if err != nil {
		return err
	}
	defer pod.Close()
	link, err := pod.LinkByName(a.IfName)
	if err != nil {
		return fmt.Errorf("interface %q in %s: %w", a.IfName, a.Netns, err)
	}
	if _, ok := link.(*netlink.Veth); !ok {
		return fmt.Errorf("interface %q is a %s, not a veth", a.IfName, link.Type())
	}
	ips := ipcfg.IPsFor(res, a.IfName)
	if err := ipcfg.Check(pod, link, ips, res.Routes); err != nil {
		return err
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	for _, in := range res.Interfaces {
		if in.Sandbox != "" {
			continue
		}
		hl, err := host.LinkByName(in.Name)
		if err != nil {
			return fmt.Errorf("host veth %q: %w", in.Name, err)
		}
		if nl.VethPeerIndex(link) != hl.Attrs().Index {
			return fmt.Errorf("interface %q is not the peer of host veth %q", a.IfName, in.Name)
		}
	}
	if conf.IPMasq {
		masq, err := openMasq(conf)
		if err != nil {
			return err
		}
		defer masq.close()
		return masq.check(a, conf, res)
	}
	return nil
}

func cmdGC(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	valid, err := pluginmain.ValidAttachments(a.StdinData)
	if err != nil {
		return err
	}
	var errs []error
	if err := env.DelegateGC(ctx, conf.IPAMType, a, a.StdinData); err != nil {
		errs = append(errs, err)
	}
	if err := gcMasq(conf, valid); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func cmdStatus(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	return env.DelegateStatus(ctx, conf.IPAMType, a, a.StdinData)
}
