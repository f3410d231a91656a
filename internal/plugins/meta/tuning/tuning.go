package tuning

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/ipcfg"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// DefaultAllowlist is the node's sysctl allow-list (the reference plugin's
// file). Without it every key under net. may be set.
const DefaultAllowlist = "/etc/cni/tuning/allowlist.conf"

// Options are node settings of the plugin, fixed by the binary that links
// it rather than by a network configuration (a configuration must not be
// able to point at a more permissive allow-list).
type Options struct {
	// AllowlistPath is the sysctl allow-list; "" means none.
	AllowlistPath string
}

// Plugin returns the tuning plugin with the node's default settings.
func Plugin() *pluginmain.Plugin {
	return New(Options{AllowlistPath: DefaultAllowlist})
}

// New returns the tuning plugin with the given settings.
func New(o Options) *pluginmain.Plugin {
	t := &tuning{opts: o}
	return &pluginmain.Plugin{
		Name:   "tuning",
		About:  "linen tuning: sysctls and interface attributes of a pod (chained after an interface plugin)",
		Add:    t.add,
		Del:    t.del,
		Check:  t.check,
		GC:     t.gc,
		Status: t.status,
	}
}

type tuning struct {
	opts Options
}

// sysctls resolves the configured sysctls for ifName, checking the
// allow-list (read only when there are sysctls).
func (t *tuning) sysctls(conf *Config, ifName string) ([]resolved, error) {
	if len(conf.Sysctls) == 0 {
		return nil, nil
	}
	al, err := loadAllowlist(t.opts.AllowlistPath)
	if err != nil {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "%v", err)
	}
	return conf.sysctlsFor(ifName, al)
}

func (t *tuning) add(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) (_ types.Result, err error) {
	conf, err := parseConfig(a.StdinData, a.Args)
	if err != nil {
		return nil, err
	}
	if conf.PrevResult == nil {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: missing: tuning must follow an interface plugin in the chain")
	}
	rs, err := t.sysctls(conf, a.IfName)
	if err != nil {
		return nil, err
	}
	pod, err := netlink.NewHandleAt(a.NS.Handle())
	if err != nil {
		return nil, fmt.Errorf("open netlink in %q: %w", a.Netns, err)
	}
	defer pod.Close()
	var undo pluginmain.Undo
	defer undo.OnError(&err)

	link, err := pod.LinkByName(a.IfName)
	if err != nil {
		if nl.IsNotFound(err) {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidEnv, "CNI_IFNAME: no interface %q in %s", a.IfName, a.Netns)
		}
		return nil, fmt.Errorf("find %q in %s: %w", a.IfName, a.Netns, err)
	}

	// The values before this ADD, saved before anything changes. An
	// earlier ADD of the same attachment may have saved older originals:
	// those are kept, as they are what DEL must restore.
	orig := valuesOf(link)
	before := &state{}
	if conf.MAC != nil {
		before.Mac = orig.MAC.String()
	}
	if conf.MTU != nil {
		before.Mtu = orig.MTU
	}
	if conf.Promisc != nil {
		before.Promisc = &orig.Promisc
	}
	if conf.Allmulti != nil {
		before.Allmulti = &orig.Allmulti
	}
	if conf.TxQLen != nil {
		before.TxQLen = &orig.TxQLen
	}
	if before.Sysctls, err = readSysctls(a.NS, rs); err != nil {
		return nil, err
	}
	path := statePath(conf.DataDir, a.ContainerID, a.IfName)
	old, err := readState(path)
	if err != nil {
		// Unreadable leftovers of this attachment: the values now are the
		// best originals there are.
		env.Log.Warn("tuning: replacing unreadable saved state", "error", err)
		old = nil
	}
	st := *before
	st.Network, st.ContainerID, st.IfName = conf.Network, a.ContainerID, a.IfName
	st.merge(old)
	if err := writeState(path, &st); err != nil {
		return nil, err
	}
	undo.Push(func() {
		if old != nil {
			_ = writeState(path, old)
		} else {
			_ = removeState(path)
		}
	})

	// Sysctls first (an interface's sysctls do not depend on its
	// attributes), then the attributes.
	undo.Push(func() {
		if l, lerr := pod.LinkByIndex(link.Attrs().Index); lerr == nil {
			_ = restoreLink(pod, l, before)
		}
	})
	n, err := writeSysctls(a.NS, rs)
	undo.Push(func() { _ = restoreSysctls(a.NS, before.Sysctls[:n]) })
	if err != nil {
		return nil, err
	}
	if conf.MTU != nil {
		if err := setMTU(pod, link, *conf.MTU); err != nil {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "%s: %v", conf.mtuField, err)
		}
	}
	if conf.MAC != nil {
		if err := setMAC(pod, link, conf.MAC); err != nil {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "%s: %v", conf.macField, err)
		}
	}
	if conf.Promisc != nil {
		if err := setPromisc(pod, link, *conf.Promisc); err != nil {
			return nil, err
		}
	}
	if conf.Allmulti != nil {
		if err := setAllmulti(pod, link, *conf.Allmulti); err != nil {
			return nil, err
		}
	}
	if conf.TxQLen != nil {
		if err := setTxQLen(pod, link, *conf.TxQLen); err != nil {
			return nil, err
		}
	}

	res := conf.PrevResult
	if in := ipcfg.SandboxInterface(res, a.IfName); in != nil && conf.MAC != nil {
		in.Mac = conf.MAC.String()
	}
	return res, nil
}

