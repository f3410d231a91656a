package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/plugintest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-linen-") }

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args    []string
		wantPos []string
		wantX   string
		wantN   int
		wantErr bool
	}{
		{args: nil, wantPos: nil},
		{args: []string{"a"}, wantPos: []string{"a"}},
		{args: []string{"-x", "1", "a"}, wantPos: []string{"a"}, wantX: "1"},
		{args: []string{"a", "--x", "1"}, wantPos: []string{"a"}, wantX: "1"},
		{args: []string{"a", "-n", "b", "-x=2", "c"}, wantPos: []string{"a", "b", "c"}, wantX: "2", wantN: 1},
		{args: []string{"a", "--", "-x", "b"}, wantPos: []string{"a", "-x", "b"}},
		{args: []string{"-n", "-n", "a"}, wantPos: []string{"a"}, wantN: 2},
		{args: []string{"a", "-y"}, wantErr: true},
		{args: []string{"a", "-x"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			c := &cli{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
			fs := newFlagSet(c, "test", "", "")
			x := fs.String("x", "", "")
			n := 0
			fs.BoolFunc("n", "", func(string) error { n++; return nil })
			pos, err := parseArgs(fs, tc.args)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parseArgs = %q, want an error", pos)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantPos, pos); diff != "" {
				t.Errorf("positional (-want +got):\n%s", diff)
			}
			if *x != tc.wantX || n != tc.wantN {
				t.Errorf("x=%q n=%d, want %q %d", *x, n, tc.wantX, tc.wantN)
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		args       []string
		code       int
		wantStdout string
		wantStderr string
	}{
		{args: nil, code: 2, wantStderr: "linen: missing command"},
		{args: []string{"nope"}, code: 2, wantStderr: `linen: unknown command "nope"`},
		{args: []string{"help"}, code: 0, wantStdout: "Usage: linen COMMAND"},
		{args: []string{"-h"}, code: 0, wantStdout: "install"},
		{args: []string{"help", "pod"}, code: 0, wantStdout: "Usage: linen pod COMMAND"},
		{args: []string{"pod"}, code: 2, wantStderr: "linen pod: missing command"},
		{args: []string{"pod", "add"}, code: 2, wantStderr: "linen pod add: want one pod NAME"},
		{args: []string{"pod", "add", "-h"}, code: 0, wantStdout: "[hostIP:]hostPort:containerPort"},
		{args: []string{"pod", "add", "a", "--port", "80"}, code: 2, wantStderr: `invalid value "80" for flag -port`},
		{args: []string{"pod", "add", "a", "--bandwidth", "up=1M"}, code: 2, wantStderr: `unknown key "up"`},
		{args: []string{"pod", "add", "a", "--ip", "x"}, code: 2, wantStderr: `invalid value "x" for flag -ip`},
		{args: []string{"pod", "add", "Bad", "--net-dir", "/nonexistent"}, code: 1, wantStderr: `pod name "Bad"`},
		{args: []string{"pod", "del"}, code: 2, wantStderr: "want at least one pod NAME"},
		{args: []string{"pod", "check", "-h"}, code: 0, wantStdout: "Usage: linen pod check NAME"},
		{args: []string{"pod", "list", "x"}, code: 2, wantStderr: `unexpected argument "x"`},
		{args: []string{"pod", "gc", "-h"}, code: 0, wantStdout: "Usage: linen pod gc"},
		{args: []string{"status", "--net-dir", "/nonexistent"}, code: 1, wantStderr: "linen: no valid network configuration in /nonexistent"},
		{args: []string{"status", "-h"}, code: 0, wantStdout: "Usage: linen status"},
		{args: []string{"install", "-h"}, code: 0, wantStdout: "Usage: linen install"},
		{args: []string{"version"}, code: 0, wantStdout: "CNI spec 0.1.0"},
		{args: []string{"version", "-h"}, code: 0, wantStdout: "Usage: linen version"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stdout %q, stderr %q)", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.wantStdout) {
				t.Errorf("stdout %q does not contain %q", stdout, tc.wantStdout)
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.wantStderr)
			}
		})
	}
}

