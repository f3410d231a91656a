// Command linen-cni is every linen CNI plugin in one binary. It picks the
// plugin from the name it was started under (argv[0], as installed by
// `linen install`: /opt/cni/bin/bridge, /opt/cni/bin/host-local, ...) or,
// when started as linen-cni, from its first argument.
//
// It stays lean: every pod start pays its exec and initialisation, so it
// links no etcd, gRPC or Kubernetes code.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"linen.dev/linen/internal/plugins/ipam/dhcp"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/registry"
	"linen.dev/linen/internal/reaper"
)

func main() {
	os.Exit(run(os.Args))
}

func run(args []string) int {
	name := filepath.Base(args[0])
	if name == reaper.Name {
		return reaper.Main(args[1:], os.Stderr)
	}
	// The dhcp plugin's daemon: "dhcp daemon" (installed as dhcp) or
	// "linen-cni dhcp daemon".
	if name == "dhcp" && dhcp.IsDaemonCommand(args[1:]) {
		return dhcp.DaemonMain(args[2:], os.Stderr)
	}
	if len(args) > 1 && args[1] == "dhcp" && dhcp.IsDaemonCommand(args[2:]) {
		return dhcp.DaemonMain(args[3:], os.Stderr)
	}
	reg := registry.New()
	p := reg.Lookup(name)
	if p == nil {
		if len(args) < 2 {
			usage(reg)
			return 2
		}
		switch args[1] {
		case "--plugins", "-plugins":
			for _, n := range reg.Names() {
				fmt.Println(n)
			}
			return 0
		case "-h", "--help", "help":
			usage(reg)
			return 0
		}
		p = reg.Lookup(args[1])
		if p == nil {
			fmt.Fprintf(os.Stderr, "linen-cni: unknown plugin %q (have: %s)\n", args[1], strings.Join(reg.Names(), ", "))
			return 2
		}
	}
	return pluginmain.Main(p, reg, os.Stdin, os.Stdout, os.Stderr)
}

func usage(reg *pluginmain.Registry) {
	fmt.Fprintf(os.Stderr, `linen-cni: every linen CNI plugin in one binary.

Run as a plugin name (a link named after the plugin, as "linen install"
creates) or as "linen-cni PLUGIN" with the CNI_* environment and the
network configuration on stdin.

  linen-cni --plugins    list the plugin names
  linen-cni dhcp daemon [flags]
                         run the daemon of the dhcp IPAM plugin
                         (linen-cni dhcp daemon -h lists its flags)

Plugins: %s
`, strings.Join(reg.Names(), ", "))
}
