package main

import (
	"context"
	"fmt"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strings"

	"github.com/containernetworking/cni/pkg/version"

	"linen.dev/linen/internal/runtime"
)

func runInstall(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen install", "[flags]", `
Install the linen-cni multi-call binary into the CNI bin directory and link
every plugin name (bridge, host-local, ...) to it. The plugin names are what
"linen-cni --plugins" prints, unless --plugins gives them.

Every file appears atomically: the binary is copied to a temporary file in
the directory, synced and renamed into place; each plugin name is a hard
link made under a temporary name and renamed over the old file. A pod start
running meanwhile sees the old or the new plugin, never a missing or partly
written one. Installing again replaces the previous installation.`)
	binDir := fs.String("cni-bin-dir", runtime.DefaultBinDir, "CNI plugin `directory` to install into")
	from := fs.String("from", defaultFrom(), "linen-cni `binary` to install")
	plugins := fs.String("plugins", "", "comma-separated plugin `names` (default: ask the binary)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("linen install: unexpected argument %q (see -h)", pos[0])
	}
	opts := runtime.InstallOptions{BinDir: *binDir, From: *from}
	if *plugins != "" {
		opts.Plugins = []string{}
		for _, n := range strings.Split(*plugins, ",") {
			if n = strings.TrimSpace(n); n != "" {
				opts.Plugins = append(opts.Plugins, n)
			}
		}
	}
	res, err := runtime.Install(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "installed %s (from %s)\n", res.Binary, *from)
	for _, n := range res.Plugins {
		fmt.Fprintf(c.stdout, "linked    %s -> %s\n", filepath.Join(filepath.Dir(res.Binary), n), runtime.MultiCallName)
	}
	return nil
}

func runVersion(_ context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen version", "", "Print linen's version, the Go version and the CNI spec versions it speaks.")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("linen version: unexpected argument %q", pos[0])
	}
	v := "(unknown)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v += " " + s.Value
			}
		}
	}
	fmt.Fprintf(c.stdout, "linen %s\n%s %s/%s\nCNI spec %s\n", v, goruntime.Version(), goruntime.GOOS, goruntime.GOARCH,
		strings.Join(version.All.SupportedVersions(), ", "))
	return nil
}