// del restores what ADD saved and removes the saved state. Without the
// pod's namespace there is nothing to restore; without saved state there
// is nothing to do.
func (t *tuning) del(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	dataDir, err := delDataDir(env, a)
	if err != nil {
		return err
	}
	path := statePath(dataDir, a.ContainerID, a.IfName)
	st, err := readState(path)
	if err != nil {
		env.Log.Warn("tuning: DEL drops unreadable saved state", "error", err)
		return removeState(path)
	}
	if st == nil {
		return nil
	}
	if a.NS != nil {
		if err := restore(a, st); err != nil {
			// Keep the state: a repeated DEL tries again.
			return err
		}
	}
	return removeState(path)
}

func restore(a *pluginmain.Args, st *state) error {
	pod, err := netlink.NewHandleAt(a.NS.Handle())
	if err != nil {
		return fmt.Errorf("open netlink in %q: %w", a.Netns, err)
	}
	defer pod.Close()
	var errs []error
	if l, err := pod.LinkByName(a.IfName); err == nil {
		errs = append(errs, restoreLink(pod, l, st))
	} else if !nl.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("find %q in %s: %w", a.IfName, a.Netns, err))
	}
	errs = append(errs, restoreSysctls(a.NS, st.Sysctls))
	return errors.Join(errs...)
}

// delDataDir returns the state directory of a DEL request. An invalid
// configuration does not block DEL: the directory is all it needs.
func delDataDir(env *pluginmain.Env, a *pluginmain.Args) (string, error) {
	conf, err := parseConfig(a.StdinData, a.Args)
	if err == nil {
		return conf.DataDir, nil
	}
	var w struct {
		DataDir string `json:"dataDir"`
	}
	if pluginmain.DecodeConf(a.StdinData, &w) != nil || (w.DataDir != "" && !filepath.IsAbs(w.DataDir)) {
		return "", err
	}
	env.Log.Warn("tuning: ignoring invalid configuration on DEL", "error", err)
	if w.DataDir == "" {
		return DefaultDataDir, nil
	}
	return w.DataDir, nil
}

// check compares the interface and the sysctls with the configuration.
func (t *tuning) check(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: missing: CHECK needs the result of ADD")
	}
	rs, err := t.sysctls(conf, a.IfName)
	if err != nil {
		return err
	}
	pod, err := netlink.NewHandleAt(a.NS.Handle())
	if err != nil {
		return fmt.Errorf("open netlink in %q: %w", a.Netns, err)
	}
	defer pod.Close()
	link, err := pod.LinkByName(a.IfName)
	if err != nil {
		return fmt.Errorf("interface %q in %s: %w", a.IfName, a.Netns, err)
	}
	cur := valuesOf(link)
	var diffs []string
	if conf.MAC != nil && cur.MAC.String() != conf.MAC.String() {
		diffs = append(diffs, fmt.Sprintf("%s: %q has MAC %s, want %s", conf.macField, a.IfName, cur.MAC, conf.MAC))
	}
	if conf.MTU != nil && cur.MTU != *conf.MTU {
		diffs = append(diffs, fmt.Sprintf("%s: %q has MTU %d, want %d", conf.mtuField, a.IfName, cur.MTU, *conf.MTU))
	}
	if conf.Promisc != nil && cur.Promisc != *conf.Promisc {
		diffs = append(diffs, fmt.Sprintf("promisc: %q has promiscuous mode %s, want %s", a.IfName, onOff(cur.Promisc), onOff(*conf.Promisc)))
	}
	if conf.Allmulti != nil && cur.Allmulti != *conf.Allmulti {
		diffs = append(diffs, fmt.Sprintf("allmulti: %q has all-multicast mode %s, want %s", a.IfName, onOff(cur.Allmulti), onOff(*conf.Allmulti)))
	}
	if conf.TxQLen != nil && cur.TxQLen != *conf.TxQLen {
		diffs = append(diffs, fmt.Sprintf("txQLen: %q has queue length %d, want %d", a.IfName, cur.TxQLen, *conf.TxQLen))
	}
	now, err := readSysctls(a.NS, rs)
	if err != nil {
		return err
	}
	for i, r := range rs {
		if normValue(now[i].Value) != normValue(r.Value) {
			diffs = append(diffs, fmt.Sprintf("%s: /proc/sys/%s is %q, want %q", r.Field, r.Path, now[i].Value, r.Value))
		}
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

// gc removes saved state of this network's attachments that are not in
// cni.dev/valid-attachments (their pods are gone; nothing is left to
// restore). Files without a network (the reference plugin's) are left.
func (t *tuning) gc(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	valid, err := pluginmain.ValidAttachments(a.StdinData)
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(conf.DataDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("list saved state: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(conf.DataDir, e.Name())
		st, err := readState(path)
		if err != nil || st == nil {
			env.Log.Debug("tuning: GC skips a file", "path", path, "error", err)
			continue
		}
		if st.Network != conf.Network || valid.Keep(st.ContainerID, st.IfName) ||
			path != statePath(conf.DataDir, st.ContainerID, st.IfName) {
			continue
		}
		env.Log.Debug("tuning: GC removes stale state", "path", path)
		if err := removeState(path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// status reports the plugin unusable when the allow-list cannot be read
// or parsed: every ADD with sysctls would fail.
func (t *tuning) status(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) error {
	if _, err := parseConfig(a.StdinData, a.Args); err != nil {
		return err
	}
	if _, err := loadAllowlist(t.opts.AllowlistPath); err != nil {
		return pluginmain.Errorf(pluginmain.CodeNotAvailable, "%v", err)
	}
	return nil
}
