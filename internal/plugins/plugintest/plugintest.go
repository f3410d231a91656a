// Package plugintest drives plugins in process for tests: it runs
// pluginmain.Invoke from a thread inside a test "host" namespace, so the
// plugin treats that namespace as the node, and offers traffic probes that
// run inside a namespace.
package plugintest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// RefPluginDir is where Debian's containernetworking-plugins puts the
// reference plugins.
const RefPluginDir = "/usr/lib/cni"

// RequireRef skips the test when the reference plugins are not installed.
func RequireRef(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := os.Stat(RefPluginDir + "/" + n); err != nil {
			t.Skipf("skipped: reference plugin %s not installed (apt-get install containernetworking-plugins)", n)
		}
	}
}

// Env returns an environment that runs every plugin of reg in process
// (whatever CNI_PATH holds) and execs anything else from CNI_PATH.
func Env(reg *pluginmain.Registry) *pluginmain.Env {
	return &pluginmain.Env{
		Stderr:    os.Stderr,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry:  reg,
		InProcess: func(string, string) bool { return true },
	}
}

// Conf builds a chained plugin's stdin in cniVersion v: the keys of base
// (name, type, ...), then those of extra (the members of a JSON object
// without its braces, "" for none; they win over base), and, unless prev is
// nil, prev converted to version v as prevResult.
func Conf(t testing.TB, v string, base map[string]any, extra string, prev *current.Result) []byte {
	t.Helper()
	m := map[string]any{"cniVersion": v}
	for k, val := range base {
		m[k] = val
	}
	if extra != "" {
		if err := json.Unmarshal([]byte("{"+extra+"}"), &m); err != nil {
			t.Fatalf("extra keys %q: %v", extra, err)
		}
	}
	if prev != nil {
		r, err := prev.GetAsVersion(v)
		if err != nil {
			t.Fatalf("prevResult in version %s: %v", v, err)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var raw any
		if err := json.Unmarshal(b, &raw); err != nil {
			t.Fatal(err)
		}
		m["prevResult"] = raw
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Call describes one invocation.
type Call struct {
	Command     string
	ContainerID string
	NS          *netns.NS // pod namespace; nil -> CNI_NETNS=""
	NetnsPath   string    // overrides NS's path when set
	IfName      string
	Args        string
	Path        string
	Conf        []byte
}

// Invoke runs the call from a thread inside host and returns stdout or the
// CNI error.
func Invoke(host *netns.NS, env *pluginmain.Env, p *pluginmain.Plugin, c Call) ([]byte, *types.Error) {
	a := &pluginmain.Args{
		Command: c.Command, ContainerID: c.ContainerID, IfName: c.IfName,
		Args: c.Args, Path: c.Path, StdinData: c.Conf,
	}
	if c.NS != nil {
		a.Netns = c.NS.Path()
	}
	if c.NetnsPath != "" {
		a.Netns = c.NetnsPath
	}
	if a.Path == "" {
		a.Path = RefPluginDir
	}
	var out []byte
	var cerr *types.Error
	err := host.Do(func() error {
		out, _, cerr = pluginmain.Invoke(context.Background(), env, p, a)
		return nil
	})
	if err != nil {
		return nil, &types.Error{Code: 999, Msg: err.Error()}
	}
	return out, cerr
}

// Add runs ADD and decodes the result as 1.1.0; it fails the test on error.
func Add(t testing.TB, host *netns.NS, env *pluginmain.Env, p *pluginmain.Plugin, c Call) *current.Result {
	t.Helper()
	c.Command = "ADD"
	out, cerr := Invoke(host, env, p, c)
	if cerr != nil {
		t.Fatalf("ADD: %v (code %d)", cerr, cerr.Code)
	}
	var head struct {
		CNIVersion string `json:"cniVersion"`
	}
	_ = json.Unmarshal(c.Conf, &head)
	res, err := version.NewResult(head.CNIVersion, out)
	if err != nil {
		t.Fatalf("ADD result %s: %v", out, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatalf("ADD result %s: %v", out, err)
	}
	return r
}

// Must runs a verb without result and fails the test on error.
func Must(t testing.TB, host *netns.NS, env *pluginmain.Env, p *pluginmain.Plugin, cmd string, c Call) {
	t.Helper()
	c.Command = cmd
	if _, cerr := Invoke(host, env, p, c); cerr != nil {
		t.Fatalf("%s: %v (code %d)", cmd, cerr, cerr.Code)
	}
}

// Exec runs a program from a thread inside ns (the child inherits the
// thread's namespace) and returns its combined output.
func Exec(ns *netns.NS, timeout time.Duration, name string, args ...string) (string, error) {
	var out []byte
	var rerr error
	err := ns.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out, rerr = exec.CommandContext(ctx, name, args...).CombinedOutput()
		return nil
	})
	if err != nil {
		return "", err
	}
	if rerr != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), rerr, out)
	}
	return string(out), nil
}

// Ping sends up to three echo requests from ns to addr and reports whether
// one was answered.
func Ping(ns *netns.NS, addr string) error {
	_, err := Exec(ns, 10*time.Second, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-w", "4", "-q", addr)
	return err
}
