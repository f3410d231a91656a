package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/runtime"
)

func podCommands() []command {
	return []command{
		{"add", "create a pod's network namespace and attach it to the default network", podAdd},
		{"del", "detach pods and remove their namespaces (idempotent)", podDel},
		{"check", "run CNI CHECK for a pod", podCheck},
		{"list", "list the pods with their addresses", podList},
		{"gc", "remove what lost deletes and crashes left behind", podGC},
	}
}

func runPod(ctx context.Context, c *cli, args []string) error {
	return dispatch(ctx, c, "linen pod", podCommands(), args)
}

// runtimeFlags are the flags that say where a Runtime finds its
// configuration, plugins and state.
type runtimeFlags struct {
	netDir, binDirs, cacheDir, stateDir string
	netnsDir, netnsPrefix, ifName       string
	hostNetns                           string
	verbose                             bool
}

func addRuntimeFlags(fs *flagSet) *runtimeFlags {
	f := &runtimeFlags{}
	fs.StringVar(&f.netDir, "net-dir", runtime.DefaultNetDir, "network configuration `directory`")
	fs.StringVar(&f.binDirs, "cni-bin-dir", runtime.DefaultBinDir, "plugin `directories`, separated by ':'")
	fs.StringVar(&f.cacheDir, "cache-dir", runtime.DefaultCacheDir, "libcni result cache `directory`")
	fs.StringVar(&f.stateDir, "state-dir", runtime.DefaultStateDir, "pod record `directory`")
	fs.StringVar(&f.netnsDir, "netns-dir", runtime.DefaultNetnsDir, "`directory` for pod namespaces")
	fs.StringVar(&f.netnsPrefix, "netns-prefix", runtime.DefaultNetnsPrefix, "`prefix` of pod namespace names")
	fs.StringVar(&f.ifName, "ifname", runtime.DefaultIfName, "pod interface `name`")
	fs.StringVar(&f.hostNetns, "host-netns", "", "run the plugins in the network namespace at `path`, as if it were the host's")
	fs.BoolVar(&f.verbose, "v", false, "log debug messages")
	return f
}

// runtime builds the Runtime; close releases the host namespace.
func (f *runtimeFlags) runtime(c *cli) (rt *runtime.Runtime, closeFn func(), err error) {
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelDebug
	}
	var dirs []string
	for _, d := range filepath.SplitList(f.binDirs) {
		if d != "" {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		return nil, nil, usagef("--cni-bin-dir: no directory given")
	}
	rt = &runtime.Runtime{
		NetDir:      f.netDir,
		BinDirs:     dirs,
		CacheDir:    f.cacheDir,
		StateDir:    f.stateDir,
		NetnsDir:    f.netnsDir,
		NetnsPrefix: f.netnsPrefix,
		IfName:      f.ifName,
		Log: slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{
			Level: level,
			ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey && len(groups) == 0 {
					return slog.Attr{}
				}
				return a
			},
		})),
		PluginStderr: c.stderr,
	}
	closeFn = func() {}
	if f.hostNetns != "" {
		ns, err := netns.Open(f.hostNetns)
		if err != nil {
			return nil, nil, fmt.Errorf("--host-netns: %w", err)
		}
		rt.HostNS = ns
		closeFn = func() { ns.Close() }
	}
	return rt, closeFn, nil
}

const runtimeHelp = `
Without flags the commands use the node's locations, as containerd does:
configurations in /etc/cni/net.d, plugins in /opt/cni/bin, the result cache
in /var/lib/cni, namespaces /run/netns/linen-NAME and pod records in
/var/lib/linen/pods. The default network is the first valid .conf,
.conflist or .json file of --net-dir in file-name order.`

