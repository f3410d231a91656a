package bandwidth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/reaper"
)

// Plugin returns the bandwidth plugin.
func Plugin() *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:   "bandwidth",
		About:  "linen bandwidth: per-pod ingress and egress rate limits (chained after bridge or ptp)",
		Add:    add,
		Del:    del,
		Check:  check,
		GC:     gc,
		Status: status,
	}
}

// plan returns the shaped directions of conf (nil: not shaped).
func plan(conf *Config, ticksPerUsec float64) (ingress, egress *direction) {
	prefix := ""
	if conf.FromRuntime {
		prefix = "runtimeConfig.bandwidth."
	}
	if conf.Ingress.Rate > 0 {
		ingress = &direction{name: "ingress", field: prefix + "ingressBurst", bucket: newBucket(conf.Ingress, ticksPerUsec),
			subnets: conf.Subnets, matchSrc: true}
	}
	if conf.Egress.Rate > 0 {
		egress = &direction{name: "egress", field: prefix + "egressBurst", bucket: newBucket(conf.Egress, ticksPerUsec),
			subnets: conf.Subnets}
	}
	return ingress, egress
}

func schedulerClock() (float64, error) {
	t := netlink.TickInUsec()
	if t <= 0 {
		return 0, errors.New("read the packet scheduler clock from /proc/net/psched: not available")
	}
	return t, nil
}

func passThrough(conf *Config) types.Result {
	if conf.PrevResult != nil {
		return conf.PrevResult
	}
	return &current.Result{CNIVersion: current.ImplementedSpecVersion}
}

func add(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) (_ types.Result, err error) {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return nil, err
	}
	if !conf.Shaping() {
		return passThrough(conf), nil
	}
	if conf.PrevResult == nil {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: missing: bandwidth must follow an interface plugin (bridge, ptp) in the chain")
	}
	tick, err := schedulerClock()
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

	veth, _, err := hostVeth(host, pod, a.NS, a.IfName)
	if err != nil {
		return nil, err
	}
	ingress, egress := plan(conf, tick)
	frame := uint64(veth.Attrs().MTU) + frameOverhead
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	for _, d := range []*direction{ingress, egress} {
		if d != nil && d.bucket.Burst < frame {
			fe.Add(d.field, "the bucket holds %d bytes, less than one full-size frame on %q (%d bytes: MTU %d + %d); such frames would be dropped",
				d.bucket.Burst, veth.Attrs().Name, frame, veth.Attrs().MTU, frameOverhead)
		}
	}
	if err := fe.Err(); err != nil {
		return nil, err
	}

	res := conf.PrevResult
	var ifb netlink.Link
	if egress != nil {
		name := IFBName(conf.Network, a.ContainerID, a.IfName)
		ifb, err = createIFB(host, name, ifbAlias(conf.Network, a.ContainerID, a.IfName), veth)
		if err != nil {
			return nil, err
		}
		undo.Push(func() { _ = host.LinkDel(ifb) })
		if err := installShaper(host, ifb, *egress); err != nil {
			return nil, err
		}
	}
	if ingress != nil {
		undo.Push(func() { _ = clearQdisc(host, veth, netlink.HANDLE_ROOT) })
		if err := installShaper(host, veth, *ingress); err != nil {
			return nil, err
		}
	}
	if egress != nil {
		undo.Push(func() { _ = clearQdisc(host, veth, netlink.HANDLE_INGRESS) })
		if err := redirect(host, veth, ifb); err != nil {
			return nil, err
		}
		res.Interfaces = append(res.Interfaces, &current.Interface{Name: ifb.Attrs().Name, Mac: ifb.Attrs().HardwareAddr.String()})
	}
	env.Log.Debug("bandwidth: shaped", "veth", veth.Attrs().Name, "ingress", conf.Ingress, "egress", conf.Egress, "subnets", conf.Subnets.Mode)
	return res, nil
}

