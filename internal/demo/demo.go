// Package demo shows linen working on a simulated node: a network namespace
// plays the node, the CRI-side runtime creates pods through the conflist
// bridge + host-local + portmap with linen's plugins, and the pods ping each
// other and their gateway. Everything lives in namespaces the demo creates
// (prefix "ld-") and is removed at the end; a crashed run is swept by the
// next one.
package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"text/tabwriter"
	"time"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/runtime"
)

// NetnsPrefix starts the names of the demo's namespaces.
const NetnsPrefix = "ld-"

// Options configure Run.
type Options struct {
	Pods     int    // pods on the node (default 2)
	LinenCNI string // the linen-cni binary
	Out      io.Writer
	Keep     bool // leave everything in place (prints how to clean up)
}

// Sweep removes namespaces of an earlier, crashed demo.
func Sweep() { netns.SweepPrefix(netns.DefaultDir, NetnsPrefix) }

const conflist = `{
  "cniVersion": "1.1.0",
  "name": "demo",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q,
              "ranges": [[{"subnet": "10.244.1.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`

// Run builds the node, runs the probes, prints the results and tears
// everything down (unless Keep).
func Run(ctx context.Context, o Options) error {
	if o.Pods < 2 {
		o.Pods = 2
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	say := func(format string, a ...any) { fmt.Fprintf(o.Out, format+"\n", a...) }
	Sweep()
	work, err := os.MkdirTemp("", "linen-demo-")
	if err != nil {
		return err
	}
	if !o.Keep {
		defer os.RemoveAll(work)
	}
	binDir := filepath.Join(work, "bin")
	say("==> installing linen-cni plugins into %s", binDir)
	if _, err := runtime.Install(ctx, runtime.InstallOptions{BinDir: binDir, From: o.LinenCNI}); err != nil {
		return err
	}
	netDir := filepath.Join(work, "net.d")
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(netDir, "10-demo.conflist"), []byte(fmt.Sprintf(conflist, filepath.Join(work, "ipam"))), 0o644); err != nil {
		return err
	}

	hostName := NetnsPrefix + "node1"
	say("==> creating the node: network namespace %s", hostName)
	host, err := netns.NewNamed(netns.DefaultDir, hostName)
	if err != nil {
		return err
	}
	if !o.Keep {
		defer func() {
			host.Close()
			_ = netns.DeleteNamed(host.Path())
			Sweep()
		}()
	}
	rt := &runtime.Runtime{
		NetDir: netDir, BinDirs: []string{binDir},
		CacheDir: filepath.Join(work, "cache"), StateDir: filepath.Join(work, "pods"),
		NetnsPrefix: NetnsPrefix, HostNS: host,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	type podInfo struct {
		name, ip, ns string
		took         time.Duration
	}
	var pods []podInfo
	for i := 1; i <= o.Pods; i++ {
		name := fmt.Sprintf("pod%d", i)
		start := time.Now()
		p, err := rt.AddPod(ctx, runtime.PodSpec{Name: name, Namespace: "demo",
			Capabilities: runtime.Capabilities{PortMappings: []runtime.PortMapping{{HostPort: 8080 + i, ContainerPort: 80, Protocol: "tcp"}}}})
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		ips := p.IPs()
		if len(ips) == 0 {
			return fmt.Errorf("%s got no IP", name)
		}
		pi := podInfo{name: name, ip: ips[0].Addr().String(), ns: p.Netns, took: time.Since(start)}
		pods = append(pods, pi)
		say("==> pod %s: eth0 %s in %s (hostPort %d -> 80), set up in %s", name, ips[0], filepath.Base(p.Netns), 8080+i, pi.took.Round(100*time.Microsecond))
	}

	say("==> probing: ping from every pod to every other pod and to the gateway 10.244.1.1")
	targets := []struct{ name, ip string }{{"gateway", "10.244.1.1"}}
	for _, p := range pods {
		targets = append(targets, struct{ name, ip string }{p.name + " " + p.ip, p.ip})
	}
	tw := tabwriter.NewWriter(o.Out, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "from \\ to")
	for _, t := range targets {
		fmt.Fprintf(tw, "\t%s", t.name)
	}
	fmt.Fprintln(tw)
	failures := 0
	for _, p := range pods {
		fmt.Fprintf(tw, "%s %s", p.name, p.ip)
		ns, err := netns.Open(p.ns)
		if err != nil {
			return err
		}
		for _, t := range targets {
			if t.ip == p.ip {
				fmt.Fprint(tw, "\t-")
				continue
			}
			rtt, err := ping(ns, t.ip)
			if err != nil {
				failures++
				fmt.Fprint(tw, "\tFAIL")
				continue
			}
			fmt.Fprintf(tw, "\tok %s", rtt)
		}
		ns.Close()
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if o.Keep {
		say("==> kept: namespaces %s*, work dir %s", NetnsPrefix, work)
	} else {
		for _, p := range pods {
			if err := rt.DelPod(ctx, p.name); err != nil {
				return fmt.Errorf("delete %s: %w", p.name, err)
			}
		}
		say("==> torn down: pods deleted, node namespace removed")
	}
	if failures > 0 {
		return fmt.Errorf("%d probes failed", failures)
	}
	say("all %d pods reach each other and their gateway", len(pods))
	return nil
}

var rttRe = regexp.MustCompile(`= [\d.]+/([\d.]+)/`)

// ping returns the average round-trip time of three echo requests.
func ping(ns *netns.NS, ip string) (string, error) {
	var out []byte
	var perr error
	err := ns.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, perr = exec.CommandContext(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-q", ip).CombinedOutput()
		return nil
	})
	if err != nil {
		return "", err
	}
	if perr != nil {
		return "", fmt.Errorf("ping %s: %v: %s", ip, perr, out)
	}
	if m := rttRe.FindSubmatch(out); m != nil {
		return string(m[1]) + " ms", nil
	}
	return "", nil
}