func podAdd(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen pod add", "NAME [flags]", `
Create the network namespace of pod NAME and attach it to the default
network, as a container runtime does at pod sandbox start. Prints the pod's
addresses, one per line (--json: the whole CNI result). If any plugin fails,
everything is undone.

--port takes [hostIP:]hostPort:containerPort[/tcp|udp|sctp], like docker run
-p: 8080:80, 127.0.0.1:8053:53/udp, [2001:db8::1]:8080:80. It may be
repeated; it reaches plugins with the portMappings capability (portmap).

--bandwidth takes ingress=RATE,egress=RATE[,ingress-burst=SIZE]
[,egress-burst=SIZE] in bits/s and bits with k, M, G, T (x1000) or Ki, Mi,
Gi, Ti (x1024) suffixes, like the kubernetes.io/ingress-bandwidth
annotation: ingress=10M,egress=5M. A rate without a burst gets containerd's
burst (4 Gibit). It reaches plugins with the bandwidth capability.

--ip (repeatable) and --mac reach plugins with the ips and mac capabilities.
`+runtimeHelp)
	rf := addRuntimeFlags(fs)
	namespace := fs.String("namespace", runtime.DefaultNamespace, "Kubernetes `namespace` of the pod (K8S_POD_NAMESPACE)")
	uid := fs.String("uid", "", "pod `UID` (K8S_POD_UID; default a random UUID)")
	var caps runtime.Capabilities
	fs.Var(listFlag[runtime.PortMapping]{&caps.PortMappings, runtime.ParsePortMapping}, "port", "port `mapping` [hostIP:]hostPort:containerPort[/proto] (repeatable)")
	fs.Func("bandwidth", "`limits` ingress=RATE,egress=RATE[,ingress-burst=SIZE][,egress-burst=SIZE]", func(s string) error {
		b, err := runtime.ParseBandwidth(s)
		caps.Bandwidth = b
		return err
	})
	fs.Var(listFlag[string]{&caps.IPs, runtime.ParseIP}, "ip", "requested `address`[/prefix] (repeatable)")
	fs.StringVar(&caps.MAC, "mac", "", "requested MAC `address` of the pod interface")
	asJSON := fs.Bool("json", false, "print the whole CNI result as JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("linen pod add: want one pod NAME, got %d arguments (see -h)", len(pos))
	}
	rt, closeRT, err := rf.runtime(c)
	if err != nil {
		return err
	}
	defer closeRT()
	pod, err := rt.AddPod(ctx, runtime.PodSpec{Name: pos[0], Namespace: *namespace, UID: *uid, Capabilities: caps})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(c, pod.Result)
	}
	for _, ip := range pod.IPs() {
		fmt.Fprintln(c.stdout, ip.Addr())
	}
	return nil
}

func printJSON(c *cli, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s\n", b)
	return err
}

func podDel(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen pod del", "NAME... [flags]", `
Detach each pod (CNI DEL with the configuration recorded when it was added)
and remove its namespace and record. Deleting a pod that does not exist, or
whose namespace is already gone, succeeds. When a plugin fails the pod is
kept; run the command again.
`+runtimeHelp)
	rf := addRuntimeFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("linen pod del: want at least one pod NAME (see -h)")
	}
	rt, closeRT, err := rf.runtime(c)
	if err != nil {
		return err
	}
	defer closeRT()
	var errs []error
	for _, name := range pos {
		_, gerr := rt.GetPod(name)
		if err := rt.DelPod(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		if errors.Is(gerr, runtime.ErrPodNotFound) {
			fmt.Fprintf(c.stdout, "pod %s not found\n", name)
		} else {
			fmt.Fprintf(c.stdout, "pod %s deleted\n", name)
		}
	}
	return errors.Join(errs...)
}

func podCheck(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen pod check", "NAME [flags]", `
Run CNI CHECK for the pod: every plugin verifies that what it set up is
still in place. Fails for a pod without a record or without its namespace.
`+runtimeHelp)
	rf := addRuntimeFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("linen pod check: want one pod NAME, got %d arguments (see -h)", len(pos))
	}
	rt, closeRT, err := rf.runtime(c)
	if err != nil {
		return err
	}
	defer closeRT()
	if err := rt.CheckPod(ctx, pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "pod %s ok\n", pos[0])
	return nil
}

// podJSON is a pod in `linen pod list --json`.
type podJSON struct {
	Name         string                `json:"name"`
	Namespace    string                `json:"namespace"`
	UID          string                `json:"uid"`
	ContainerID  string                `json:"containerID"`
	Netns        string                `json:"netns"`
	Network      string                `json:"network"`
	IfName       string                `json:"ifName"`
	Created      time.Time             `json:"created"`
	IPs          []string              `json:"ips"`
	Capabilities *runtime.Capabilities `json:"capabilities,omitempty"`
}

func podList(_ context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen pod list", "[flags]", `
List the pods with a record, with the addresses from the CNI result cache.
A pod without addresses is being added, or its cache entry is gone.
`+runtimeHelp)
	rf := addRuntimeFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("linen pod list: unexpected argument %q (see -h)", pos[0])
	}
	rt, closeRT, err := rf.runtime(c)
	if err != nil {
		return err
	}
	defer closeRT()
	pods, lerr := rt.ListPods()
	if *asJSON {
		out := make([]podJSON, 0, len(pods))
		for _, p := range pods {
			j := podJSON{
				Name: p.Name, Namespace: p.Namespace, UID: p.UID, ContainerID: p.ContainerID,
				Netns: p.Netns, Network: p.Network, IfName: p.IfName, Created: p.Created, IPs: []string{},
			}
			for _, ip := range p.IPs() {
				j.IPs = append(j.IPs, ip.String())
			}
			if caps := p.Capabilities; len(caps.Args()) > 0 {
				j.Capabilities = &caps
			}
			out = append(out, j)
		}
		if err := printJSON(c, out); err != nil {
			return err
		}
		return lerr
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tNAMESPACE\tNETNS\tIPS\tNETWORK")
	for _, p := range pods {
		var ips []string
		for _, ip := range p.IPs() {
			ips = append(ips, ip.String())
		}
		if len(ips) == 0 {
			ips = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, p.Namespace, p.Netns, strings.Join(ips, ","), p.Network)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return lerr
}

func podGC(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen pod gc", "[flags]", `
Remove what lost deletes and crashes left behind, and only what is linen's:
CNI DEL for cached attachments of linen namespaces (--netns-dir/--netns-prefix*)
without a live pod, CNI GC for the default network (cniVersion 1.1.0) with
every other attachment as valid, records whose namespace is gone and
namespaces with the prefix that have no record. Attachments of other
runtimes in the same cache (containerd's) are left alone. Refuses to run
while a pod record is damaged.
`+runtimeHelp)
	rf := addRuntimeFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("linen pod gc: unexpected argument %q (see -h)", pos[0])
	}
	rt, closeRT, err := rf.runtime(c)
	if err != nil {
		return err
	}
	defer closeRT()
	res, err := rt.GC(ctx)
	if res != nil {
		for _, a := range res.Deleted {
			fmt.Fprintf(c.stdout, "deleted attachment %s/%s of network %s (netns %s)\n", shortID(a.ContainerID), a.IfName, a.Network, a.Netns)
		}
		for _, n := range res.StaleRecords {
			fmt.Fprintf(c.stdout, "removed pod %s: its namespace was gone\n", n)
		}
		for _, p := range res.OrphanNetns {
			fmt.Fprintf(c.stdout, "removed namespace %s: no pod record\n", p)
		}
		if len(res.Deleted)+len(res.StaleRecords)+len(res.OrphanNetns) == 0 && err == nil {
			fmt.Fprintf(c.stdout, "nothing to collect (network %s, %d valid attachments)\n", res.Network, len(res.Valid))
		}
	}
	return err
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func runStatus(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen status", "[flags]", `
Select the default network and run CNI STATUS for its plugins (networks with
cniVersion 1.1.0 or later; older ones are ready once they load). Exits 1 with
the plugin's error when the network is not ready.
`+runtimeHelp)
	rf := addRuntimeFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("linen status: unexpected argument %q (see -h)", pos[0])
	}
	rt, closeRT, err := rf.runtime(c)
	if err != nil {
		return err
	}
	defer closeRT()
	n, err := rt.Status(ctx)
	if n != nil {
		fmt.Fprintf(c.stdout, "network:  %s\nfile:     %s\nversion:  %s\nplugins:  %s\n", n.Name, n.File, n.CNIVersion, strings.Join(n.Plugins(), ", "))
	}
	if err != nil {
		if n != nil {
			fmt.Fprintln(c.stdout, "status:   not ready")
		}
		return err
	}
	fmt.Fprintln(c.stdout, "status:   ready")
	return nil
}

// defaultFrom is the linen-cni next to the running linen.
func defaultFrom() string {
	exe, err := os.Executable()
	if err != nil {
		return runtime.MultiCallName
	}
	return filepath.Join(filepath.Dir(exe), runtime.MultiCallName)
}