func TestHelpIsErrHelp(t *testing.T) {
	c := &cli{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	if _, err := parseArgs(newFlagSet(c, "x", "", "d"), []string{"-h"}); err != flag.ErrHelp {
		t.Errorf("parseArgs(-h) = %v, want flag.ErrHelp", err)
	}
}

func TestInstallCommand(t *testing.T) {
	src := filepath.Join(t.TempDir(), "linen-cni")
	script := "#!/bin/sh\n[ \"$1\" = --plugins ] && printf 'bridge\\nhost-local\\n'\n"
	if err := os.WriteFile(src, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "bin")
	for range 2 { // the second run installs over the first
		code, stdout, stderr := runCLI("install", "--cni-bin-dir", bin, "--from", src)
		if code != 0 {
			t.Fatalf("linen install: exit %d: %s", code, stderr)
		}
		want := fmt.Sprintf("installed %s/linen-cni (from %s)\nlinked    %[1]s/bridge -> linen-cni\nlinked    %[1]s/host-local -> linen-cni\n", bin, src)
		if stdout != want {
			t.Errorf("stdout\n%s\nwant\n%s", stdout, want)
		}
	}
	var inos []uint64
	for _, n := range []string{"linen-cni", "bridge", "host-local"} {
		fi, err := os.Lstat(filepath.Join(bin, n))
		if err != nil {
			t.Fatal(err)
		}
		inos = append(inos, fi.Sys().(*syscall.Stat_t).Ino)
	}
	if inos[0] != inos[1] || inos[0] != inos[2] {
		t.Errorf("inodes %v: want one file", inos)
	}

	code, stdout, stderr := runCLI("install", "--cni-bin-dir", bin, "--from", src, "--plugins", "a, b")
	if code != 0 || !strings.Contains(stdout, bin+"/b -> linen-cni") {
		t.Errorf("install --plugins: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestPodCommands drives the pod commands end to end with the reference
// plugins in a test host namespace.
func TestPodCommands(t *testing.T) {
	host := nstest.New(t)
	plugintest.RequireRef(t, "bridge", "host-local")
	dir := t.TempDir()
	netDir := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ltlinen","plugins":[{"type":"bridge","bridge":"ltlinen0","isGateway":true,
	  "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.99.250.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`, filepath.Join(dir, "ipam"))
	if err := os.WriteFile(filepath.Join(netDir, "10-ltlinen.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--net-dir", netDir, "--cni-bin-dir", plugintest.RefPluginDir, "--cache-dir", filepath.Join(dir, "cache"),
		"--state-dir", filepath.Join(dir, "state"), "--netns-prefix", nstest.Prefix() + "p-", "--host-netns", host.Path()}
	cmd := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := runCLI(append(args, flags...)...)
		if code != 0 {
			t.Fatalf("linen %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		return stdout
	}
	t.Cleanup(func() { runCLI(append([]string{"pod", "del", "web", "db"}, flags...)...) })

	if out := cmd("status"); !strings.Contains(out, "network:  ltlinen") || !strings.Contains(out, "status:   ready") {
		t.Errorf("status:\n%s", out)
	}
	out := cmd("pod", "add", "web", "--namespace", "shop")
	ip, err := netip.ParseAddr(strings.TrimSpace(out))
	if err != nil || !netip.MustParsePrefix("10.99.250.0/24").Contains(ip) {
		t.Fatalf("pod add printed %q, want one address in 10.99.250.0/24", out)
	}
	if out := cmd("pod", "add", "db", "--json"); !strings.Contains(out, `"cniVersion": "1.0.0"`) || !strings.Contains(out, `"sandbox"`) {
		t.Errorf("pod add --json:\n%s", out)
	}
	if code, _, stderr := runCLI(append([]string{"pod", "add", "web"}, flags...)...); code != 1 || !strings.Contains(stderr, "pod exists") {
		t.Errorf("second pod add web: exit %d, %s", code, stderr)
	}
	if out := cmd("pod", "check", "web"); out != "pod web ok\n" {
		t.Errorf("pod check: %q", out)
	}
	list := cmd("pod", "list")
	lines := strings.Split(strings.TrimSpace(list), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[2], "web") ||
		!strings.Contains(lines[2], "shop") || !strings.Contains(lines[2], ip.String()+"/24") || !strings.Contains(lines[2], "ltlinen") {
		t.Errorf("pod list:\n%s", list)
	}
	if out := cmd("pod", "list", "--json"); !strings.Contains(out, `"namespace": "shop"`) {
		t.Errorf("pod list --json:\n%s", out)
	}
	if out := cmd("pod", "del", "web", "db", "web"); out != "pod web deleted\npod db deleted\npod web not found\n" {
		t.Errorf("pod del: %q", out)
	}
	if out := cmd("pod", "gc"); !strings.HasPrefix(out, "nothing to collect") {
		t.Errorf("pod gc: %q", out)
	}
	if out := cmd("pod", "list"); strings.Count(out, "\n") != 1 {
		t.Errorf("pod list after del:\n%s", out)
	}
}
