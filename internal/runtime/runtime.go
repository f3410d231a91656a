package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
)

// Defaults of the Runtime fields.
const (
	DefaultNetDir      = "/etc/cni/net.d"
	DefaultBinDir      = "/opt/cni/bin"
	DefaultCacheDir    = "/var/lib/cni"
	DefaultStateDir    = "/var/lib/linen/pods"
	DefaultNetnsDir    = netns.DefaultDir
	DefaultNetnsPrefix = "linen-"
	DefaultIfName      = "eth0"
	DefaultNamespace   = "default"
)

// cleanupTimeout bounds the DEL that undoes a failed ADD when the caller's
// context is already done.
const cleanupTimeout = 30 * time.Second

var (
	// ErrPodExists is returned (wrapped) by AddPod when the pod has a
	// record or a namespace already.
	ErrPodExists = errors.New("pod exists")
	// ErrPodNotFound is returned (wrapped) by GetPod and CheckPod for a pod
	// without a record.
	ErrPodNotFound = errors.New("pod not found")
)

// Runtime attaches pod sandboxes to the default network of NetDir. The zero
// value uses the defaults a node uses; set fields before the first call and
// do not change them afterwards. A Runtime is safe for concurrent use.
type Runtime struct {
	// NetDir holds the network configurations (default /etc/cni/net.d).
	NetDir string
	// BinDirs are searched for plugin binaries, in order; they are also
	// the plugins' CNI_PATH (default /opt/cni/bin).
	BinDirs []string
	// CacheDir is libcni's cache of results (default /var/lib/cni, the
	// directory containerd and CRI-O use).
	CacheDir string
	// StateDir holds the pod records (default /var/lib/linen/pods).
	StateDir string
	// NetnsDir is where pod namespaces are bind-mounted (default
	// /run/netns, where `ip netns` finds them).
	NetnsDir string
	// NetnsPrefix starts the name of every pod namespace (default
	// "linen-"). GC treats every namespace in NetnsDir with this prefix as
	// its own.
	NetnsPrefix string
	// IfName is the pod interface name (default eth0).
	IfName string
	// HostNS, when set, is the namespace the plugins see as the host: every
	// plugin runs from a thread that joined it. Nil means the caller's.
	HostNS *netns.NS
	// Log receives warnings (skipped configuration files) and debug
	// messages. Nil discards them.
	Log *slog.Logger
	// PluginStderr receives what plugins write to stderr when they
	// succeed (a failing plugin's stderr is part of its error). Nil means
	// os.Stderr.
	PluginStderr io.Writer
	// Observe, when set, is called after each step of an operation with
	// its duration (for benchmarks). It is called from the goroutine of the
	// operation and must be safe for concurrent use.
	Observe func(Event)

	once sync.Once
	cni  *libcni.CNIConfig

	mu       sync.Mutex
	net      *Network
	dirStamp fileStamp
	netStamp fileStamp
}

// Event reports one timed step of an operation to Runtime.Observe.
type Event struct {
	// Op is "add", "del", "check", "gc" or "status".
	Op string
	// Pod is the pod name ("" for gc and status).
	Pod string
	// Step is "config" (network selection), "netns" (create or delete the
	// namespace), "record" (write or remove the record), "cni" (the plugin
	// chain: ADD, DEL, CHECK, GC or STATUS), "cleanup" (undo of a failed
	// ADD) or "total".
	Step     string
	Duration time.Duration
	Err      error
}

// Pod is a pod sandbox known to the Runtime.
type Pod struct {
	Name        string
	Namespace   string
	UID         string
	ContainerID string
	// Netns is the path of the pod's network namespace.
	Netns string
	// Network is the name of the network the pod is attached to.
	Network string
	// IfName is the pod interface.
	IfName       string
	Created      time.Time
	Capabilities Capabilities
	// Result is the CNI result of the ADD in the network's cniVersion
	// (from the libcni cache); nil while the ADD runs or when the cache
	// entry is gone.
	Result types.Result
}

