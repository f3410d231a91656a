package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/plugintest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-bench-") }

// TestRunCNISmall runs the whole CNI benchmark at a tiny size: every
// series of both chains and both implementations is filled without errors,
// the scale case splits its sample over the alternating visits, and the
// report prints the ratios. It measures nothing worth reading.
func TestRunCNISmall(t *testing.T) {
	nstest.RequireRoot(t)
	plugintest.RequireRef(t, "bridge", "host-local", "portmap", "loopback")
	if testing.Short() {
		t.Skip("skipped in -short mode: builds linen-cni and runs both plugin sets")
	}
	bin := filepath.Join(t.TempDir(), "linen-cni")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "linen.dev/linen/cmd/linen-cni")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build linen-cni: %v\n%s", err, out)
	}
	var progress bytes.Buffer
	rep, err := RunCNI(context.Background(), CNIOptions{
		Pods: 3, Concurrency: 2, Rounds: 1, ScalePods: 4, ScaleSample: 5, ScaleRounds: 2,
		Settle: -1, LinenCNI: bin, Prefix: nstest.Prefix(), Out: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"sequential": 3, "concurrent": 2, "churn": 2, "0 pods present": 5, "4 pods present": 5,
	}
	seen := map[string]int{}
	for _, s := range rep.Series {
		if s.Errors != 0 {
			t.Errorf("%s/%s/%s/%s: %d errors", s.Chain, s.Impl, s.Case, s.Op, s.Errors)
		}
		if n := want[s.Case]; len(s.Samples) != n {
			t.Errorf("%s/%s/%s/%s: %d samples, want %d", s.Chain, s.Impl, s.Case, s.Op, len(s.Samples), n)
		}
		if (s.Case == "concurrent" || s.Case == "churn") && s.Wall <= 0 {
			t.Errorf("%s/%s concurrent %s: no wall time", s.Chain, s.Impl, s.Op)
		}
		seen[s.Chain+" "+s.Case]++
	}
	// 2 implementations x ADD/DEL per case; the scale case only for (b).
	for _, k := range []string{"a sequential", "a concurrent", "a churn", "b sequential", "b concurrent", "b churn", "b 0 pods present", "b 4 pods present"} {
		if seen[k] != 4 {
			t.Errorf("%s: %d series, want 4", k, seen[k])
		}
	}
	if seen["a 0 pods present"] != 0 {
		t.Error("chain (a) has a scale case")
	}
	var out bytes.Buffer
	rep.Print(&out)
	for _, s := range []string{"(a) bridge + host-local", "ratio (median)", "linen ADD median with 4 pods", "reference's throughput", "churn (ADD then DEL", "Per-pod files"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, out.String())
		}
	}
}

// TestStateDir: the default state directory exists and the report can
// name the file system of any directory.
func TestStateDir(t *testing.T) {
	d := DefaultStateDir()
	if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
		t.Fatalf("DefaultStateDir() = %q: not a directory (%v)", d, err)
	}
	if got := fsName(t.TempDir()); got == "unknown" || got == "" {
		t.Errorf("fsName(TempDir) = %q", got)
	}
	if got := fsName(filepath.Join(t.TempDir(), "missing")); got != "unknown" {
		t.Errorf("fsName(missing) = %q, want unknown", got)
	}
}
