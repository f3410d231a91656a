package sublink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/ipcfg"
	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/reaper"
	"linen.dev/linen/internal/sysctl"
)

// Add creates the pod interface, addresses it and returns the result. A
// failure at any step undoes the earlier ones: no link, no IPAM lease is
// left behind.
func (s *Spec) Add(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) (_ types.Result, err error) {
	host, pod, closeNL, err := nl.Handles(a.NS)
	if err != nil {
		return nil, err
	}
	defer closeNL()
	// Registered after closeNL, so it runs first, while the handles are open.
	var undo pluginmain.Undo
	defer undo.OnError(&err)

	if err := ResultVersion(a.ConfVersion, s.IPAMType != "" || (s.Chained && s.PrevResult != nil)); err != nil {
		return nil, err
	}
	if taken(pod, a.IfName) {
		return nil, ifExists(a)
	}
	masterH := host
	if s.LinkInContainer {
		masterH = pod
	}
	master, err := s.FindMaster(masterH, a.IfName)
	if err != nil {
		return nil, err
	}
	if mm := master.Attrs().MTU; s.MTU > mm {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "mtu: %d is larger than the MTU %d of master %q", s.MTU, mm, master.Attrs().Name)
	}
	link, err := s.Create(host, pod, a.NS, a.IfName, master)
	if err != nil {
		if errors.Is(err, ErrPodIfExists) {
			return nil, ifExists(a)
		}
		return nil, err
	}
	undo.Push(func() { _ = pod.LinkDel(link) })

	podIf := &current.Interface{
		Name: a.IfName, Mac: link.Attrs().HardwareAddr.String(), Mtu: link.Attrs().MTU, Sandbox: a.Netns,
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	chained := s.Chained && s.PrevResult != nil
	if chained {
		// The earlier plugins' interfaces stay in the result (CHECK
		// finds the master among them); ours comes last.
		for _, in := range s.PrevResult.Interfaces {
			cp := *in
			res.Interfaces = append(res.Interfaces, &cp)
		}
	}
	res.Interfaces = append(res.Interfaces, podIf)
	switch {
	case s.IPAMType != "":
		ipamRes, err := env.DelegateAdd(ctx, s.IPAMType, a, a.StdinData)
		if err != nil {
			return nil, err
		}
		undo.Push(func() { _ = env.DelegateDel(ctx, s.IPAMType, a, a.StdinData) })
		if len(ipamRes.IPs) == 0 {
			return nil, errors.New("IPAM plugin returned no IP addresses")
		}
		res.IPs, res.Routes, res.DNS = ipamRes.IPs, ipamRes.Routes, ipamRes.DNS
	case chained:
		// Chained without IPAM: the addresses an earlier plugin chose.
		prev := s.PrevResult
		for _, ip := range prev.IPs {
			cp := *ip
			res.IPs = append(res.IPs, &cp)
		}
		res.Routes, res.DNS = prev.Routes, prev.DNS
	}
	if !s.DNS.IsEmpty() {
		res.DNS = s.DNS
	}
	idx := len(res.Interfaces) - 1
	hasV6 := false
	for _, ip := range res.IPs {
		ip.Interface = &idx
		if ip.Address.IP.To4() == nil {
			hasV6 = true
		}
	}
	if err := a.NS.Do(func() error { return Announce(a.IfName, hasV6) }); err != nil {
		return nil, err
	}
	if err := Representable(res, a.ConfVersion); err != nil {
		return nil, err
	}
	if len(res.IPs) == 0 {
		if err := pod.LinkSetUp(link); err != nil {
			if errors.Is(err, unix.EADDRINUSE) {
				return nil, fmt.Errorf("set %q up: MAC %s is taken by another interface on master %q: %w", a.IfName, link.Attrs().HardwareAddr, master.Attrs().Name, err)
			}
			return nil, fmt.Errorf("set %q up: %w", a.IfName, err)
		}
		return res, nil
	}
	if err := ipcfg.Configure(pod, a.NS, link, res.IPs, res.Routes, ipcfg.Options{}); err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("%w (MAC %s is taken by another interface on master %q)", err, link.Attrs().HardwareAddr, master.Attrs().Name)
		}
		return nil, err
	}
	return res, nil
}

// ResultVersion refuses, before anything changes, an ADD whose result
// cannot be written in the configuration's version: results before 0.3.0
// carry nothing but IP addresses, so a plugin without addresses (hasIPs
// false) needs 0.3.0 or later.
func ResultVersion(confVersion string, hasIPs bool) error {
	if hasIPs || confVersion == "" {
		return nil
	}
	if ok, _ := version.GreaterThanOrEqualTo(confVersion, "0.3.0"); ok {
		return nil
	}
	return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "ipam: required with cniVersion %s: results before 0.3.0 carry nothing but IP addresses (configure IPAM, or use cniVersion 0.3.0 or later)", confVersion)
}