// IPs returns the addresses of the result (with their prefix length).
func (p *Pod) IPs() []netip.Prefix {
	if p.Result == nil {
		return nil
	}
	res, err := current.NewResultFromResult(p.Result)
	if err != nil {
		return nil
	}
	out := make([]netip.Prefix, 0, len(res.IPs))
	for _, ip := range res.IPs {
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		ones, _ := ip.Address.Mask.Size()
		out = append(out, netip.PrefixFrom(a.Unmap(), ones))
	}
	return out
}

func (r *Runtime) init() {
	r.once.Do(func() {
		if r.NetDir == "" {
			r.NetDir = DefaultNetDir
		}
		if len(r.BinDirs) == 0 {
			r.BinDirs = []string{DefaultBinDir}
		}
		if r.CacheDir == "" {
			r.CacheDir = DefaultCacheDir
		}
		if r.StateDir == "" {
			r.StateDir = DefaultStateDir
		}
		if r.NetnsDir == "" {
			r.NetnsDir = DefaultNetnsDir
		}
		if r.NetnsPrefix == "" {
			r.NetnsPrefix = DefaultNetnsPrefix
		}
		if r.IfName == "" {
			r.IfName = DefaultIfName
		}
		if r.Log == nil {
			r.Log = slog.New(slog.DiscardHandler)
		}
		stderr := r.PluginStderr
		if stderr == nil {
			stderr = os.Stderr
		}
		// An explicit Exec: libcni's lazily created default is written
		// without synchronisation and would race under concurrent use.
		exec := &invoke.DefaultExec{
			RawExec:       &invoke.RawExec{Stderr: &lockedWriter{w: stderr}},
			PluginDecoder: version.PluginDecoder{},
		}
		r.cni = libcni.NewCNIConfigWithCacheDir(r.BinDirs, r.CacheDir, exec)
	})
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (r *Runtime) observe(op, pod, step string, start time.Time, err error) {
	if r.Observe != nil {
		r.Observe(Event{Op: op, Pod: pod, Step: step, Duration: time.Since(start), Err: err})
	}
}

// Network returns the default network of NetDir (see LoadNetwork). The
// selection is cached and made again when the directory or the selected
// file changes (a rename into the directory, an edit of the file; an edit of
// another file in place, or of a drop-in plugin file, is not noticed until
// the directory changes).
func (r *Runtime) Network() (*Network, error) {
	r.init()
	ds := stamp(r.NetDir)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.net != nil && ds.ok && ds == r.dirStamp && stamp(r.net.File) == r.netStamp {
		return r.net, nil
	}
	n, err := LoadNetwork(r.NetDir)
	if err != nil {
		r.net = nil
		return nil, err
	}
	for _, s := range n.Skipped {
		r.Log.Warn("skipping invalid network configuration", "file", s.File, "err", s.Err)
	}
	r.net, r.dirStamp, r.netStamp = n, ds, stamp(n.File)
	return n, nil
}

func (r *Runtime) netnsPath(name string) string {
	return filepath.Join(r.NetnsDir, r.NetnsPrefix+name)
}

// inHost runs fn in HostNS (on a thread that joined it), or directly.
func (r *Runtime) inHost(fn func() error) error {
	if r.HostNS == nil {
		return fn()
	}
	return r.HostNS.Do(fn)
}

func (rec *record) runtimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: rec.ContainerID,
		NetNS:       rec.Netns,
		IfName:      rec.IfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", rec.Namespace},
			{"K8S_POD_NAME", rec.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", rec.ContainerID},
			{"K8S_POD_UID", rec.UID},
		},
		CapabilityArgs: rec.Capabilities.Args(),
	}
}

