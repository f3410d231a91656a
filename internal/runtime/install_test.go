package runtime

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeMultiCall writes a script that answers --plugins like linen-cni.
func fakeMultiCall(t *testing.T, dir, tag string, names ...string) string {
	t.Helper()
	p := filepath.Join(dir, "linen-cni")
	script := "#!/bin/sh\n# " + tag + "\nif [ \"$1\" = --plugins ]; then printf '" + strings.Join(names, `\n`) + `\n'; exit 0; fi` + "\nexit 3\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() {
		t.Fatalf("%s is %v, not a regular file", p, fi.Mode())
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func checkInstall(t *testing.T, binDir, src string, names []string) {
	t.Helper()
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, MultiCallName)
	got, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s", bin, src)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("%s mode %v, want 0755", bin, fi.Mode().Perm())
	}
	binIno := ino(t, bin)
	if binIno == ino(t, src) {
		t.Errorf("%s is the source file itself, not a copy", bin)
	}
	for _, n := range names {
		if got := ino(t, filepath.Join(binDir, n)); got != binIno {
			t.Errorf("%s: inode %d, want %d (a hard link to %s)", n, got, binIno, MultiCallName)
		}
	}
	if nlink := fi.Sys().(*syscall.Stat_t).Nlink; int(nlink) != len(names)+1 {
		t.Errorf("%s has %d links, want %d", bin, nlink, len(names)+1)
	}
	ents, err := os.ReadDir(binDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left in %s", e.Name(), binDir)
		}
	}
}

func TestInstall(t *testing.T) {
	ctx := context.Background()
	srcDir, binDir := t.TempDir(), filepath.Join(t.TempDir(), "bin")
	names := []string{"bridge", "host-local", "portmap"}
	src := fakeMultiCall(t, srcDir, "v1", names...)

	got, err := Install(ctx, InstallOptions{BinDir: binDir, From: src})
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	if diff := cmp.Diff(&Installed{Binary: filepath.Join(binDir, MultiCallName), Plugins: names}, got); diff != "" {
		t.Errorf("Installed (-want +got):\n%s", diff)
	}
	checkInstall(t, binDir, src, names)
	oldIno := ino(t, filepath.Join(binDir, "bridge"))

	// A file a plugin process still runs from keeps its content when the
	// installation is replaced.
	old, err := os.Open(filepath.Join(binDir, "bridge"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	// Re-install a new version over the old one, with a foreign plugin of
	// the same name as one of ours replaced and a foreign file kept.
	if err := os.WriteFile(filepath.Join(binDir, "other"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	src2 := fakeMultiCall(t, srcDir, "v2", names...)
	if _, err := Install(ctx, InstallOptions{BinDir: binDir, From: src2}); err != nil {
		t.Fatalf("re-install: %v", err)
	}
	checkInstall(t, binDir, src2, names)
	if ino(t, filepath.Join(binDir, "bridge")) == oldIno {
		t.Error("re-install kept the old inode")
	}
	oldContent := make([]byte, 64)
	n, _ := old.ReadAt(oldContent, 0)
	if !strings.Contains(string(oldContent[:n]), "# v1") {
		t.Errorf("the old binary changed under an open descriptor: %q", oldContent[:n])
	}
	if _, err := os.Stat(filepath.Join(binDir, "other")); err != nil {
		t.Errorf("foreign file: %v", err)
	}

	// Installing from the installed binary itself works too.
	if _, err := Install(ctx, InstallOptions{BinDir: binDir, From: filepath.Join(binDir, MultiCallName)}); err != nil {
		t.Fatalf("install from the installed binary: %v", err)
	}
	checkInstall(t, binDir, src2, names)
}

func TestInstallExplicitPlugins(t *testing.T) {
	srcDir, binDir := t.TempDir(), t.TempDir()
	src := fakeMultiCall(t, srcDir, "v1") // prints no names
	if _, err := Install(context.Background(), InstallOptions{BinDir: binDir, From: src}); err == nil || !strings.Contains(err.Error(), "no plugin names") {
		t.Errorf("Install with a binary listing nothing = %v, want an error", err)
	}
	if _, err := Install(context.Background(), InstallOptions{BinDir: binDir, From: src, Plugins: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	checkInstall(t, binDir, src, []string{"a", "b"})
}

func TestInstallErrors(t *testing.T) {
	srcDir := t.TempDir()
	src := fakeMultiCall(t, srcDir, "v1", "bridge")
	tests := []struct {
		name    string
		opts    InstallOptions
		wantErr string
	}{
		{"no source", InstallOptions{}, "no linen-cni binary"},
		{"missing source", InstallOptions{From: filepath.Join(srcDir, "nope")}, "nope"},
		{"bad names", InstallOptions{From: src, Plugins: []string{"a/b", "..", ".x", "linen-cni", "ok", "ok"}}, `"a/b" is not a file name`},
		{"source is a directory", InstallOptions{From: srcDir, Plugins: []string{"a"}}, "not a regular file"},
		{"source fails --plugins", InstallOptions{From: "/bin/false"}, "--plugins"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			binDir := t.TempDir()
			tc.opts.BinDir = binDir
			_, err := Install(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Install = %v, want an error containing %q", err, tc.wantErr)
			}
			ents, _ := os.ReadDir(binDir)
			if len(ents) != 0 {
				t.Errorf("failed install left %d files", len(ents))
			}
		})
	}
}