// Representable checks, while ADD can still undo its work, that res can
// be written in the configuration's version: a result that fails the
// conversion after ADD returned would leave everything ADD did behind.
func Representable(res *current.Result, confVersion string) error {
	if confVersion == "" {
		return nil
	}
	if _, err := res.GetAsVersion(confVersion); err != nil {
		return pluginmain.Errorf(pluginmain.CodeIncompatibleVersion, "convert result to cniVersion %s: %v", confVersion, err)
	}
	return nil
}

func ifExists(a *pluginmain.Args) error {
	return pluginmain.Errorf(pluginmain.CodeInvalidEnv, "CNI_IFNAME: interface %q already exists in %s", a.IfName, a.Netns)
}

// Announce runs inside the pod namespace before the interface comes up:
// with arp_notify (and ndisc_notify) the kernel sends a gratuitous ARP
// (an unsolicited neighbour advertisement) for the interface's addresses
// when it goes up.
func Announce(ifName string, v6 bool) error {
	var keys []string
	// arp_notify through rtnetlink when it can: the first /proc/sys/net
	// path walk in a new namespace costs O(namespaces on the node) (see
	// nl.IPv4DevConf).
	l, err := netlink.LinkByName(ifName)
	if err != nil || nl.SetIPv4DevConf(l.Attrs().Index, nl.DevConfArpNotify, 1) != nil {
		keys = append(keys, sysctl.Link("ipv4", ifName, "arp_notify"))
	}
	if v6 {
		keys = append(keys, sysctl.Link("ipv6", ifName, "ndisc_notify"))
	}
	for _, k := range keys {
		if err := sysctl.Ensure(k, "1"); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return nil
}

// Del releases the IPAM lease and deletes the pod interface. A missing
// namespace, a missing interface and a repeated call all succeed; an
// interface of CNI_IFNAME that is not of the plugin's kind is left alone.
func (s *Spec) Del(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	var pod *netlink.Handle
	var link netlink.Link
	if a.NS != nil {
		var err error
		pod, err = netlink.NewHandleAt(a.NS.Handle())
		if err != nil {
			return fmt.Errorf("open netlink in %q: %w", a.Netns, err)
		}
		defer pod.Close()
		l, lerr := pod.LinkByName(a.IfName)
		switch {
		case lerr == nil && s.IsKind(l):
			link = l
		case lerr == nil:
			env.Log.Warn("DEL: interface is not ours, leaving it", "interface", a.IfName, "kind", l.Type(), "want", s.Kind)
		case !nl.IsNotFound(lerr):
			return fmt.Errorf("find %q in %s: %w", a.IfName, a.Netns, lerr)
		}
	}
	del := reaper.Begin(a.NS, pod, link, env.Detach, nil)
	var errs []error
	if s.IPAMType != "" {
		if err := env.DelegateDel(ctx, s.IPAMType, a, a.StdinData); err != nil {
			errs = append(errs, err)
		}
	}
	if err := del.Finish(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Check verifies the pod interface against the configuration and the
// cached result: kind and kind-specific settings, master, MTU, MAC,
// addresses and routes.
func (s *Spec) Check(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	prev := s.PrevResult
	podIf, err := CheckResult(ctx, env, a, prev, s.IPAMType)
	if err != nil {
		return err
	}
	host, pod, closeNL, err := nl.Handles(a.NS)
	if err != nil {
		return err
	}
	defer closeNL()
	link, err := pod.LinkByName(a.IfName)
	if err != nil {
		return fmt.Errorf("interface %q in %s: %w", a.IfName, a.Netns, err)
	}
	if err := s.VerifyLink(host, pod, link); err != nil {
		return err
	}
	if podIf.Mac != "" && podIf.Mac != link.Attrs().HardwareAddr.String() {
		return fmt.Errorf("interface %q has MAC %s, the result says %s", a.IfName, link.Attrs().HardwareAddr, podIf.Mac)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("interface %q is down", a.IfName)
	}
	return ipcfg.Check(pod, link, ipcfg.IPsFor(prev, a.IfName), prev.Routes)
}

// CheckResult begins the CHECK of a plugin that puts one interface into the
// pod: the cached result prev must be there, the IPAM plugin (if any) must
// pass its own CHECK, and prev must list the pod interface, which it
// returns.
func CheckResult(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args, prev *current.Result, ipamType string) (*current.Interface, error) {
	if prev == nil {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: required for CHECK")
	}
	if ipamType != "" {
		if err := env.DelegateCheck(ctx, ipamType, a, a.StdinData); err != nil {
			return nil, err
		}
	}
	podIf := ipcfg.SandboxInterface(prev, a.IfName)
	if podIf == nil {
		return nil, fmt.Errorf("prevResult: no interface %q in the sandbox", a.IfName)
	}
	return podIf, nil
}

// VerifyLink checks an existing pod interface against the configuration:
// kind, the kind's settings, master (device and namespace), MTU and MAC.
func (s *Spec) VerifyLink(host, pod *netlink.Handle, link netlink.Link) error {
	name := link.Attrs().Name
	if !s.IsKind(link) {
		return fmt.Errorf("interface %q is a %s, not a %s", name, link.Type(), s.Kind)
	}
	if s.Verify != nil {
		if err := s.Verify(link); err != nil {
			return fmt.Errorf("interface %q: %w", name, err)
		}
	}
	masterH := host
	if s.LinkInContainer {
		masterH = pod
	}
	master, err := s.FindMaster(masterH, name)
	if err != nil {
		return err
	}
	mName := master.Attrs().Name
	if link.Attrs().ParentIndex != master.Attrs().Index {
		return fmt.Errorf("interface %q is stacked on interface index %d, not on master %q (index %d)", name, link.Attrs().ParentIndex, mName, master.Attrs().Index)
	}
	wantNSID := -1 // master in the link's own namespace
	if !s.LinkInContainer {
		cur, err := netns.Current()
		if err != nil {
			return err
		}
		wantNSID, err = pod.GetNetNsIdByFd(cur.Fd())
		cur.Close()
		if err != nil {
			return fmt.Errorf("namespace id of the node seen from the pod: %w", err)
		}
	}
	if got := link.Attrs().NetNsID; got != wantNSID {
		return fmt.Errorf("interface %q: its master is in namespace id %d, not in %s (id %d)", name, got, s.masterNS(), wantNSID)
	}
	mtu := link.Attrs().MTU
	if s.MTU != 0 && mtu != s.MTU {
		return fmt.Errorf("interface %q has MTU %d, the configuration says %d", name, mtu, s.MTU)
	}
	if mtu > master.Attrs().MTU {
		return fmt.Errorf("interface %q has MTU %d, larger than the MTU %d of master %q", name, mtu, master.Attrs().MTU, mName)
	}
	if s.MAC != nil && !bytes.Equal(s.MAC, link.Attrs().HardwareAddr) {
		return fmt.Errorf("interface %q has MAC %s, the configuration asks for %s", name, link.Attrs().HardwareAddr, s.MAC)
	}
	return nil
}

// GC forwards GC to the IPAM plugin: the pod interfaces themselves die
// with their namespaces.
func GC(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args, ipamType string) error {
	if ipamType == "" {
		return nil
	}
	return env.DelegateGC(ctx, ipamType, a, a.StdinData)
}

// Status reports whether ADD can work: the master exists (code 50
// otherwise), and the IPAM plugin's STATUS.
func (s *Spec) Status(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	if !s.LinkInContainer && !(s.Chained && s.Master == "") {
		h, err := netlink.NewHandle()
		if err != nil {
			return fmt.Errorf("open netlink: %w", err)
		}
		_, ferr := s.FindMaster(h, a.IfName)
		h.Close()
		if ferr != nil {
			var te *types.Error
			if errors.As(ferr, &te) {
				return &types.Error{Code: pluginmain.CodeNotAvailable, Msg: te.Msg}
			}
			return ferr
		}
	}
	if s.IPAMType == "" {
		return nil
	}
	return env.DelegateStatus(ctx, s.IPAMType, a, a.StdinData)
}

// Plugin builds a stacked-link plugin from its configuration parser.
func Plugin(name, about string, parse func(stdin []byte, cniArgs string) (*Spec, error)) *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:  name,
		About: about,
		Add: func(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) (types.Result, error) {
			s, err := parse(a.StdinData, a.Args)
			if err != nil {
				return nil, err
			}
			return s.Add(ctx, env, a)
		},
		Del: func(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
			s, err := parse(a.StdinData, a.Args)
			if err != nil {
				return err
			}
			return s.Del(ctx, env, a)
		},
		Check: func(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
			s, err := parse(a.StdinData, a.Args)
			if err != nil {
				return err
			}
			return s.Check(ctx, env, a)
		},
		// GC reads only the IPAM type, so that it works with whatever
		// configuration the runtime has cached.
		GC: func(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
			var c types.NetConf
			if err := pluginmain.DecodeConf(a.StdinData, &c); err != nil {
				return err
			}
			return GC(ctx, env, a, c.IPAM.Type)
		},
		Status: func(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
			s, err := parse(a.StdinData, a.Args)
			if err != nil {
				return err
			}
			return s.Status(ctx, env, a)
		},
	}
}
