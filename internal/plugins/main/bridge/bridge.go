package bridge

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/ipcfg"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/sysctl"
)

// Plugin returns the bridge plugin.
func Plugin() *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:   "bridge",
		About:  "linen bridge: a veth per pod on a Linux bridge",
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}
}

func cmdAdd(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) (_ types.Result, err error) {
	conf, err := parseConfig(a.StdinData, a.Args)
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

	// Step timings, logged at debug level (LINEN_LOG=debug).
	var steps []any
	last := time.Now()
	mark := func(name string) {
		now := time.Now()
		steps = append(steps, name, now.Sub(last))
		last = now
	}
	defer func() { env.Log.Debug("bridge ADD", steps...) }()
	br, err := ensureBridge(host, conf)
	mark("bridge")
	if err != nil {
		return nil, err
	}

	hostVeth, err := nl.CreateVeth(host, pod, nl.Veth{
		PodNS: a.NS, PodIf: a.IfName, PodMAC: conf.MAC, MTU: conf.MTU,
		Master: br.Attrs().Index, HostUp: true, HostNoIPv6: true,
	})
	if err != nil {
		if errors.Is(err, nl.ErrPodIfExists) {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidEnv, "CNI_IFNAME: interface %q already exists in %s", a.IfName, a.Netns)
		}
		return nil, err
	}
	undo.Push(func() { _ = host.LinkDel(hostVeth) })
	if err := setupPort(host, hostVeth, conf); err != nil {
		return nil, err
	}
	podLink, err := pod.LinkByName(a.IfName)
	if err != nil {
		return nil, fmt.Errorf("find %q in %s: %w", a.IfName, a.Netns, err)
	}

	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: br.Attrs().Name, Mac: br.Attrs().HardwareAddr.String()},
			{Name: hostVeth.Attrs().Name, Mac: hostVeth.Attrs().HardwareAddr.String()},
			{Name: a.IfName, Mac: podLink.Attrs().HardwareAddr.String(), Sandbox: a.Netns},
		},
	}
	if conf.MTU > 0 {
		for _, in := range res.Interfaces {
			in.Mtu = conf.MTU
		}
	}

	if (conf.NoContainerIf || conf.IPAMType == "") && conf.MacSpoofChk {
		// Layer 2 only: nothing to masquerade, but the pod's frames are
		// checked all the same.
		undoNft, err := addFilters(a, conf.spoofOnly(), res, hostVeth.Attrs().Name, podLink.Attrs().HardwareAddr)
		if err != nil {
			return nil, err
		}
		undo.Push(undoNft)
	}
	if conf.NoContainerIf {
		// L2 only, interface left down as configured.
		return res, nil
	}
	if conf.IPAMType == "" {
		if err := pod.LinkSetUp(podLink); err != nil {
			return nil, fmt.Errorf("set %q up: %w", a.IfName, err)
		}
		res.DNS = conf.DNS
		return res, nil
	}

	mark("veth")
	ipamRes, err := env.DelegateAdd(ctx, conf.IPAMType, a, a.StdinData)
	mark("ipam")
	if err != nil {
		return nil, err
	}
	undo.Push(func() { _ = env.DelegateDel(ctx, conf.IPAMType, a, a.StdinData) })
	if len(ipamRes.IPs) == 0 {
		return nil, errors.New("IPAM plugin returned no IP addresses")
	}
	podIdx := 2
	for _, ip := range ipamRes.IPs {
		ip.Interface = &podIdx
	}
	res.IPs = ipamRes.IPs
	res.Routes = ipamRes.Routes
	res.DNS = ipamRes.DNS
	if !conf.DNS.IsEmpty() {
		res.DNS = conf.DNS
	}

	// Gateways: IPAM's, or the first host of the subnet.
	for _, ip := range res.IPs {
		if ip.Gateway == nil && conf.IsGateway {
			ip.Gateway = firstHost(ip.Address)
		}
	}
	if conf.IsDefaultGateway {
		addDefaultRoutes(res)
	}

	hasV6 := false
	for _, ip := range res.IPs {
		if ip.Address.IP.To4() == nil {
			hasV6 = true
		}
	}
	// The gateway before the pod's interface comes up: its carrier going
	// up makes the kernel walk every port of the bridge under the global
	// rtnetlink lock (~0.4 ms at 300 ports), and every rtnetlink request
	// made after that waits for it.
	if conf.IsGateway {
		gw := br
		if conf.Vlan != 0 {
			// The gateway of a VLAN network lives on a VLAN interface
			// of the bridge, "<bridge>.<vlan>".
			if gw, err = ensureVlanGateway(host, br, conf.Vlan); err != nil {
				return nil, err
			}
		}
		if err := ensureGateways(host, gw, res.IPs, conf.ForceAddress); err != nil {
			return nil, err
		}
		if err := enableForwarding(res.IPs); err != nil {
			return nil, err
		}
	}

	mark("gateway")
	if !hasV6 {
		// An IPv4-only pod gets no IPv6 link-local address: its
		// duplicate address detection, MLD reports and router
		// solicitations would be flooded to every port of the bridge,
		// work for every other pod on the node at each pod start.
		if err := nl.NoIPv6LinkLocal(pod, podLink); err != nil {
			return nil, err
		}
	}
	if err := a.NS.Do(func() error { return podSysctls(podLink.Attrs().Index, a.IfName, hasV6, conf.EnableDAD) }); err != nil {
		return nil, err
	}
	mark("sysctl")
	if err := ipcfg.Configure(pod, a.NS, podLink, res.IPs, res.Routes, ipcfg.Options{DAD: conf.EnableDAD}); err != nil {
		return nil, err
	}
	mark("addresses")

	if conf.IPMasq || conf.MacSpoofChk {
		undoNft, err := addFilters(a, conf, res, hostVeth.Attrs().Name, podLink.Attrs().HardwareAddr)
		if err != nil {
			return nil, err
		}
		undo.Push(undoNft)
	}

	mark("netfilter")
	// Refresh the bridge's MAC: it may change when the first port joins.
	if l, lerr := host.LinkByIndex(br.Attrs().Index); lerr == nil {
		res.Interfaces[0].Mac = l.Attrs().HardwareAddr.String()
	}
	return res, nil
}

