package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/runtime"
	"linen.dev/linen/internal/subnetenv"
)

// Options describe a cluster to build.
type Options struct {
	Prefix      string // namespace and state name prefix (default "lsim-")
	StateDir    string // where state and work files live (default /run/linen/sim)
	Hosts       int    // default 3
	PodsPerHost int    // default 2
	Backend     string // vxlan (default), host-gw, udp
	BackendJSON string // extra keys of the Backend object, e.g. `"DirectRouting":true`
	Network     string // default 10.244.0.0/16
	IPMasq      bool
	MTU         int    // underlay MTU (default 1500)
	Linen       string // the linen binary (default: this executable)
	LinenCNI    string // the linen-cni binary (default: next to Linen)
	LinenEtcd   string // the linen-etcd binary (default: next to Linen)
	Out         io.Writer
	Log         *slog.Logger
}

func (o *Options) defaults() error {
	if o.Prefix == "" {
		o.Prefix = "lsim-"
	}
	if !strings.HasSuffix(o.Prefix, "-") {
		o.Prefix += "-"
	}
	if o.StateDir == "" {
		o.StateDir = "/run/linen/sim"
	}
	if o.Hosts == 0 {
		o.Hosts = 3
	}
	if o.Hosts < 1 || o.Hosts > 200 {
		return fmt.Errorf("hosts: %d is outside 1..200", o.Hosts)
	}
	if o.PodsPerHost < 0 {
		return fmt.Errorf("pods per host: %d", o.PodsPerHost)
	}
	if o.Backend == "" {
		o.Backend = "vxlan"
	}
	if o.Network == "" {
		o.Network = "10.244.0.0/16"
	}
	if o.MTU == 0 {
		o.MTU = 1500
	}
	if o.Linen == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.Linen = exe
	}
	if o.LinenCNI == "" {
		o.LinenCNI = filepath.Join(filepath.Dir(o.Linen), "linen-cni")
	}
	if o.LinenEtcd == "" {
		o.LinenEtcd = filepath.Join(filepath.Dir(o.Linen), "linen-etcd")
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// NetConf is the cluster's net-conf.json.
func (o *Options) NetConf() string {
	be := fmt.Sprintf(`{"Type":%q`, o.Backend)
	if o.BackendJSON != "" {
		be += "," + o.BackendJSON
	}
	be += "}"
	return fmt.Sprintf(`{"Network":%q,"Backend":%s}`, o.Network, be)
}

// Cluster is a running simulated cluster.
type Cluster struct {
	State *State
	opts  Options
}

// Up builds the cluster: switch, etcd, hosts with their daemons, pods.
// On failure it removes what it built.
func Up(ctx context.Context, o Options) (c *Cluster, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	Sweep(o.Prefix, o.StateDir)
	dir := filepath.Join(o.StateDir, strings.TrimSuffix(o.Prefix, "-"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	st := &State{Prefix: o.Prefix, Dir: dir, Backend: o.Backend, Network: o.Network, Switch: o.Prefix + "sw", Created: time.Now()}
	c = &Cluster{State: st, opts: o}
	defer func() {
		if err != nil {
			c.Down(context.Background())
		}
	}()
	say := func(f string, a ...any) { fmt.Fprintf(o.Out, "==> "+f+"\n", a...) }

	say("underlay switch %s (%s), etcd at %s", st.Switch, underlayNet, EtcdEndpoint())
	sw, err := createSwitch(st.Switch)
	if err != nil {
		return c, err
	}
	defer sw.Close()
	if err := st.Save(o.StateDir); err != nil {
		return c, err
	}
	st.Etcd, err = startIn(sw, filepath.Join(dir, "etcd.log"), dir, nil, o.LinenEtcd,
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", EtcdEndpoint(),
		"--listen-peer-urls", fmt.Sprintf("http://%s:%d", switchAddr, etcdPort+1),
		"--init-config", o.NetConf())
	if err != nil {
		return c, err
	}
	if err := st.Save(o.StateDir); err != nil {
		return c, err
	}
	if err := waitTCP(ctx, sw, fmt.Sprintf("%s:%d", switchAddr, etcdPort), 20*time.Second); err != nil {
		return c, fmt.Errorf("etcd did not come up (see %s): %w", st.Etcd.Log, err)
	}

	if _, err := runtime.Install(ctx, runtime.InstallOptions{BinDir: filepath.Join(dir, "bin"), From: o.LinenCNI}); err != nil {
		return c, err
	}
	for i := 1; i <= o.Hosts; i++ {
		h, err := c.addHost(ctx, sw, i)
		if err != nil {
			return c, err
		}
		say("host %s: %s, daemon pid %d", h.Name, h.Addr, h.Daemon.Pid)
	}
	for _, h := range st.Hosts {
		env, err := c.waitSubnet(ctx, h, 30*time.Second)
		if err != nil {
			return c, err
		}
		say("host %s leased %s (MTU %d)", h.Name, env.Subnet, env.MTU)
	}
	for _, h := range st.Hosts {
		for k := 1; k <= o.PodsPerHost; k++ {
			p, err := c.AddPod(ctx, h.Index, fmt.Sprintf("pod%d", k))
			if err != nil {
				return c, err
			}
			say("pod %s on %s: %s", p.Name, h.Name, p.IP)
		}
	}
	return c, st.Save(o.StateDir)
}

// Load finds a running cluster by prefix.
func Load(stateDir, prefix string) (*Cluster, error) {
	if stateDir == "" {
		stateDir = "/run/linen/sim"
	}
	if !strings.HasSuffix(prefix, "-") {
		prefix += "-"
	}
	st, err := LoadState(stateDir, prefix)
	if err != nil {
		return nil, err
	}
	o := Options{Prefix: prefix, StateDir: stateDir}
	if err := o.defaults(); err != nil {
		return nil, err
	}
	o.Backend, o.Network = st.Backend, st.Network
	return &Cluster{State: st, opts: o}, nil
}

func (c *Cluster) addHost(ctx context.Context, sw *netns.NS, i int) (*Host, error) {
	st, o := c.State, c.opts
	name := fmt.Sprintf("%sh%d", o.Prefix, i)
	ns, err := createHost(sw, name, i, o.MTU)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h := &Host{Index: i, Name: name, Addr: HostAddr(i), Dir: filepath.Join(st.Dir, fmt.Sprintf("h%d", i))}
	h.SubnetFile = filepath.Join(h.Dir, "subnet.env")
	if err := os.MkdirAll(h.Dir, 0o755); err != nil {
		return nil, err
	}
	st.Hosts = append(st.Hosts, h)
	if err := c.startDaemon(h); err != nil {
		return nil, err
	}
	return h, st.Save(o.StateDir)
}

// DaemonArgs is the command line of host h's daemon.
func (c *Cluster) DaemonArgs(h *Host) []string {
	args := []string{c.opts.Linen, "daemon",
		"--etcd-endpoints", EtcdEndpoint(),
		"--iface", "eth0",
		"--subnet-file", h.SubnetFile,
		"--data-dir", h.Dir,
		"--healthz-ip", h.Addr, "--healthz-port", "8081",
		"--subnet-lease-renew-margin", "60",
	}
	if c.opts.IPMasq {
		args = append(args, "--ip-masq")
	}
	return args
}

// startDaemon (re)starts host h's daemon.
func (c *Cluster) startDaemon(h *Host) error {
	ns, err := netns.Open(nsPath(h.Name))
	if err != nil {
		return err
	}
	defer ns.Close()
	p, err := startIn(ns, filepath.Join(h.Dir, "daemon.log"), c.State.Dir, nil, c.DaemonArgs(h)...)
	if err != nil {
		return err
	}
	h.Daemon = p
	return c.State.Save(c.opts.StateDir)
}

// RestartDaemon stops host i's daemon with SIGTERM and starts it again.
func (c *Cluster) RestartDaemon(i int) error {
	h := c.State.Host(i)
	if h == nil {
		return fmt.Errorf("no host %d", i)
	}
	h.Daemon.Stop(10 * time.Second)
	return c.startDaemon(h)
}

// StopDaemon stops host i's daemon (SIGTERM: the data plane stays).
func (c *Cluster) StopDaemon(i int) error {
	h := c.State.Host(i)
	if h == nil {
		return fmt.Errorf("no host %d", i)
	}
	h.Daemon.Stop(10 * time.Second)
	return nil
}

// StartDaemon starts host i's daemon again after StopDaemon.
func (c *Cluster) StartDaemon(i int) error {
	h := c.State.Host(i)
	if h == nil {
		return fmt.Errorf("no host %d", i)
	}
	return c.startDaemon(h)
}

// Etcd returns the etcd process.
func (c *Cluster) Etcd() *Proc { return c.State.Etcd }

// RestartEtcd starts etcd again on its data dir (after Etcd().Stop).
func (c *Cluster) RestartEtcd(ctx context.Context) error {
	sw, err := netns.Open(nsPath(c.State.Switch))
	if err != nil {
		return err
	}
	defer sw.Close()
	p, err := startIn(sw, c.State.Etcd.Log, c.State.Dir, nil, c.State.Etcd.Args...)
	if err != nil {
		return err
	}
	c.State.Etcd = p
	if err := c.State.Save(c.opts.StateDir); err != nil {
		return err
	}
	return waitTCP(ctx, sw, fmt.Sprintf("%s:%d", switchAddr, etcdPort), 20*time.Second)
}

func (c *Cluster) waitSubnet(ctx context.Context, h *Host, timeout time.Duration) (*subnetenv.Env, error) {
	deadline := time.Now().Add(timeout)
	for {
		env, err := subnetenv.Read(h.SubnetFile)
		if err == nil && env.Subnet.IsValid() {
			return env, nil
		}
		if !h.Daemon.alive() {
			return nil, fmt.Errorf("daemon of %s exited:\n%s", h.Name, logTail(h.Daemon.Log, 15))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("%s wrote no subnet.env within %v:\n%s", h.Name, timeout, logTail(h.Daemon.Log, 15))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// conflist is flannel's standard chain with linen's plugins, pointing at
// the host's subnet.env and private directories.
func (c *Cluster) conflist(h *Host) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[
 {"type":"flannel","subnetFile":%q,"dataDir":%q,"delegate":{"hairpinMode":true,"isDefaultGateway":true},
  "ipam":{"dataDir":%q}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}`,
		h.SubnetFile, filepath.Join(h.Dir, "flannel"), filepath.Join(h.Dir, "ipam"))
}

// runtimeFor is the CRI-side runtime of host h.
func (c *Cluster) runtimeFor(h *Host, host *netns.NS) (*runtime.Runtime, error) {
	netDir := filepath.Join(h.Dir, "net.d")
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(netDir, "10-flannel.conflist"), []byte(c.conflist(h)), 0o644); err != nil {
		return nil, err
	}
	return &runtime.Runtime{
		NetDir: netDir, BinDirs: []string{filepath.Join(c.State.Dir, "bin")},
		CacheDir: filepath.Join(h.Dir, "cache"), StateDir: filepath.Join(h.Dir, "pods"),
		NetnsPrefix: h.Name + "-", HostNS: host, Log: c.opts.Log, PluginStderr: io.Discard,
	}, nil
}

// AddPod creates a pod on host i through the CNI chain.
func (c *Cluster) AddPod(ctx context.Context, i int, name string) (*Pod, error) {
	h := c.State.Host(i)
	if h == nil {
		return nil, fmt.Errorf("no host %d", i)
	}
	host, err := netns.Open(nsPath(h.Name))
	if err != nil {
		return nil, err
	}
	defer host.Close()
	rt, err := c.runtimeFor(h, host)
	if err != nil {
		return nil, err
	}
	p, err := rt.AddPod(ctx, runtime.PodSpec{Name: name, Namespace: "sim"})
	if err != nil {
		return nil, fmt.Errorf("pod %s on %s: %w", name, h.Name, err)
	}
	ips := p.IPs()
	if len(ips) == 0 {
		return nil, fmt.Errorf("pod %s on %s got no address", name, h.Name)
	}
	pod := Pod{Name: name, Netns: p.Netns, IP: ips[0].Addr().String()}
	h.Pods = append(h.Pods, pod)
	return &pod, c.State.Save(c.opts.StateDir)
}

// DelPod deletes a pod of host i.
func (c *Cluster) DelPod(ctx context.Context, i int, name string) error {
	h := c.State.Host(i)
	if h == nil {
		return fmt.Errorf("no host %d", i)
	}
	host, err := netns.Open(nsPath(h.Name))
	if err != nil {
		return err
	}
	defer host.Close()
	rt, err := c.runtimeFor(h, host)
	if err != nil {
		return err
	}
	if err := rt.DelPod(ctx, name); err != nil {
		return err
	}
	kept := h.Pods[:0]
	for _, p := range h.Pods {
		if p.Name != name {
			kept = append(kept, p)
		}
	}
	h.Pods = kept
	return c.State.Save(c.opts.StateDir)
}

// Down deletes pods, stops daemons and etcd, removes every namespace and
// the cluster's files.
func (c *Cluster) Down(ctx context.Context) {
	for _, h := range c.State.Hosts {
		for _, p := range append([]Pod(nil), h.Pods...) {
			_ = c.DelPod(ctx, h.Index, p.Name)
		}
	}
	c.State.stopProcesses()
	netns.SweepPrefix(netns.DefaultDir, c.State.Prefix)
	os.RemoveAll(c.State.Dir)
}

// waitTCP waits until addr accepts connections from inside ns.
func waitTCP(ctx context.Context, ns *netns.NS, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ns.Do(func() error {
			conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				conn.Close()
			}
			return err
		})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// MarshalJSON of the cluster is its state.
func (c *Cluster) MarshalJSON() ([]byte, error) { return json.Marshal(c.State) }

// logTail returns the last n lines of a log file.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Linen is the linen binary the cluster runs.
func (c *Cluster) Linen() string { return c.opts.Linen }
