package pluginmain

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// Delegation runs another plugin, normally an IPAM plugin, as the
// specification says: found by type in CNI_PATH, with the same parameters
// except CNI_COMMAND, and the complete configuration on stdin. When the
// binary found is this very executable (linen-cni under another name), the
// plugin runs in process through Invoke, with exactly the validation,
// version handling and output of an exec, but without the ~3 ms of a
// process start.

var selfExe = sync.OnceValues(func() (os.FileInfo, error) { return os.Stat("/proc/self/exe") })

func (env *Env) inProcess(pluginType, bin string) *Plugin {
	p := env.Registry.Lookup(pluginType)
	if p == nil {
		return nil
	}
	if env.InProcess != nil {
		if env.InProcess(pluginType, bin) {
			return p
		}
		return nil
	}
	self, err := selfExe()
	if err != nil {
		return nil
	}
	fi, err := os.Stat(bin)
	if err != nil || !os.SameFile(self, fi) {
		return nil
	}
	return p
}

// DelegateAdd runs ADD of pluginType and returns its result as 1.1.0.
func (env *Env) DelegateAdd(ctx context.Context, pluginType string, a *Args, stdin []byte) (*current.Result, error) {
	res, err := env.delegate(ctx, "ADD", pluginType, a, stdin)
	if err != nil {
		return nil, err
	}
	var out *current.Result
	if res == nil {
		err = fmt.Errorf("delegate %s returned no result", pluginType)
	} else if out, err = current.NewResultFromResult(res); err != nil {
		err = fmt.Errorf("delegate %s: %w", pluginType, err)
	}
	if err != nil {
		// The delegate reserved something it cannot report: release it.
		if derr := env.DelegateDel(ctx, pluginType, a, stdin); derr != nil && env.Log != nil {
			env.Log.Warn("release after an unusable delegate result", "type", pluginType, "error", derr)
		}
		return nil, err
	}
	return out, nil
}

// DelegateDel runs DEL of pluginType.
func (env *Env) DelegateDel(ctx context.Context, pluginType string, a *Args, stdin []byte) error {
	_, err := env.delegate(ctx, "DEL", pluginType, a, stdin)
	return err
}

// IPAMUsesLink reports whether the IPAM plugin of that type talks to the
// network through the pod's interface on DEL (dhcp sends DHCPRELEASE out of
// it), so that a main plugin must release the addresses before it deletes
// the interface instead of overlapping the two.
func IPAMUsesLink(pluginType string) bool { return pluginType == "dhcp" }

// DelegateCheck runs CHECK of pluginType.
func (env *Env) DelegateCheck(ctx context.Context, pluginType string, a *Args, stdin []byte) error {
	_, err := env.delegate(ctx, "CHECK", pluginType, a, stdin)
	return err
}

// DelegateGC runs GC of pluginType.
func (env *Env) DelegateGC(ctx context.Context, pluginType string, a *Args, stdin []byte) error {
	_, err := env.delegate(ctx, "GC", pluginType, a, stdin)
	return err
}

// DelegateStatus runs STATUS of pluginType.
func (env *Env) DelegateStatus(ctx context.Context, pluginType string, a *Args, stdin []byte) error {
	_, err := env.delegate(ctx, "STATUS", pluginType, a, stdin)
	return err
}

func (env *Env) delegate(ctx context.Context, cmd, pluginType string, a *Args, stdin []byte) (types.Result, error) {
	if a.Path == "" {
		// Only STATUS, where the variable is optional, gets this far
		// without it.
		return nil, Errorf(CodeInvalidEnv, "CNI_PATH: not set; it is needed to find the IPAM plugin %q", pluginType)
	}
	bin, err := invoke.FindInPath(pluginType, filepath.SplitList(a.Path))
	if err != nil {
		return nil, Errorf(CodeInvalidConfig, "ipam.type: plugin %q not found in CNI_PATH %q", pluginType, a.Path)
	}
	if p := env.inProcess(pluginType, bin); p != nil {
		if env.Log != nil {
			env.Log.Debug("delegate in process", "type", pluginType, "command", cmd)
		}
		sub := &Args{
			Command: cmd, ContainerID: a.ContainerID, Netns: a.Netns, IfName: a.IfName,
			Args: a.Args, Path: a.Path, NetnsOverride: a.NetnsOverride, StdinData: stdin,
		}
		out, _, cerr := Invoke(ctx, env, p, sub)
		if cerr != nil {
			return nil, cerr
		}
		if cmd != "ADD" {
			return nil, nil
		}
		return version.NewResult(sub.ConfVersion, out)
	}
	iargs := &invoke.Args{
		Command: cmd, ContainerID: a.ContainerID, NetNS: a.Netns, IfName: a.IfName,
		PluginArgsStr: a.Args, Path: a.Path,
	}
	if env.Log != nil {
		env.Log.Debug("delegate by exec", "type", pluginType, "command", cmd, "binary", bin)
	}
	ex := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: env.Stderr}}
	if cmd == "ADD" {
		return invoke.ExecPluginWithResult(ctx, bin, stdin, iargs, ex)
	}
	return nil, invoke.ExecPluginWithoutResult(ctx, bin, stdin, iargs, ex)
}