// ensureBridge finds or creates the bridge, configured as the network wants.
func ensureBridge(h *netlink.Handle, conf *Config) (netlink.Link, error) {
	l, err := h.LinkByName(conf.Bridge)
	if err == nil {
		if _, ok := l.(*netlink.Bridge); !ok {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "bridge: %q exists and is a %s, not a bridge", conf.Bridge, l.Type())
		}
		return l, fixBridge(h, l, conf)
	}
	if !nl.IsNotFound(err) {
		return nil, fmt.Errorf("find bridge %q: %w", conf.Bridge, err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = conf.Bridge
	la.MTU = conf.MTU
	la.Flags = net.FlagUp
	// A fixed MAC keeps the bridge's address from following its ports.
	la.HardwareAddr = randomMAC()
	// Multicast snooping off unless asked for: a pod bridge has no
	// querier, so what snooping learns from unsolicited reports expires
	// after the membership interval and the traffic floods again, and
	// while it is on every port coming up makes the kernel restart the
	// snooping timers of every port (br_multicast_enable_port over the
	// whole port list), a cost each pod attach pays per pod present.
	snoop := conf.McastSnooping != nil && *conf.McastSnooping
	br := &netlink.Bridge{LinkAttrs: la, MulticastSnooping: &snoop}
	if conf.Vlan != 0 || len(conf.Trunk) > 0 {
		on := true
		br.VlanFiltering = &on
	}
	if err := h.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
		if br.VlanFiltering != nil && errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("create bridge %q with VLAN filtering (vlan, vlanTrunk): the kernel's bridge lacks VLAN filtering: %w", conf.Bridge, err)
		}
		return nil, fmt.Errorf("create bridge %q: %w", conf.Bridge, err)
	}
	l, err = h.LinkByName(conf.Bridge)
	if err != nil {
		return nil, fmt.Errorf("find bridge %q: %w", conf.Bridge, err)
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "bridge: %q exists and is a %s, not a bridge", conf.Bridge, l.Type())
	}
	return l, fixBridge(h, l, conf)
}

