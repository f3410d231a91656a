package dhcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// callTimeout bounds one request to the daemon. An allocation's DHCP
// exchange is bounded by the daemon's -timeout (10 s by default); this is
// the outer limit for a daemon that accepted the connection but hangs.
const callTimeout = 2 * time.Minute

// Plugin returns the dhcp IPAM plugin.
func Plugin() *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:   "dhcp",
		About:  "linen dhcp: IPAM from a DHCP server, leases kept by \"linen-cni dhcp daemon\"",
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}
}

func call(ctx context.Context, socket string, req *Request) (*Response, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return Call(ctx, socket, req)
}

// unreachable maps "no daemon" to a CNI error that names the socket.
func unreachable(err error, code uint) error {
	if errors.Is(err, ErrDaemonUnreachable) {
		return pluginmain.Errorf(code, "%v", err)
	}
	return err
}

func cmdAdd(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) (types.Result, error) {
	c, err := ParseConfig(a.StdinData)
	if err != nil {
		return nil, err
	}
	args, err := pluginmain.ParseCNIArgs(a.Args)
	if err != nil {
		return nil, err
	}
	provide, err := c.ProvidedOptions(args)
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, c.SocketPath, &Request{
		Op:      OpAllocate,
		Key:     Key{ContainerID: a.ContainerID, Network: c.Network, IfName: a.IfName},
		Netns:   a.Netns,
		Params:  c.Params,
		Provide: wireOptions(provide),
	})
	if err != nil {
		return nil, unreachable(fmt.Errorf("dhcp: allocate for %s/%s: %w", a.ContainerID, a.IfName, err), pluginmain.CodeTryAgainLater)
	}
	if resp.Lease == nil {
		return nil, fmt.Errorf("dhcp: allocate for %s/%s: the daemon returned no lease", a.ContainerID, a.IfName)
	}
	res, err := BuildResult(resp.Lease, c.Priority)
	if err != nil {
		// Give the address back: the caller will not use it.
		_, _ = call(ctx, c.SocketPath, &Request{Op: OpRelease, Key: Key{ContainerID: a.ContainerID, Network: c.Network, IfName: a.IfName}, Netns: a.Netns})
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	env.Log.Debug("dhcp lease", "container", a.ContainerID, "ifname", a.IfName, "address", resp.Lease.Address, "server", resp.Lease.Server, "expiry", resp.Lease.Expiry)
	return res, nil
}

// lenient is what DEL and GC need: they must work with configurations
// that ADD would now refuse (an operator may have edited them since).
type lenient struct {
	Name string `json:"name"`
	Type string `json:"type"`
	IPAM *struct {
		DaemonSocketPath string `json:"daemonSocketPath"`
	} `json:"ipam"`
	DaemonSocketPath string `json:"daemonSocketPath"`
}

func parseLenient(stdin []byte) (network, socket string, err error) {
	var l lenient
	if err := json.Unmarshal(stdin, &l); err != nil {
		return "", "", pluginmain.DecodeError(err, "stdin")
	}
	socket = DefaultSocketPath
	switch {
	case l.IPAM != nil && l.IPAM.DaemonSocketPath != "":
		socket = l.IPAM.DaemonSocketPath
	case l.IPAM == nil && l.Type == "dhcp" && l.DaemonSocketPath != "":
		socket = l.DaemonSocketPath
	}
	return l.Name, socket, nil
}

// cmdDel releases the lease. A daemon that is not running holds no lease
// that DEL could release (its leases are kept on disk and picked up by
// the next daemon only while their namespace lives, see doc.go), so DEL
// then succeeds with a warning instead of blocking the pod's teardown.
func cmdDel(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	network, socket, err := parseLenient(a.StdinData)
	if err != nil {
		return err
	}
	_, err = call(ctx, socket, &Request{Op: OpRelease, Key: Key{ContainerID: a.ContainerID, Network: network, IfName: a.IfName}, Netns: a.Netns})
	if errors.Is(err, ErrDaemonUnreachable) {
		env.Log.Warn("dhcp: DEL without a daemon: no lease to release", "container", a.ContainerID, "ifname", a.IfName, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("dhcp: release %s/%s: %w", a.ContainerID, a.IfName, err)
	}
	return nil
}

func cmdCheck(ctx context.Context, _ *pluginmain.Env, a *pluginmain.Args) error {
	c, err := ParseConfig(a.StdinData)
	if err != nil {
		return err
	}
	resp, err := call(ctx, c.SocketPath, &Request{Op: OpCheck, Key: Key{ContainerID: a.ContainerID, Network: c.Network, IfName: a.IfName}, Netns: a.Netns})
	if err != nil {
		return unreachable(fmt.Errorf("dhcp: check %s/%s: %w", a.ContainerID, a.IfName, err), pluginmain.CodeTryAgainLater)
	}
	if resp.Lease == nil {
		return fmt.Errorf("dhcp: check %s/%s: the daemon returned no lease", a.ContainerID, a.IfName)
	}
	if resp.Lease.State == StateExpired {
		return fmt.Errorf("dhcp: check %s/%s: lease of %s expired or was refused by the server", a.ContainerID, a.IfName, resp.Lease.Address)
	}
	if c.PrevResult == nil {
		return nil
	}
	addr, err := leaseAddr(resp.Lease)
	if err != nil {
		return err
	}
	for _, ip := range c.PrevResult.IPs {
		if got, ok := netip.AddrFromSlice(ip.Address.IP); ok && got.Unmap() == addr {
			return nil
		}
	}
	return fmt.Errorf("dhcp: check %s/%s: the lease holds %s, which is not in prevResult", a.ContainerID, a.IfName, addr)
}

func cmdGC(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	network, socket, err := parseLenient(a.StdinData)
	if err != nil {
		return err
	}
	valid, err := pluginmain.ValidAttachments(a.StdinData)
	if err != nil {
		return err
	}
	req := &Request{Op: OpGC, Key: Key{Network: network}, Valid: []Attachment{}}
	for k := range valid {
		req.Valid = append(req.Valid, Attachment{ContainerID: k[0], IfName: k[1]})
	}
	resp, err := call(ctx, socket, req)
	if err != nil {
		return unreachable(fmt.Errorf("dhcp: gc of network %q: %w", network, err), pluginmain.CodeTryAgainLater)
	}
	env.Log.Debug("dhcp gc", "network", network, "released", resp.Released)
	return nil
}

func cmdStatus(ctx context.Context, _ *pluginmain.Env, a *pluginmain.Args) error {
	_, socket, err := parseLenient(a.StdinData)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := Call(sctx, socket, &Request{Op: OpStatus}); err != nil {
		return pluginmain.Errorf(pluginmain.CodeNotAvailable, "dhcp: status: %v", err)
	}
	return nil
}