func (r *Runtime) checkSpec(spec *PodSpec) error {
	var errs []error
	if err := ValidatePodName(spec.Name); err != nil {
		errs = append(errs, err)
	} else if n := len(r.NetnsPrefix) + len(spec.Name); n > 255 {
		errs = append(errs, fmt.Errorf("pod name %q: namespace name %d bytes long with the prefix %q (at most 255)", spec.Name, n, r.NetnsPrefix))
	}
	if spec.Namespace == "" {
		spec.Namespace = DefaultNamespace
	}
	if err := ValidateNamespace(spec.Namespace); err != nil {
		errs = append(errs, err)
	}
	if spec.UID == "" {
		spec.UID = newUID()
	}
	if err := ValidateUID(spec.UID); err != nil {
		errs = append(errs, err)
	}
	if err := spec.Capabilities.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// AddPod creates the pod's namespace and attaches it to the default
// network. On error nothing is left behind, except when the DEL that undoes
// a failed ADD fails too: then the record and the namespace stay, the error
// says so, and DelPod retries the DEL.
func (r *Runtime) AddPod(ctx context.Context, spec PodSpec) (pod *Pod, err error) {
	r.init()
	start := time.Now()
	defer func() { r.observe("add", spec.Name, "total", start, err) }()
	if err := r.checkSpec(&spec); err != nil {
		return nil, fmt.Errorf("add pod: %w", err)
	}
	name := spec.Name

	t := time.Now()
	net, err := r.Network()
	r.observe("add", name, "config", t, err)
	if err != nil {
		return nil, fmt.Errorf("add pod %q: %w", name, err)
	}

	unlock, err := r.lock(false)
	if err != nil {
		return nil, fmt.Errorf("add pod %q: %w", name, err)
	}
	defer unlock()
	if _, err := os.Lstat(r.recordPath(name)); err == nil {
		return nil, fmt.Errorf("add pod %q: %w (it has a record in %s)", name, ErrPodExists, r.StateDir)
	}

	t = time.Now()
	nsPath := r.netnsPath(name)
	err = r.createNetns(name)
	r.observe("add", name, "netns", t, err)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("add pod %q: %w (namespace %s exists; `linen pod del %s` or `linen pod gc` removes it)", name, ErrPodExists, nsPath, name)
		}
		return nil, fmt.Errorf("add pod %q: %w", name, err)
	}

	rec := &record{
		Version:      recordVersion,
		Name:         name,
		Namespace:    spec.Namespace,
		UID:          spec.UID,
		ContainerID:  NewContainerID(),
		Netns:        nsPath,
		Network:      net.Name,
		IfName:       r.IfName,
		Created:      time.Now().UTC().Truncate(time.Millisecond),
		Capabilities: spec.Capabilities,
		Config:       net.List.Bytes,
	}
	t = time.Now()
	err = r.writeRecord(rec)
	r.observe("add", name, "record", t, err)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("add pod %q: %w", name, err), netns.DeleteNamed(nsPath))
	}

	rt := rec.runtimeConf()
	var res types.Result
	t = time.Now()
	err = r.inHost(func() error {
		var aerr error
		res, aerr = r.cni.AddNetworkList(ctx, net.List, rt)
		return aerr
	})
	r.observe("add", name, "cni", t, err)
	if err != nil {
		addErr := fmt.Errorf("add pod %q to network %q: %w", name, net.Name, err)
		t = time.Now()
		cerr := r.undoAdd(ctx, net, rec)
		r.observe("add", name, "cleanup", t, cerr)
		if cerr != nil {
			return nil, fmt.Errorf("%w; undo failed, pod left for `linen pod del %s`: %v", addErr, name, cerr)
		}
		return nil, addErr
	}
	return rec.pod(res), nil
}

// createNetns creates the pod namespace and sets its lo up, as the loopback
// plugin that containerd runs first would.
func (r *Runtime) createNetns(name string) error {
	ns, err := netns.NewNamed(r.NetnsDir, r.NetnsPrefix+name)
	if err != nil {
		return err
	}
	defer ns.Close()
	if err := setLoopbackUp(ns); err != nil {
		return errors.Join(err, netns.DeleteNamed(ns.Path()))
	}
	return nil
}

func setLoopbackUp(ns *netns.NS) error {
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", ns.Path(), err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", ns.Path(), err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in %s: %w", ns.Path(), err)
	}
	return nil
}