// fixBridge brings an existing bridge to what the configuration needs,
// touching only what differs.
func fixBridge(h *netlink.Handle, l netlink.Link, conf *Config) error {
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set bridge %q up: %w", conf.Bridge, err)
		}
	}
	if conf.Promisc && l.Attrs().Promisc == 0 {
		if err := h.SetPromiscOn(l); err != nil {
			return fmt.Errorf("set bridge %q promiscuous: %w", conf.Bridge, err)
		}
	}
	br := l.(*netlink.Bridge)
	if conf.Vlan != 0 || len(conf.Trunk) > 0 {
		if br.VlanFiltering == nil || !*br.VlanFiltering {
			if err := h.BridgeSetVlanFiltering(l, true); err != nil {
				return fmt.Errorf("enable VLAN filtering on %q: %w", conf.Bridge, err)
			}
		}
	}
	return nil
}

// ensureVlanGateway finds or creates the VLAN interface "<bridge>.<vid>" on
// the bridge and makes the bridge itself a tagged member of the VLAN, so
// that frames of the VLAN reach it. It needs the kernel's 8021q support.
func ensureVlanGateway(h *netlink.Handle, br netlink.Link, vid int) (netlink.Link, error) {
	name := fmt.Sprintf("%s.%d", br.Attrs().Name, vid)
	if len(name) > 15 {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "vlan: gateway interface name %q would be longer than 15 bytes", name)
	}
	if err := h.BridgeVlanAdd(br, uint16(vid), false, false, true, false); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("add VLAN %d to bridge %q: %w", vid, br.Attrs().Name, err)
	}
	if l, err := h.LinkByName(name); err == nil {
		if l.Attrs().Flags&net.FlagUp == 0 {
			if err := h.LinkSetUp(l); err != nil {
				return nil, fmt.Errorf("set %q up: %w", name, err)
			}
		}
		return l, nil
	}
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.ParentIndex = br.Attrs().Index
	la.Flags = net.FlagUp
	if err := h.LinkAdd(&netlink.Vlan{LinkAttrs: la, VlanId: vid}); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create VLAN gateway interface %q (needs the 8021q module): %w", name, err)
	}
	return h.LinkByName(name)
}

// setupPort applies the per-port bridge options to the host veth.
func setupPort(h *netlink.Handle, port netlink.Link, conf *Config) error {
	name := port.Attrs().Name
	if conf.Hairpin {
		if err := h.LinkSetHairpin(port, true); err != nil {
			return fmt.Errorf("set hairpin on %q: %w", name, err)
		}
	}
	if conf.PortIsolation {
		if err := h.LinkSetIsolated(port, true); err != nil {
			return fmt.Errorf("isolate port %q: %w", name, err)
		}
	}
	if conf.Vlan == 0 && len(conf.Trunk) == 0 {
		return nil
	}
	if !conf.PreserveDefault {
		if err := h.BridgeVlanDel(port, 1, true, true, false, true); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("remove default VLAN from %q: %w", name, err)
		}
	}
	if conf.Vlan != 0 {
		if err := h.BridgeVlanAdd(port, uint16(conf.Vlan), true, true, false, true); err != nil {
			return fmt.Errorf("add VLAN %d to %q: %w", conf.Vlan, name, err)
		}
	} else if !conf.PreserveDefault {
		// A trunk without an access VLAN carries untagged frames on VLAN 1.
		if err := h.BridgeVlanAdd(port, 1, true, true, false, true); err != nil {
			return fmt.Errorf("add native VLAN 1 to %q: %w", name, err)
		}
	}
	for _, v := range conf.Trunk {
		if v == conf.Vlan {
			continue
		}
		if err := h.BridgeVlanAdd(port, uint16(v), false, false, false, true); err != nil {
			return fmt.Errorf("add trunk VLAN %d to %q: %w", v, name, err)
		}
	}
	return nil
}