// del removes the attachment's IFB device, found by its name, so it works
// without prevResult and without the pod's namespace; when the namespace
// is still there it also takes the shapers off the host end of the veth
// (usually deleted right after by the interface plugin).
func del(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	network, err := delNetwork(env, a.StdinData)
	if err != nil {
		return err
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer host.Close()
	if a.NS != nil {
		if err := unshapeVeth(host, a); err != nil {
			return err
		}
	}
	name := IFBName(network, a.ContainerID, a.IfName)
	ifb, err := ownIFB(host, name, ifbAlias(network, a.ContainerID, a.IfName))
	if err != nil {
		env.Log.Warn("bandwidth: DEL", "error", err)
		return nil
	}
	if ifb == nil {
		return nil
	}
	self, err := netns.Current()
	if err != nil {
		return fmt.Errorf("delete IFB device %q: %w", name, err)
	}
	defer self.Close()
	return reaper.Begin(self, host, ifb, env.Detach, nil).Finish()
}

// delNetwork returns the network name of a DEL request. An invalid
// configuration does not block DEL: the name is all it needs.
func delNetwork(env *pluginmain.Env, stdin []byte) (string, error) {
	conf, err := parseConfig(stdin)
	if err == nil {
		return conf.Network, nil
	}
	name, ok := pluginmain.NetworkName(stdin)
	if !ok {
		return "", err
	}
	env.Log.Warn("bandwidth: ignoring invalid configuration on DEL", "error", err)
	return name, nil
}

// unshapeVeth removes linen's qdiscs from the host end of the pod's veth.
// A pod interface that is gone, or not a veth, leaves nothing to do.
func unshapeVeth(host *netlink.Handle, a *pluginmain.Args) error {
	pod, err := netlink.NewHandleAt(a.NS.Handle())
	if err != nil {
		return fmt.Errorf("open netlink in %q: %w", a.Netns, err)
	}
	defer pod.Close()
	veth, _, err := hostVeth(host, pod, a.NS, a.IfName)
	if err != nil {
		return nil
	}
	if q, err := rootQdisc(host, veth); err == nil && q != nil && q.Attrs().Handle == rootHandle && (q.Type() == "tbf" || q.Type() == "htb") {
		if err := clearQdisc(host, veth, netlink.HANDLE_ROOT); err != nil {
			return err
		}
	}
	return clearQdisc(host, veth, netlink.HANDLE_INGRESS)
}

func check(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	if !conf.Shaping() {
		return nil
	}
	if conf.PrevResult == nil {
		return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: missing: CHECK needs the result of ADD")
	}
	tick, err := schedulerClock()
	if err != nil {
		return err
	}
	host, pod, closeNL, err := nl.Handles(a.NS)
	if err != nil {
		return err
	}
	defer closeNL()
	veth, _, err := hostVeth(host, pod, a.NS, a.IfName)
	if err != nil {
		return err
	}
	ingress, egress := plan(conf, tick)
	if ingress != nil {
		if err := checkShaper(host, veth, *ingress); err != nil {
			return err
		}
	}
	if egress != nil {
		name := IFBName(conf.Network, a.ContainerID, a.IfName)
		ifb, err := ownIFB(host, name, ifbAlias(conf.Network, a.ContainerID, a.IfName))
		if err != nil {
			return err
		}
		if ifb == nil {
			return fmt.Errorf("egress: IFB device %q is missing", name)
		}
		if ifb.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("egress: IFB device %q is down", name)
		}
		if err := checkShaper(host, ifb, *egress); err != nil {
			return err
		}
		if err := checkRedirect(host, veth, ifb); err != nil {
			return err
		}
	}
	return nil
}

// gc deletes the IFB devices of this network whose attachment is not in
// cni.dev/valid-attachments. The alias tells the network; the name, a hash
// of the attachment, tells whether it is still valid.
func gc(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	valid, err := pluginmain.ValidAttachments(a.StdinData)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for at := range valid {
		keep[IFBName(conf.Network, at[0], at[1])] = true
	}
	host, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer host.Close()
	links, err := nl.Retry(host.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		if l.Type() != "ifb" || !strings.HasPrefix(name, ifbPrefix) || keep[name] {
			continue
		}
		if n, ok := aliasNetwork(l.Attrs().Alias); !ok || n != conf.Network {
			continue
		}
		env.Log.Debug("bandwidth: GC deletes a stale IFB device", "name", name, "alias", l.Attrs().Alias)
		if err := host.LinkDel(l); err != nil && !nl.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete IFB device %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func status(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) error {
	_, err := parseConfig(a.StdinData)
	return err
}
