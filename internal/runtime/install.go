package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"linen.dev/linen/internal/atomicfile"
)

// MultiCallName is the file name of the multi-call plugin binary.
const MultiCallName = "linen-cni"

// InstallOptions says what Install puts where.
type InstallOptions struct {
	// BinDir is the plugin directory (default /opt/cni/bin).
	BinDir string
	// From is the linen-cni binary to install.
	From string
	// Plugins are the plugin names to link; nil means the names that
	// `From --plugins` prints, one per line.
	Plugins []string
}

// Installed reports what Install did.
type Installed struct {
	// Binary is the installed multi-call binary.
	Binary string
	// Plugins are the plugin names now linked to Binary, in order.
	Plugins []string
}

// Install puts the multi-call binary into BinDir and every plugin name as a
// hard link to it. Each file appears atomically: the binary is copied to a
// temporary file in BinDir, synced and renamed over BinDir/linen-cni; each
// name is linked to it under a temporary name and renamed over the target.
// A pod start running meanwhile finds the old or the new plugin, never a
// missing or half-written one, and a plugin being executed keeps running
// from its old inode. Installing again over an installation replaces it.
func Install(ctx context.Context, o InstallOptions) (*Installed, error) {
	if o.BinDir == "" {
		o.BinDir = DefaultBinDir
	}
	if o.From == "" {
		return nil, errors.New("install: no linen-cni binary given")
	}
	names := o.Plugins
	if names == nil {
		var err error
		names, err = pluginNames(ctx, o.From)
		if err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
	}
	if err := checkPluginNames(names); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := os.MkdirAll(o.BinDir, 0o755); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	bin := filepath.Join(o.BinDir, MultiCallName)
	if err := installCopy(o.From, bin); err != nil {
		return nil, fmt.Errorf("install %s: %w", bin, err)
	}
	for _, n := range names {
		if err := replaceWithLink(bin, filepath.Join(o.BinDir, n)); err != nil {
			return nil, fmt.Errorf("install %s: %w", n, err)
		}
	}
	if err := atomicfile.SyncDir(o.BinDir); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	return &Installed{Binary: bin, Plugins: names}, nil
}

// pluginNames runs `bin --plugins`.
func pluginNames(ctx context.Context, bin string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out []byte
	var err error
	// A binary written just before (tests, a fresh build) can briefly be
	// "text file busy" while a concurrently forked child still holds its
	// write descriptor.
	for try := 0; try < 5; try++ {
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, "--plugins")
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ETXTBSY) {
			if stderr.Len() > 0 {
				err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
			}
			return nil, fmt.Errorf("list plugins with %s --plugins: %w", bin, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("list plugins with %s --plugins: %w", bin, err)
	}
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if n := strings.TrimSpace(sc.Text()); n != "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s --plugins printed no plugin names", bin)
	}
	return names, nil
}

func checkPluginNames(names []string) error {
	if len(names) == 0 {
		return errors.New("no plugin names")
	}
	var errs []error
	seen := map[string]bool{}
	for _, n := range names {
		switch {
		case n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\\\x00") || strings.HasPrefix(n, "."):
			errs = append(errs, fmt.Errorf("plugin name %q is not a file name", n))
		case n == MultiCallName:
			errs = append(errs, fmt.Errorf("plugin name %q is the binary's own name", n))
		case seen[n]:
			errs = append(errs, fmt.Errorf("plugin name %q given twice", n))
		}
		seen[n] = true
	}
	return errors.Join(errs...)
}

// installCopy copies src to dst through a synced temporary file in dst's
// directory and a rename.
func installCopy(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".linen-install-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = io.Copy(tmp, in); err != nil {
		return err
	}
	if err = tmp.Chmod(0o755); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// replaceWithLink makes dst a hard link to target, atomically.
func replaceWithLink(target, dst string) error {
	tmp := filepath.Join(filepath.Dir(dst), ".linen-install-"+randHex(6))
	if err := os.Link(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	// rename(2) does nothing when both names are links to one inode.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
