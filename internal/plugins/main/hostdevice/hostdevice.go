package hostdevice

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/ipcfg"
	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/main/sublink"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// Plugin returns the host-device plugin.
func Plugin() *pluginmain.Plugin { return newPlugin("/sys") }

// plugin carries the sysfs root the sysfs selectors are resolved under.
type plugin struct{ sys string }

func newPlugin(sys string) *pluginmain.Plugin {
	p := &plugin{sys: sys}
	return &pluginmain.Plugin{
		Name:   "host-device",
		About:  "linen host-device: moves a node device into the pod and back",
		Add:    p.add,
		Del:    p.del,
		Check:  p.check,
		GC:     p.gc,
		Status: p.status,
	}
}

// add moves the selected device into the pod under CNI_IFNAME and
// addresses it. The record of the device is written before it moves; any
// failure gives the device back as it was and removes the record.
func (p *plugin) add(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) (_ types.Result, err error) {
	conf, err := parseConfig(a.StdinData, a.Args, true)
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

	if err := sublink.ResultVersion(a.ConfVersion, conf.IPAMType != ""); err != nil {
		return nil, err
	}
	if _, lerr := pod.LinkByName(a.IfName); lerr == nil {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidEnv, "CNI_IFNAME: interface %q already exists in %s", a.IfName, a.Netns)
	}
	dev, sd, err := p.find(host, conf.Selector)
	if err != nil {
		return nil, err
	}
	if dev == nil {
		return p.addUserspace(ctx, env, a, conf, sd, &undo)
	}
	if err := refuseDefaultRoute(host, dev, conf.Selector.Field); err != nil {
		return nil, err
	}
	at := dev.Attrs()
	st := &state{
		ContainerID: a.ContainerID, IfName: a.IfName, Netns: a.Netns,
		Name: at.Name, Alias: at.Alias, MTU: at.MTU, Up: at.Flags&net.FlagUp != 0,
	}
	if len(at.HardwareAddr) > 0 {
		st.MAC = at.HardwareAddr.String()
	}
	if sd != nil && sd.pci != "" {
		st.PCI = sd.pci
	} else {
		st.PCI = pciOf(p.sys, at.Name, at.Index)
	}
	if err := saveState(conf.DataDir, conf.Network, st); err != nil {
		return nil, err
	}
	undo.Push(func() { _ = removeState(conf.DataDir, conf.Network, a.ContainerID, a.IfName) })
	// The alias carries the device's name on the node into the pod, where
	// DEL (also the reference plugin's DEL) finds it.
	if err := host.LinkSetAlias(dev, at.Name); err != nil {
		return nil, fmt.Errorf("record the name of %q in its alias: %w", at.Name, err)
	}
	undo.Push(func() {
		if err := p.undoMove(host, pod, a, st); err != nil {
			env.Log.Error("ADD failed and the device could not be given back", "device", st.Name, "error", err)
		}
	})
	if err := setNS(at.Index, a.NS.Fd(), a.IfName); err != nil {
		return nil, explainMove(err, at.Name, a.IfName, a.Netns)
	}
	link, err := pod.LinkByName(a.IfName)
	if err != nil {
		return nil, fmt.Errorf("find %q in %s after the move: %w", a.IfName, a.Netns, err)
	}

	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{
			Name: a.IfName, Mac: link.Attrs().HardwareAddr.String(), Mtu: link.Attrs().MTU, Sandbox: a.Netns, PciID: st.PCI,
		}},
	}
	if err := p.ipam(ctx, env, a, conf, res, &undo); err != nil {
		return nil, err
	}
	hasV6 := false
	for _, ip := range res.IPs {
		if ip.Address.IP.To4() == nil {
			hasV6 = true
		}
	}
	if err := sublink.Representable(res, a.ConfVersion); err != nil {
		return nil, err
	}
	if err := a.NS.Do(func() error { return sublink.Announce(a.IfName, hasV6) }); err != nil {
		return nil, err
	}
	if len(res.IPs) == 0 {
		if err := pod.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set %q up: %w", a.IfName, err)
		}
		return res, nil
	}
	if err := ipcfg.Configure(pod, a.NS, link, res.IPs, res.Routes, ipcfg.Options{}); err != nil {
		return nil, err
	}
	return res, nil
}

