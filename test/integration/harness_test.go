// Package integration drives the built linen-cni binary the way runtimes
// do: exec'd with the CNI_* environment, and through libcni with conflists
// that mix linen's plugins with the reference plugins.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
)

// binDir holds linen-cni and one link per plugin name.
var binDir string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		// nstest.Main runs the tests; each one skips with its reason.
		nstest.Main(m, "lt-integ-")
		return
	}
	dir, err := os.MkdirTemp("", "linen-integ-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "build linen-cni:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	defer os.RemoveAll(dir)
	nstest.Main(m, "lt-integ-")
}

func build(dir string) error {
	bin := filepath.Join(dir, "linen-cni")
	if pre := os.Getenv("LINEN_BIN"); pre != "" {
		data, err := os.ReadFile(filepath.Join(pre, "linen-cni"))
		if err != nil {
			return err
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			return err
		}
	} else {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s", "-o", bin, "linen.dev/linen/cmd/linen-cni")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return err
		}
	}
	out, err := exec.Command(bin, "--plugins").Output()
	if err != nil {
		return fmt.Errorf("list plugins: %w", err)
	}
	for _, name := range strings.Fields(string(out)) {
		if err := os.Link(bin, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// refDir is the reference plugins' directory (Debian package).
const refDir = "/usr/lib/cni"

func requireRef(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(refDir, n)); err != nil {
			t.Skipf("skipped: reference plugin %s not installed (apt-get install containernetworking-plugins)", n)
		}
	}
}

// execResult is what one plugin process did.
type execResult struct {
	Stdout []byte
	Stderr string
	Code   int
}

// CNIError decodes stdout as the error object.
func (r execResult) CNIError(t *testing.T) *types.Error {
	t.Helper()
	var e struct {
		CNIVersion string `json:"cniVersion"`
		types.Error
	}
	if err := json.Unmarshal(r.Stdout, &e); err != nil {
		t.Fatalf("stdout is not an error object: %q (%v)", r.Stdout, err)
	}
	return &e.Error
}

// runPlugin execs the plugin binary from a thread inside host.
func runPlugin(t *testing.T, host *netns.NS, plugin string, env map[string]string, stdin []byte) execResult {
	t.Helper()
	var res execResult
	err := host.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, plugin))
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Stdin = bytes.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		res = execResult{Stdout: out.Bytes(), Stderr: errb.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			res.Code = ee.ExitCode()
		} else if err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("run %s: %v", plugin, err)
	}
	return res
}

// cniRuntime runs conflists through libcni from a thread in host.
type cniRuntime struct {
	host  *netns.NS
	cni   *libcni.CNIConfig
	cache string
}

func newRuntime(t *testing.T, host *netns.NS, path ...string) *cniRuntime {
	t.Helper()
	cache := t.TempDir()
	// An explicit exec: libcni creates its default one lazily without a
	// lock, which races when ADDs run concurrently.
	ex := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}
	return &cniRuntime{host: host, cni: libcni.NewCNIConfigWithCacheDir(path, cache, ex), cache: cache}
}

func (r *cniRuntime) add(t *testing.T, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) *current.Result {
	t.Helper()
	res, err := r.tryAdd(list, rt)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// tryAdd is add for goroutines other than the test's.
func (r *cniRuntime) tryAdd(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	var err error
	if derr := r.host.Do(func() error {
		res, err = r.cni.AddNetworkList(context.Background(), list, rt)
		return nil
	}); derr != nil {
		return nil, derr
	}
	if err != nil {
		return nil, fmt.Errorf("ADD %s: %w", list.Name, err)
	}
	return current.NewResultFromResult(res)
}

func (r *cniRuntime) do(t *testing.T, verb string, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	t.Helper()
	var err error
	if derr := r.host.Do(func() error {
		ctx := context.Background()
		switch verb {
		case "DEL":
			err = r.cni.DelNetworkList(ctx, list, rt)
		case "CHECK":
			err = r.cni.CheckNetworkList(ctx, list, rt)
		case "STATUS":
			err = r.cni.GetStatusNetworkList(ctx, list)
		default:
			err = fmt.Errorf("verb %s", verb)
		}
		return nil
	}); derr != nil {
		t.Fatal(derr)
	}
	return err
}

func (r *cniRuntime) gc(t *testing.T, list *libcni.NetworkConfigList, valid []types.GCAttachment) error {
	t.Helper()
	var err error
	if derr := r.host.Do(func() error {
		err = r.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: valid})
		return nil
	}); derr != nil {
		t.Fatal(derr)
	}
	return err
}

func confList(t *testing.T, s string) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.ConfListFromBytes([]byte(s))
	if err != nil {
		t.Fatalf("conflist: %v\n%s", err, s)
	}
	return l
}

func execOutput(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}