// podSysctls runs inside the pod namespace.
func podSysctls(ifIndex int, ifName string, v6, dad bool) error {
	// Through netlink: the first /proc/sys/net path walk in a new
	// namespace costs O(namespaces on the node) (see nl.IPv4DevConf).
	if err := nl.SetIPv4DevConf(ifIndex, nl.DevConfArpNotify, 1); err != nil {
		return err
	}
	if !v6 {
		return nil
	}
	if dad {
		if err := sysctl.Ensure(sysctl.Link("ipv6", ifName, "enhanced_dad"), "1"); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		return nil
	}
	if err := sysctl.Ensure(sysctl.Link("ipv6", ifName, "accept_dad"), "0"); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// ensureGateways puts each gateway address, with its subnet prefix, on the
// bridge. An address of the same family that overlaps the subnet but is not
// the gateway is an error unless forceAddress replaces it; addresses of
// unrelated subnets stay (several networks may share one bridge).
//
// The common case — the gateway is already there — costs one request: the
// add answers EEXIST. Only a gateway that was missing leads to listing the
// bridge's addresses (a dump of every address in the namespace, which
// grows with the number of pods) to look for a conflicting one.
func ensureGateways(h *netlink.Handle, br netlink.Link, ips []*current.IPConfig, force bool) error {
	name := br.Attrs().Name
	for _, ip := range ips {
		if ip.Gateway == nil {
			continue
		}
		want := &net.IPNet{IP: ip.Gateway, Mask: ip.Address.Mask}
		addr := &netlink.Addr{IPNet: want}
		if want.IP.To4() == nil {
			addr.Flags = unix.IFA_F_NODAD
		}
		// The conflict check runs also when the gateway was there
		// already: a concurrent first ADD may have just added it and be
		// about to take it back on finding a conflict, which this ADD
		// must then report too rather than succeed without a gateway.
		err := h.AddrAdd(br, addr)
		added := err == nil
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add gateway %s to %q: %w", want, name, err)
		}
		have, err := nl.Retry(func() ([]netlink.Addr, error) { return h.AddrList(br, netlink.FAMILY_ALL) })
		if err != nil {
			return fmt.Errorf("list addresses of %q: %w", name, err)
		}
		for _, a := range have {
			if a.IP.Equal(want.IP) || (a.IP.To4() != nil) != (want.IP.To4() != nil) || a.IP.IsLinkLocalUnicast() {
				continue
			}
			if !a.IPNet.Contains(want.IP) && !want.Contains(a.IP) {
				continue
			}
			if !force {
				if added {
					_ = h.AddrDel(br, addr)
				}
				return fmt.Errorf("bridge %q already has address %s, not gateway %s (set forceAddress to replace it)", name, a.IPNet, want)
			}
			if err := h.AddrDel(br, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("remove %s from %q: %w", a.IPNet, name, err)
			}
			// Deleting a primary address can take its secondaries (ours)
			// with it: put the gateway back.
			if err := h.AddrAdd(br, addr); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add gateway %s to %q: %w", want, name, err)
			}
		}
	}
	return nil
}

func enableForwarding(ips []*current.IPConfig) error {
	v4, v6 := false, false
	for _, ip := range ips {
		if ip.Address.IP.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
	}
	if v4 {
		if err := nl.EnsureIPv4Forwarding(); err != nil {
			return err
		}
	}
	if v6 {
		if err := sysctl.Ensure("net/ipv6/conf/all/forwarding", "1"); err != nil {
			return err
		}
	}
	return nil
}

// addDefaultRoutes adds a default route per family that has a gateway,
// unless the IPAM result already routes that family by default.
func addDefaultRoutes(res *current.Result) {
	for _, ip := range res.IPs {
		if ip.Gateway == nil {
			continue
		}
		v4 := ip.Address.IP.To4() != nil
		dst := net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		if !v4 {
			dst = net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		exists := false
		for _, r := range res.Routes {
			ones, _ := r.Dst.Mask.Size()
			if ones == 0 && (r.Dst.IP.To4() != nil) == v4 {
				exists = true
				break
			}
		}
		if !exists {
			res.Routes = append(res.Routes, &types.Route{Dst: dst, GW: ip.Gateway})
		}
	}
}

func firstHost(n net.IPNet) net.IP {
	base := n.IP.Mask(n.Mask)
	ip := make(net.IP, len(base))
	copy(ip, base)
	for i := len(ip) - 1; i >= 0; i-- {
		ip[i]++
		if ip[i] != 0 {
			break
		}
	}
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

func randomMAC() net.HardwareAddr {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	b[0] = (b[0] | 2) & 0xfe // locally administered, unicast
	return b
}