// ipam runs the IPAM plugin, if any, into res (every IP on interface 0).
func (p *plugin) ipam(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args, conf *Config, res *current.Result, undo *pluginmain.Undo) error {
	if conf.IPAMType != "" {
		ipamRes, err := env.DelegateAdd(ctx, conf.IPAMType, a, a.StdinData)
		if err != nil {
			return err
		}
		undo.Push(func() { _ = env.DelegateDel(ctx, conf.IPAMType, a, a.StdinData) })
		if len(ipamRes.IPs) == 0 {
			return errors.New("IPAM plugin returned no IP addresses")
		}
		res.IPs, res.Routes, res.DNS = ipamRes.IPs, ipamRes.Routes, ipamRes.DNS
	}
	if !conf.DNS.IsEmpty() {
		res.DNS = conf.DNS
	}
	idx := 0
	for _, ip := range res.IPs {
		ip.Interface = &idx
	}
	return nil
}

// addUserspace answers ADD for a PCI device bound to a userspace driver:
// nothing moves (the device has no kernel interface); the result names it
// by its PCI address and carries IPAM's addresses for the userspace data
// plane to use.
func (p *plugin) addUserspace(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args, conf *Config, sd *sysDevice, undo *pluginmain.Undo) (types.Result, error) {
	env.Log.Debug("device in userspace, nothing to move", "pci", sd.pci, "driver", sd.driver)
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: a.IfName, Sandbox: a.Netns, PciID: sd.pci}},
	}
	if err := p.ipam(ctx, env, a, conf, res, undo); err != nil {
		return nil, err
	}
	if err := sublink.Representable(res, a.ConfVersion); err != nil {
		return nil, err
	}
	return res, nil
}

// undoMove gives the device back after a failed ADD, wherever the failure
// left it: in the pod (under CNI_IFNAME, or under its own name if the
// kernel moved it but could not rename it), or still on the node.
func (p *plugin) undoMove(host, pod *netlink.Handle, a *pluginmain.Args, st *state) error {
	for _, name := range []string{a.IfName, st.Name} {
		if l, err := pod.LinkByName(name); err == nil && (st.MAC == "" || l.Attrs().HardwareAddr.String() == st.MAC) {
			return giveBack(host, a.NS, l, st.Name, st)
		}
	}
	if l, err := host.LinkByName(st.Name); err == nil {
		return restore(host, l, st.Name, st)
	}
	return fmt.Errorf("device %q is neither in the pod nor on the node", st.Name)
}

// find resolves the selector to a device on the node. For a PCI device in
// userspace it returns no link and the sysfs description.
func (p *plugin) find(h *netlink.Handle, sel Selector) (netlink.Link, *sysDevice, error) {
	switch sel.Kind {
	case ByName:
		l, err := h.LinkByName(sel.Value)
		if err != nil {
			if nl.IsNotFound(err) {
				return nil, nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "device: interface %q not found on the node", sel.Value)
			}
			return nil, nil, fmt.Errorf("find %q: %w", sel.Value, err)
		}
		return l, nil, nil
	case ByMAC:
		l, err := byMAC(h, sel.MAC)
		return l, nil, err
	}
	sd, err := lookup(p.sys, sel)
	if err != nil {
		return nil, nil, err
	}
	if sd.name == "" {
		return nil, sd, nil
	}
	l, err := h.LinkByName(sd.name)
	if err != nil {
		if nl.IsNotFound(err) {
			return nil, nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "%s: %q is interface %q in sysfs, but the node has no interface of that name", sel.Field, sel.Value, sd.name)
		}
		return nil, nil, fmt.Errorf("find %q: %w", sd.name, err)
	}
	if sd.ifindex != 0 && sd.ifindex != l.Attrs().Index {
		return nil, nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig,
			"%s: sysfs shows %q with index %d, but the node's %q has index %d (is the plugin running outside the node's initial network namespace?)",
			sel.Field, sd.name, sd.ifindex, sd.name, l.Attrs().Index)
	}
	return l, sd, nil
}

// stacked are the kinds that share the MAC of the device below them (or of
// a port): when several interfaces match a hardware address, these give
// way to the device itself.
var stacked = map[string]bool{"vlan": true, "macvlan": true, "macvtap": true, "ipvlan": true, "ipvtap": true, "bond": true, "bridge": true, "team": true}

