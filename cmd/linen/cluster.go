package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"linen.dev/linen/internal/sim"
)

func runCluster(ctx context.Context, c *cli, args []string) error {
	return dispatch(ctx, c, "linen cluster", []command{
		{"up", "build a simulated cluster of network namespaces", runClusterUp},
		{"status", "show hosts, leases, daemons and pods", runClusterStatus},
		{"exec", "run a command inside a host or pod namespace", runClusterExec},
		{"down", "remove the cluster", runClusterDown},
	}, args)
}

type clusterFlags struct {
	prefix, stateDir *string
}

func addClusterFlags(fs *flagSet) clusterFlags {
	return clusterFlags{
		prefix:   fs.String("name", "lsim", "cluster `name` (prefix of every namespace)"),
		stateDir: fs.String("state-dir", "/run/linen/sim", "`directory` of cluster state and logs"),
	}
}

func runClusterUp(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen cluster up", "[flags]", `
Build a cluster on this machine out of network namespaces: an underlay
switch (192.0.2.0/24), one etcd, N hosts each running "linen daemon", and
pods created through the CNI chain (flannel-style meta plugin + portmap) on
each host. Nothing outside these namespaces changes. The cluster stays
until "linen cluster down".`)
	cf := addClusterFlags(fs)
	hosts := fs.Int("hosts", 3, "number of hosts")
	pods := fs.Int("pods", 2, "pods per host")
	be := fs.String("backend", "vxlan", "backend: vxlan, host-gw or udp")
	beJSON := fs.String("backend-options", "", "extra keys of the Backend object, as JSON members (e.g. '\"DirectRouting\":true')")
	network := fs.String("network", "10.244.0.0/16", "cluster `CIDR`")
	masq := fs.Bool("ip-masq", true, "run the daemons with --ip-masq")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("linen cluster up: unexpected argument %q", pos[0])
	}
	cl, err := sim.Up(ctx, sim.Options{Prefix: *cf.prefix + "-", StateDir: *cf.stateDir, Hosts: *hosts, PodsPerHost: *pods,
		Backend: *be, BackendJSON: *beJSON, Network: *network, IPMasq: *masq, Out: c.stdout})
	if err != nil {
		return err
	}
	printCluster(c, cl)
	return nil
}

func printCluster(c *cli, cl *sim.Cluster) {
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tNETNS\tUNDERLAY\tDAEMON\tPODS")
	for _, h := range cl.State.Hosts {
		var ps []string
		for _, p := range h.Pods {
			ps = append(ps, p.Name+"="+p.IP)
		}
		state := "stopped"
		if h.Daemon != nil && h.Daemon.Signal(0) == nil {
			state = "pid " + strconv.Itoa(h.Daemon.Pid)
		}
		fmt.Fprintf(tw, "h%d\t%s\t%s\t%s\t%s\n", h.Index, h.Name, h.Addr, state, strings.Join(ps, " "))
	}
	tw.Flush()
}

func runClusterStatus(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen cluster status", "[flags]", "Show the cluster's hosts, daemons and pods.")
	cf := addClusterFlags(fs)
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	cl, err := sim.Load(*cf.stateDir, *cf.prefix)
	if err != nil {
		return fmt.Errorf("no cluster %q: %w", *cf.prefix, err)
	}
	fmt.Fprintf(c.stdout, "cluster %s: backend %s, network %s, etcd %s, up since %s\n", *cf.prefix, cl.State.Backend,
		cl.State.Network, sim.EtcdEndpoint(), cl.State.Created.Format(time.RFC3339))
	printCluster(c, cl)
	return nil
}

func runClusterExec(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen cluster exec", "[flags] TARGET -- COMMAND [ARGS...]", `
Run a command inside a namespace of the cluster. TARGET is "hN" (host N),
"hN/POD" (a pod) or "sw" (the underlay switch).
Example: linen cluster exec h1/pod1 -- ping -c1 10.244.2.2`)
	cf := addClusterFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return usagef("linen cluster exec: need TARGET -- COMMAND")
	}
	cl, err := sim.Load(*cf.stateDir, *cf.prefix)
	if err != nil {
		return fmt.Errorf("no cluster %q: %w", *cf.prefix, err)
	}
	path, err := cl.Target(pos[0])
	if err != nil {
		return err
	}
	out, err := sim.Exec(ctx, path, 10*time.Minute, pos[1:]...)
	fmt.Fprint(c.stdout, out)
	return err
}

func runClusterDown(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "linen cluster down", "[flags]", "Delete the pods, stop the daemons and etcd, remove every namespace of the cluster.")
	cf := addClusterFlags(fs)
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	cl, err := sim.Load(*cf.stateDir, *cf.prefix)
	if err != nil {
		// No state: sweep whatever carries the prefix.
		sim.Sweep(*cf.prefix+"-", *cf.stateDir)
		fmt.Fprintf(c.stdout, "swept namespaces %s-*\n", *cf.prefix)
		return nil
	}
	cl.Down(ctx)
	fmt.Fprintf(c.stdout, "cluster %s removed\n", *cf.prefix)
	return nil
}