// undoAdd runs DEL for a failed ADD (with a context that survives the
// caller's cancellation) and removes the namespace and the record.
//
// Unlike a DEL of a pod, it goes on after a plugin fails and it skips
// plugins whose binary does not exist: the ADD may have failed precisely
// because a binary is missing, and a plugin that never ran left nothing to
// undo. libcni's DelNetworkList would stop at that plugin and leave the
// ones before it (which did run) undone.
func (r *Runtime) undoAdd(ctx context.Context, net *Network, rec *record) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	rt := rec.runtimeConf()
	var errs []error
	for i := len(net.List.Plugins) - 1; i >= 0; i-- {
		p := net.List.Plugins[i]
		if _, err := invoke.FindInPath(p.Network.Type, r.BinDirs); err != nil {
			continue
		}
		one := *net.List
		one.Plugins = []*libcni.PluginConfig{p}
		if err := r.inHost(func() error { return r.cni.DelNetworkList(ctx, &one, rt) }); err != nil {
			errs = append(errs, fmt.Errorf("del: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return errors.Join(netns.DeleteNamed(rec.Netns), r.removeRecord(rec.Name))
}

func (rec *record) pod(res types.Result) *Pod {
	return &Pod{
		Name:         rec.Name,
		Namespace:    rec.Namespace,
		UID:          rec.UID,
		ContainerID:  rec.ContainerID,
		Netns:        rec.Netns,
		Network:      rec.Network,
		IfName:       rec.IfName,
		Created:      rec.Created,
		Capabilities: rec.Capabilities,
		Result:       res,
	}
}

// DelPod detaches the pod and removes its namespace and record. It is
// idempotent: a pod that does not exist (any more) is not an error. It runs
// DEL with the configuration recorded at ADD time, even when the namespace
// is already gone. When DEL fails, the namespace and the record stay and
// the error is returned; call DelPod again.
//
// For a pod whose record cannot be read, DEL runs for every attachment in
// the libcni cache whose netns path is the pod's.
func (r *Runtime) DelPod(ctx context.Context, name string) (err error) {
	r.init()
	start := time.Now()
	defer func() { r.observe("del", name, "total", start, err) }()
	if err := ValidatePodName(name); err != nil {
		return fmt.Errorf("del pod: %w", err)
	}
	unlock, err := r.lock(false)
	if err != nil {
		return fmt.Errorf("del pod %q: %w", name, err)
	}
	defer unlock()

	nsPath := r.netnsPath(name)
	rec, rerr := r.readRecord(name)
	t := time.Now()
	switch {
	case rerr == nil:
		err = r.delRecorded(ctx, rec)
		nsPath = rec.Netns
	case errors.Is(rerr, errRecordNotFound):
		// Nothing recorded: at most an orphaned namespace to remove.
	default:
		r.Log.Warn("pod record damaged; deleting the cached attachments of its namespace", "pod", name, "err", rerr)
		err = r.delCachedByNetns(ctx, nsPath)
	}
	r.observe("del", name, "cni", t, err)
	if err != nil {
		return fmt.Errorf("del pod %q: %w", name, err)
	}

	t = time.Now()
	err = netns.DeleteNamed(nsPath)
	r.observe("del", name, "netns", t, err)
	if err != nil {
		return fmt.Errorf("del pod %q: %w", name, err)
	}
	t = time.Now()
	err = r.removeRecord(name)
	r.observe("del", name, "record", t, err)
	if err != nil {
		return fmt.Errorf("del pod %q: %w", name, err)
	}
	return nil
}

func (r *Runtime) delRecorded(ctx context.Context, rec *record) error {
	net, err := NetworkFromBytes(rec.Config)
	if err != nil {
		return fmt.Errorf("recorded network configuration: %w", err)
	}
	rt := rec.runtimeConf()
	return r.inHost(func() error { return r.cni.DelNetworkList(ctx, net.List, rt) })
}

// delCachedByNetns runs DEL for every cached attachment whose netns is
// path, with the configuration and arguments cached at ADD time.
func (r *Runtime) delCachedByNetns(ctx context.Context, path string) error {
	atts, err := r.cni.GetCachedAttachments("")
	if err != nil {
		return fmt.Errorf("read libcni cache: %w", err)
	}
	var errs []error
	for _, a := range atts {
		if a.NetNS != path {
			continue
		}
		if err := r.delAttachment(ctx, a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// delAttachment runs DEL for a cached attachment with its cached
// configuration.
func (r *Runtime) delAttachment(ctx context.Context, a *libcni.NetworkAttachment) error {
	net, err := NetworkFromBytes(a.Config)
	if err != nil {
		return fmt.Errorf("attachment %s/%s: cached network configuration: %w", a.ContainerID, a.IfName, err)
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    a.ContainerID,
		NetNS:          a.NetNS,
		IfName:         a.IfName,
		Args:           a.CniArgs,
		CapabilityArgs: a.CapabilityArgs,
	}
	if err := r.inHost(func() error { return r.cni.DelNetworkList(ctx, net.List, rt) }); err != nil {
		return fmt.Errorf("attachment %s/%s: %w", a.ContainerID, a.IfName, err)
	}
	return nil
}

// CheckPod runs CHECK for the pod's attachment (with the recorded
// configuration). It fails when the pod has no record, its namespace is
// gone, or a plugin reports a problem. A network whose configuration sets
// disableCheck passes; one older than cniVersion 0.4.0 cannot be checked.
func (r *Runtime) CheckPod(ctx context.Context, name string) (err error) {
	r.init()
	start := time.Now()
	defer func() { r.observe("check", name, "total", start, err) }()
	if err := ValidatePodName(name); err != nil {
		return fmt.Errorf("check pod: %w", err)
	}
	rec, err := r.readRecord(name)
	if err != nil {
		if errors.Is(err, errRecordNotFound) {
			return fmt.Errorf("check pod %q: %w", name, ErrPodNotFound)
		}
		return fmt.Errorf("check pod %q: %w", name, err)
	}
	ns, err := netns.Open(rec.Netns)
	if err != nil {
		return fmt.Errorf("check pod %q: %w", name, err)
	}
	ns.Close()
	net, err := NetworkFromBytes(rec.Config)
	if err != nil {
		return fmt.Errorf("check pod %q: recorded network configuration: %w", name, err)
	}
	rt := rec.runtimeConf()
	t := time.Now()
	err = r.inHost(func() error { return r.cni.CheckNetworkList(ctx, net.List, rt) })
	r.observe("check", name, "cni", t, err)
	if err != nil {
		return fmt.Errorf("check pod %q: %w", name, err)
	}
	return nil
}

// GetPod returns the pod with its cached result.
func (r *Runtime) GetPod(name string) (*Pod, error) {
	r.init()
	if err := ValidatePodName(name); err != nil {
		return nil, err
	}
	rec, err := r.readRecord(name)
	if err != nil {
		if errors.Is(err, errRecordNotFound) {
			return nil, fmt.Errorf("pod %q: %w", name, ErrPodNotFound)
		}
		return nil, err
	}
	return r.podOf(rec), nil
}

func (r *Runtime) podOf(rec *record) *Pod {
	p := rec.pod(nil)
	net, err := NetworkFromBytes(rec.Config)
	if err != nil {
		return p
	}
	res, err := r.cni.GetNetworkListCachedResult(net.List, rec.runtimeConf())
	if err == nil && res != nil {
		p.Result = res
	}
	return p
}

// ListPods returns every pod with a record, sorted by name, with the
// results from the libcni cache. Records that cannot be read are left out
// and reported in the error (the pods that could be read are returned
// too).
func (r *Runtime) ListPods() ([]*Pod, error) {
	r.init()
	names, err := r.recordNames()
	if err != nil {
		return nil, err
	}
	pods := make([]*Pod, 0, len(names))
	var errs []error
	for _, n := range names {
		rec, err := r.readRecord(n)
		if err != nil {
			if !errors.Is(err, errRecordNotFound) { // deleted meanwhile
				errs = append(errs, err)
			}
			continue
		}
		pods = append(pods, r.podOf(rec))
	}
	return pods, errors.Join(errs...)
}

// Status runs STATUS for the default network (CNI 1.1.0; a network with an
// older cniVersion is reported ready, as libcni does). It returns the
// network even when it is not ready.
func (r *Runtime) Status(ctx context.Context) (n *Network, err error) {
	r.init()
	start := time.Now()
	defer func() { r.observe("status", "", "total", start, err) }()
	n, err = r.Network()
	if err != nil {
		return nil, err
	}
	err = r.inHost(func() error { return r.cni.GetStatusNetworkList(ctx, n.List) })
	if err != nil {
		return n, fmt.Errorf("network %q not ready: %w", n.Name, err)
	}
	return n, nil
}