func byMAC(h *netlink.Handle, hw net.HardwareAddr) (netlink.Link, error) {
	links, err := nl.Retry(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list the node's interfaces: %w", err)
	}
	var all, plain []netlink.Link
	for _, l := range links {
		if sameMAC(l.Attrs().HardwareAddr, hw) {
			all = append(all, l)
			if !stacked[l.Type()] {
				plain = append(plain, l)
			}
		}
	}
	switch {
	case len(all) == 0:
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "hwaddr: no interface on the node has hardware address %s", hw)
	case len(all) == 1:
		return all[0], nil
	case len(plain) == 1:
		return plain[0], nil
	}
	var names []string
	for _, l := range all {
		names = append(names, l.Attrs().Name)
	}
	return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "hwaddr: several interfaces on the node have hardware address %s (%s); select one with device", hw, strings.Join(names, ", "))
}

// refuseDefaultRoute keeps the node's own uplink where it is: moving the
// device of a default route into a pod cuts the node off its network.
func refuseDefaultRoute(h *netlink.Handle, dev netlink.Link, field string) error {
	routes, err := nl.Retry(func() ([]netlink.Route, error) { return h.RouteList(dev, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list the routes of %q: %w", dev.Attrs().Name, err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "%s: %q carries the node's default route; moving it into a pod would cut the node off", field, dev.Attrs().Name)
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "%s: %q carries the node's default route; moving it into a pod would cut the node off", field, dev.Attrs().Name)
		}
	}
	return nil
}

