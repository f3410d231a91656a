package linen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"

	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/subnetenv"
)

// Plugin returns the meta-plugin. The registry lists it as "linen" and
// again as "flannel".
func Plugin() *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:   "linen",
		About:  "linen: the node's pod network from subnet.env, delegated to bridge + host-local (also answers to \"flannel\")",
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}
}

// notRunning is the message of every "no subnet.env" error: by far the
// most common problem with this kind of plugin is a daemon that has not
// (yet) written the file.
const notRunning = "subnet.env not found: is linen daemon (or flanneld) running?"

// readEnv reads subnet.env for ADD: a missing file is worth retrying
// (code 11: the daemon may be starting), others are not.
func readEnv(path string) (*subnetenv.Env, error) {
	env, err := subnetenv.Read(path)
	switch {
	case err == nil:
		return env, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, &types.Error{Code: pluginmain.CodeTryAgainLater, Msg: notRunning, Details: err.Error()}
	case errors.As(err, new(*fs.PathError)):
		return nil, pluginmain.Errorf(pluginmain.CodeIOFailure, "subnet.env unreadable: %v", err)
	default:
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "subnet.env invalid: %v", err)
	}
}

// findDelegate fails early, naming the right field, when the delegate is
// not in CNI_PATH.
func findDelegate(typ, cniPath string) error {
	if _, err := invoke.FindInPath(typ, filepath.SplitList(cniPath)); err != nil {
		return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "delegate.type: plugin %q not found in CNI_PATH %q", typ, cniPath)
	}
	return nil
}

func warn(env *pluginmain.Env, msg string, args ...any) {
	switch {
	case env.Log != nil:
		env.Log.Warn(msg, args...)
	case env.Stderr != nil:
		fmt.Fprintln(env.Stderr, append([]any{"linen: warning:", msg}, args...)...)
	}
}

// cmdAdd builds the delegate configuration from subnet.env, saves it, and
// runs the delegate's ADD; the delegate's result is the plugin's.
func cmdAdd(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) (_ types.Result, err error) {
	c, err := parseConfig(a.StdinData)
	if err != nil {
		return nil, err
	}
	se, err := readEnv(c.SubnetFile)
	if err != nil {
		return nil, err
	}
	conf, err := c.delegateConf(se)
	if err != nil {
		return nil, err
	}
	if err := findDelegate(c.DelegateType, a.Path); err != nil {
		return nil, err
	}
	// One file per container: a second attachment of this network in the
	// same container would take the first one's file.
	if old, lerr := load(c.DataDir, a.ContainerID); lerr == nil && old != nil && old.ifName != "" && old.ifName != a.IfName {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidEnv,
			"CNI_IFNAME: container %s already has an attachment of network %q on %q; this plugin keeps one attachment per container",
			a.ContainerID, c.Network, old.ifName)
	}

	var undo pluginmain.Undo
	defer undo.OnError(&err)
	if err := save(c.DataDir, a.ContainerID, a.IfName, conf); err != nil {
		return nil, pluginmain.Errorf(pluginmain.CodeIOFailure, "%v", err)
	}
	// The delegate undoes its own steps when its ADD fails; then nothing
	// of the attachment is left to DEL.
	undo.Push(func() { _ = remove(c.DataDir, a.ContainerID) })
	res, err := env.DelegateAdd(ctx, c.DelegateType, a, conf)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// cmdDel replays the saved configuration to the delegate's DEL and removes
// it once the delegate succeeded. Without one (a repeated DEL, an ADD that
// never ran, a lost dataDir) it builds the configuration from subnet.env,
// so what can be released is; without that either, there is nothing to
// release, and DEL succeeds with a warning.
func cmdDel(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	c, cerr := parseConfig(a.StdinData)
	s, err := load(c.DataDir, a.ContainerID)
	broken := err != nil
	if broken {
		warn(env, "ignoring unusable saved configuration", "container", a.ContainerID, "error", err)
		s = nil
	}
	if s != nil && s.ifName != "" && s.ifName != a.IfName {
		// Another attachment's file (see cmdAdd); not ours to replay or remove.
		s = nil
	}

	var conf []byte
	typ := c.DelegateType
	switch {
	case s != nil:
		conf, typ = s.replay(c.CNIVersion, c.PrevResult), s.typ
	case cerr != nil:
		// ADD with this configuration fails before it touches anything.
		warn(env, "DEL: invalid configuration and nothing saved: nothing to release", "container", a.ContainerID, "error", cerr)
		return nil
	default:
		se, err := subnetenv.Read(c.SubnetFile)
		if err != nil {
			warn(env, "DEL: no saved delegate configuration and no usable subnet.env: nothing to release",
				"container", a.ContainerID, "saved", savePath(c.DataDir, a.ContainerID), "error", err)
			return nil
		}
		b, err := c.delegateConf(se)
		if err != nil {
			return err
		}
		conf = withPrev(b, c.PrevResult)
	}
	if err := findDelegate(typ, a.Path); err != nil {
		return err
	}
	if err := env.DelegateDel(ctx, typ, a, conf); err != nil {
		return err
	}
	if s != nil || broken {
		return remove(c.DataDir, a.ContainerID)
	}
	return nil
}