// del gives the device back to the node under its original name and
// releases the IPAM lease. See README.md for what happens when the pod's
// namespace is already gone.
func (p *plugin) del(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData, a.Args, false)
	if err != nil {
		return err
	}
	st, err := loadState(conf.DataDir, conf.Network, a.ContainerID, a.IfName)
	if err != nil {
		return err
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer host.Close()
	var errs []error
	inPod := false
	if a.NS != nil {
		pod, err := netlink.NewHandleAt(a.NS.Handle())
		if err != nil {
			return fmt.Errorf("open netlink in %q: %w", a.Netns, err)
		}
		defer pod.Close()
		l, lerr := pod.LinkByName(a.IfName)
		switch {
		case lerr == nil:
			inPod = true
			name := l.Attrs().Alias
			if st != nil {
				name = st.Name
			}
			if name == "" || pluginmain.ValidateIfName(name) != "" {
				env.Log.Warn("DEL: no record of the interface's name on the node (no state, no alias); leaving it in the pod", "interface", a.IfName, "alias", name)
				break
			}
			if err := giveBack(host, a.NS, l, name, st); err != nil {
				errs = append(errs, err)
			}
		case !nl.IsNotFound(lerr):
			errs = append(errs, fmt.Errorf("find %q in %s: %w", a.IfName, a.Netns, lerr))
		}
	}
	if !inPod && st != nil {
		if err := reclaimOnNode(env, host, st); err != nil {
			errs = append(errs, err)
		}
	}
	moved := len(errs) == 0
	if conf.IPAMType != "" {
		if err := env.DelegateDel(ctx, conf.IPAMType, a, a.StdinData); err != nil {
			errs = append(errs, err)
		}
	}
	if moved {
		if err := removeState(conf.DataDir, conf.Network, a.ContainerID, a.IfName); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reclaimOnNode restores a recorded device that is no longer in its pod:
// back under its name already, or returned by the kernel when the pod's
// namespace went away. A device found nowhere is logged as a warning: a
// virtual device (a veth) is destroyed with its namespace, and a physical
// one returned to the initial namespace of a node whose plugin runs
// elsewhere is out of reach.
func reclaimOnNode(env *pluginmain.Env, host *netlink.Handle, st *state) error {
	l, err := findOnNode(host, st)
	if err != nil {
		return err
	}
	if l == nil {
		env.Log.Warn("the device is gone: its pod's network namespace no longer holds it and it is not on the node "+
			"(a virtual device such as a veth is destroyed with the namespace; a physical one returns to the initial namespace)",
			"device", st.Name, "mac", st.MAC, "netns", st.Netns, "container", st.ContainerID, "interface", st.IfName)
		return nil
	}
	if l.Attrs().Name != st.Name {
		env.Log.Info("device returned by the kernel under another name; restoring it", "device", st.Name, "found", l.Attrs().Name)
	}
	return restore(host, l, st.Name, st)
}

// check verifies that the device is in the pod as the cached result says.
func (p *plugin) check(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData, a.Args, false)
	if err != nil {
		return err
	}
	prev := conf.PrevResult
	podIf, err := sublink.CheckResult(ctx, env, a, prev, conf.IPAMType)
	if err != nil {
		return err
	}
	pod, err := netlink.NewHandleAt(a.NS.Handle())
	if err != nil {
		return fmt.Errorf("open netlink in %q: %w", a.Netns, err)
	}
	defer pod.Close()
	link, lerr := pod.LinkByName(a.IfName)
	if nl.IsNotFound(lerr) && podIf.PciID != "" && podIf.Mac == "" {
		// A device in userspace: it must still be bound to its driver.
		if drv := driverOfPCI(p.sys, podIf.PciID); !userspaceDrivers[drv] {
			return fmt.Errorf("PCI device %s is bound to %q, not to a userspace driver", podIf.PciID, drv)
		}
		return nil
	}
	if lerr != nil {
		return fmt.Errorf("interface %q in %s: %w", a.IfName, a.Netns, lerr)
	}
	st, err := loadState(conf.DataDir, conf.Network, a.ContainerID, a.IfName)
	if err != nil {
		return err
	}
	if st == nil && link.Attrs().Alias == "" {
		return fmt.Errorf("interface %q: no record that host-device moved it here (no state, no alias)", a.IfName)
	}
	if podIf.Mac != "" && podIf.Mac != link.Attrs().HardwareAddr.String() {
		return fmt.Errorf("interface %q has MAC %s, the result says %s", a.IfName, link.Attrs().HardwareAddr, podIf.Mac)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("interface %q is down", a.IfName)
	}
	return ipcfg.Check(pod, link, ipcfg.IPsFor(prev, a.IfName), prev.Routes)
}

// gc gives back the devices of attachments that are no longer valid and
// forwards GC to IPAM.
func (p *plugin) gc(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseLenient(a.StdinData)
	if err != nil {
		return err
	}
	valid, err := pluginmain.ValidAttachments(a.StdinData)
	if err != nil {
		return err
	}
	states, bad, err := listStates(conf.dataDir, conf.network)
	if err != nil {
		return fmt.Errorf("list states: %w", err)
	}
	for _, name := range bad {
		env.Log.Warn("GC: unreadable state record left in place", "file", stateDir(conf.dataDir, conf.network)+"/"+name)
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer host.Close()
	var errs []error
	for _, st := range states {
		if valid.Keep(st.ContainerID, st.IfName) {
			continue
		}
		if err := p.reclaim(env, host, st); err != nil {
			errs = append(errs, fmt.Errorf("GC %s/%s: %w", st.ContainerID, st.IfName, err))
			continue
		}
		if err := removeState(conf.dataDir, conf.network, st.ContainerID, st.IfName); err != nil {
			errs = append(errs, err)
		}
	}
	if conf.ipamType != "" {
		if err := env.DelegateGC(ctx, conf.ipamType, a, a.StdinData); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reclaim gives back the device of a stale attachment: from its pod when
// the namespace still holds it (recognised by MAC or alias, so a reused
// namespace path cannot hand over someone else's device), else from the
// node.
func (p *plugin) reclaim(env *pluginmain.Env, host *netlink.Handle, st *state) error {
	if st.Netns != "" {
		if ns, err := netns.Open(st.Netns); err == nil {
			defer ns.Close()
			self, err := netns.Current()
			if err != nil {
				return err
			}
			same := self.Same(ns)
			self.Close()
			if !same {
				pod, err := netlink.NewHandleAt(ns.Handle())
				if err != nil {
					return fmt.Errorf("open netlink in %q: %w", st.Netns, err)
				}
				defer pod.Close()
				if l, err := pod.LinkByName(st.IfName); err == nil && (l.Attrs().HardwareAddr.String() == st.MAC || l.Attrs().Alias == st.Name) {
					return giveBack(host, ns, l, st.Name, st)
				}
			}
		}
	}
	return reclaimOnNode(env, host, st)
}

// status forwards STATUS to IPAM.
func (p *plugin) status(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData, a.Args, false)
	if err != nil {
		return err
	}
	if conf.IPAMType == "" {
		return nil
	}
	return env.DelegateStatus(ctx, conf.IPAMType, a, a.StdinData)
}