// withPrev adds prevResult to a generated delegate configuration.
func withPrev(conf []byte, prev json.RawMessage) []byte {
	if prev == nil {
		return conf
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(conf, &m) != nil {
		return conf
	}
	m["prevResult"] = prev
	b, _ := json.Marshal(m)
	return b
}

// cmdCheck replays the saved configuration to the delegate's CHECK, after
// checking that the node's subnet has not moved since ADD.
func cmdCheck(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	c, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	s, err := load(c.DataDir, a.ContainerID)
	if err != nil {
		return pluginmain.Errorf(pluginmain.CodeIOFailure, "%v", err)
	}
	if s == nil || (s.ifName != "" && s.ifName != a.IfName) {
		return pluginmain.Errorf(pluginmain.CodeUnknownContainer,
			"no saved delegate configuration for container %s interface %s in %s: the attachment was not made by this plugin, or dataDir was lost",
			a.ContainerID, a.IfName, c.DataDir)
	}
	if se, err := subnetenv.Read(c.SubnetFile); err == nil {
		now, then := se.Subnets(), s.subnets()
		if !samePrefixes(now, then) {
			return fmt.Errorf("subnet.env %s now gives the node %v, but the pod was set up in %v: recreate the pod", c.SubnetFile, now, then)
		}
	}
	if err := findDelegate(s.typ, a.Path); err != nil {
		return err
	}
	return env.DelegateCheck(ctx, s.typ, a, s.replay(c.CNIVersion, c.PrevResult))
}

func samePrefixes(a, b []netip.Prefix) bool {
	key := func(p netip.Prefix) string { return p.String() }
	as, bs := make([]string, len(a)), make([]string, len(b))
	for i, p := range a {
		as[i] = key(p)
	}
	for i, p := range b {
		bs[i] = key(p)
	}
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}

// cmdGC forwards GC to the delegate (which releases the addresses of
// attachments that are not valid) and then removes the saved
// configurations of those attachments. The delegate's configuration comes
// from subnet.env, or, when that is gone, from any saved configuration.
func cmdGC(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	c, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	valid, err := pluginmain.ValidAttachments(a.StdinData)
	if err != nil {
		return err
	}
	containers := map[string]bool{}
	for at := range valid {
		containers[at[0]] = true
	}
	ids, err := savedIDs(c.DataDir)
	if err != nil {
		return pluginmain.Errorf(pluginmain.CodeIOFailure, "GC: list dataDir: %v", err)
	}
	var stale []string
	var template *saved
	for _, id := range ids {
		s, err := load(c.DataDir, id)
		if err != nil || s == nil {
			if !containers[id] {
				stale = append(stale, id)
			}
			continue
		}
		keep := containers[id]
		if s.ifName != "" {
			keep = valid.Keep(id, s.ifName)
		}
		if !keep {
			stale = append(stale, id)
		}
		if template == nil {
			template = s
		}
	}

	var conf []byte
	typ := c.DelegateType
	if se, err := subnetenv.Read(c.SubnetFile); err == nil {
		if conf, err = c.delegateConf(se); err != nil {
			return err
		}
	} else if template != nil {
		conf, typ = template.replay(c.CNIVersion, nil), template.typ
	} else {
		warn(env, "GC: no subnet.env and no saved configuration: not forwarding GC to the delegate", "error", err)
	}
	if conf != nil {
		conf = withAttachments(conf, c.Attachments)
		if err := findDelegate(typ, a.Path); err != nil {
			return err
		}
		if err := env.DelegateGC(ctx, typ, a, conf); err != nil {
			// Keep the saved configurations: a later GC needs them if
			// subnet.env is gone, and DEL may still come.
			return err
		}
	}
	var errs []error
	for _, id := range stale {
		if err := remove(c.DataDir, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// withAttachments adds the GC request's attachment lists.
func withAttachments(conf []byte, at map[string]json.RawMessage) []byte {
	if len(at) == 0 {
		return conf
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(conf, &m) != nil {
		return conf
	}
	for k, v := range at {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// cmdStatus reports whether ADD can work: subnet.env must be readable
// (else code 50), and the delegate must say so too.
func cmdStatus(ctx context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	c, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	se, err := subnetenv.Read(c.SubnetFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &types.Error{Code: pluginmain.CodeNotAvailable, Msg: notRunning, Details: err.Error()}
	case err != nil:
		return pluginmain.Errorf(pluginmain.CodeNotAvailable, "subnet.env unusable: %v", err)
	}
	conf, err := c.delegateConf(se)
	if err != nil {
		return err
	}
	if err := findDelegate(c.DelegateType, a.Path); err != nil {
		return err
	}
	return env.DelegateStatus(ctx, c.DelegateType, a, conf)
}
