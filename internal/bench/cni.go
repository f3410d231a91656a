// Package bench measures linen against the reference CNI plugins, side by
// side in one run and through the same runtime code (internal/runtime, which
// drives libcni as containerd does), and reports ratios. It never asserts a
// time: it prints what it measured.
//
// Everything happens inside a network namespace the benchmark creates
// ("lb-<pid>-host") and in pod namespaces under it; all are removed at the
// end, and namespaces left by a crashed run (prefix "lb-") are swept at the
// next start.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/runtime"
)

// NetnsPrefix starts the name of every namespace the benchmark creates.
const NetnsPrefix = "lb-"

// CNIOptions configure RunCNI.
type CNIOptions struct {
	Pods        int           // sequential ADDs then DELs per case (default 200)
	Concurrency int           // operations launched at once (default 20)
	Rounds      int           // concurrent rounds per case (default 5)
	ScalePods   int           // pods present for the scale case (default 300)
	ScaleSample int           // ADDs (then DELs) measured on an empty node and with ScalePods present (default 50)
	ScaleRounds int           // times the node goes from empty to ScalePods pods and back for the scale case (default 3)
	Settle      time.Duration // pause before each concurrent phase (default 1s; negative: none)
	Chains      []string      // "a" (bridge + host-local), "b" (+ ipMasq + portmap); default both
	LinenCNI    string        // path of the linen-cni binary
	RefDir      string        // reference plugins (default /usr/lib/cni)
	Prefix      string        // namespace name prefix (default NetnsPrefix), swept at start and end
	// StateDir holds, in a new directory removed at the end, the files
	// both implementations write per pod: IPAM reservations, the result
	// cache, the runtime's records. Default: DefaultStateDir().
	StateDir string
	Out      io.Writer
	Log      *slog.Logger
}

// Impl is one side of the comparison.
type Impl struct {
	Name   string // "linen" or "reference"
	BinDir string
}

// Series is one measured set of operations.
type Series struct {
	Chain, Impl, Case, Op string
	Samples               []time.Duration
	Wall                  time.Duration // for concurrent rounds: total wall time
	Errors                int
}

// Report holds every series of a run.
type Report struct {
	Series []*Series
	Start  time.Time
	End    time.Time
	// StateDir is where the per-pod files went, StateFS its file system.
	StateDir, StateFS string
}

func (o *CNIOptions) defaults() {
	if o.Pods == 0 {
		o.Pods = 200
	}
	if o.Concurrency == 0 {
		o.Concurrency = 20
	}
	if o.Rounds == 0 {
		o.Rounds = 5
	}
	if o.ScalePods == 0 {
		o.ScalePods = 300
	}
	if o.ScaleSample == 0 {
		o.ScaleSample = 50
	}
	if o.Settle == 0 {
		o.Settle = time.Second
	}
	if o.ScaleRounds <= 0 {
		o.ScaleRounds = 3
	}
	if len(o.Chains) == 0 {
		o.Chains = []string{"a", "b"}
	}
	if o.RefDir == "" {
		o.RefDir = "/usr/lib/cni"
	}
	if o.Prefix == "" {
		o.Prefix = NetnsPrefix
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir()
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// RunCNI runs the ADD/DEL latency benchmark.
func RunCNI(ctx context.Context, o CNIOptions) (*Report, error) {
	o.defaults()
	// Namespaces left by an earlier, crashed run go first.
	sweep := func() { netns.SweepPrefix(netns.DefaultDir, o.Prefix) }
	sweep()
	work, err := os.MkdirTemp("", "linen-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	state, err := os.MkdirTemp(o.StateDir, "linen-bench-state-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(state)

	linenDir := filepath.Join(work, "linen-bin")
	if _, err := runtime.Install(ctx, runtime.InstallOptions{BinDir: linenDir, From: o.LinenCNI}); err != nil {
		return nil, err
	}
	for _, n := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(o.RefDir, n)); err != nil {
			return nil, fmt.Errorf("reference plugin %s not found in %s (apt-get install containernetworking-plugins)", n, o.RefDir)
		}
	}
	impls := []Impl{{"linen", linenDir}, {"reference", o.RefDir}}

	hostName := fmt.Sprintf("%s%d-host", o.Prefix, os.Getpid())
	host, err := netns.NewNamed(netns.DefaultDir, hostName)
	if err != nil {
		return nil, err
	}
	defer func() {
		host.Close()
		_ = netns.DeleteNamed(host.Path())
		sweep()
	}()

	rep := &Report{Start: time.Now(), StateDir: state, StateFS: fsName(state)}
	for ci, chain := range o.Chains {
		for ii, impl := range impls {
			tag := fmt.Sprintf("%s%d-%s%s-", o.Prefix, os.Getpid(), chain, impl.Name[:1])
			c := &benchCase{
				o: &o, chain: chain, impl: impl, host: host, rep: rep, idx: ci*2 + ii,
				dir: filepath.Join(state, chain+"-"+impl.Name), prefix: tag,
			}
			fmt.Fprintf(o.Out, "chain %s, %s plugins ...\n", chain, impl.Name)
			if err := c.run(ctx); err != nil {
				return rep, fmt.Errorf("chain %s, %s: %w", chain, impl.Name, err)
			}
		}
	}
	rep.End = time.Now()
	return rep, nil
}

type benchCase struct {
	o      *CNIOptions
	chain  string
	impl   Impl
	host   *netns.NS
	rep    *Report
	idx    int
	dir    string
	prefix string

	rt *runtime.Runtime

	mu      sync.Mutex
	cniTime map[string]time.Duration // pod -> duration of the last "cni" step
}

func (c *benchCase) conflist() string {
	sub := fmt.Sprintf("10.%d.0.0/16", 100+c.idx)
	br := fmt.Sprintf("lbbr%d", c.idx)
	ipam := fmt.Sprintf(`{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}]}`,
		filepath.Join(c.dir, "ipam"), sub)
	switch c.chain {
	case "a":
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"lbnet-a%d","plugins":[
  {"type":"bridge","bridge":%q,"isGateway":true,"hairpinMode":true,"ipam":%s}]}`, c.idx, br, ipam)
	default:
		return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"lbnet-b%d","plugins":[
  {"type":"bridge","bridge":%q,"isGateway":true,"hairpinMode":true,"ipMasq":true,"ipam":%s},
  {"type":"portmap","snat":true,"capabilities":{"portMappings":true}}]}`, c.idx, br, ipam)
	}
}

func (c *benchCase) setup() error {
	netDir := filepath.Join(c.dir, "net.d")
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(netDir, "10-bench.conflist"), []byte(c.conflist()), 0o644); err != nil {
		return err
	}
	c.cniTime = map[string]time.Duration{}
	c.rt = &runtime.Runtime{
		NetDir:       netDir,
		BinDirs:      []string{c.impl.BinDir},
		CacheDir:     filepath.Join(c.dir, "cache"),
		StateDir:     filepath.Join(c.dir, "state"),
		NetnsPrefix:  c.prefix,
		HostNS:       c.host,
		Log:          c.o.Log,
		PluginStderr: io.Discard,
		Observe: func(ev runtime.Event) {
			if ev.Step == "cni" && ev.Err == nil {
				c.mu.Lock()
				c.cniTime[ev.Op+"/"+ev.Pod] = ev.Duration
				c.mu.Unlock()
			}
		},
	}
	return nil
}

func (c *benchCase) spec(name string, i int) runtime.PodSpec {
	s := runtime.PodSpec{Name: name, Namespace: "bench"}
	if c.chain == "b" {
		s.Capabilities.PortMappings = []runtime.PortMapping{{HostPort: 20000 + i, ContainerPort: 80, Protocol: "tcp"}}
	}
	return s
}

func (c *benchCase) took(op, pod string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cniTime[op+"/"+pod]
}

func (c *benchCase) series(cs, op string) *Series {
	s := &Series{Chain: c.chain, Impl: c.impl.Name, Case: cs, Op: op}
	c.rep.Series = append(c.rep.Series, s)
	return s
}

func (c *benchCase) add(ctx context.Context, s *Series, name string, i int) bool {
	if _, err := c.rt.AddPod(ctx, c.spec(name, i)); err != nil {
		s.Errors++
		c.o.Log.Warn("add", "pod", name, "err", err)
		return false
	}
	s.Samples = append(s.Samples, c.took("add", name))
	return true
}

func (c *benchCase) del(ctx context.Context, s *Series, name string) {
	if err := c.rt.DelPod(ctx, name); err != nil {
		s.Errors++
		c.o.Log.Warn("del", "pod", name, "err", err)
		return
	}
	s.Samples = append(s.Samples, c.took("del", name))
}

func (c *benchCase) run(ctx context.Context) error {
	if err := c.setup(); err != nil {
		return err
	}
	// Warm up: the first ADD creates the bridge and the static rules.
	warm := &Series{}
	if !c.add(ctx, warm, "warm", 0) {
		return fmt.Errorf("warm-up ADD failed (see log)")
	}
	c.del(ctx, warm, "warm")

	// Sequential: Pods ADDs, then Pods DELs.
	sa, sd := c.series("sequential", "ADD"), c.series("sequential", "DEL")
	for i := 0; i < c.o.Pods; i++ {
		c.add(ctx, sa, fmt.Sprintf("s%d", i), i)
	}
	for i := 0; i < c.o.Pods; i++ {
		c.del(ctx, sd, fmt.Sprintf("s%d", i))
	}

	// Concurrent: rounds of Concurrency ADDs at once, then as many DELs.
	// Each phase starts on a settled machine: what the previous phase
	// left to the kernel (namespace teardown, deferred deletions) would
	// otherwise land in the next phase, and land harder on the faster
	// implementation, whose phase is shorter. The churn case below keeps
	// all of it in.
	ca, cd := c.series("concurrent", "ADD"), c.series("concurrent", "DEL")
	for r := 0; r < c.o.Rounds; r++ {
		names := make([]string, c.o.Concurrency)
		for k := range names {
			names[k] = fmt.Sprintf("c%d-%d", r, k)
		}
		time.Sleep(c.o.Settle)
		ca.Wall += c.parallel(names, func(name string, k int) error {
			_, err := c.rt.AddPod(ctx, c.spec(name, 1000+r*c.o.Concurrency+k))
			return err
		}, ca)
		time.Sleep(c.o.Settle)
		cd.Wall += c.parallel(names, func(name string, _ int) error { return c.rt.DelPod(ctx, name) }, cd)
	}

	// Churn: Concurrency workers at once, each adding then deleting a
	// pod Rounds times back to back; the wall time covers everything,
	// background work included.
	time.Sleep(c.o.Settle)
	ha, hd := c.series("churn", "ADD"), c.series("churn", "DEL")
	workers := make([]string, c.o.Concurrency)
	for k := range workers {
		workers[k] = fmt.Sprintf("h%d", k)
	}
	var hmu sync.Mutex
	record := func(s *Series, name string, err error) bool {
		hmu.Lock()
		defer hmu.Unlock()
		if err != nil {
			s.Errors++
			c.o.Log.Warn("churn "+strings.ToLower(s.Op), "pod", name, "err", err)
			return false
		}
		s.Samples = append(s.Samples, c.took(strings.ToLower(s.Op), name))
		return true
	}
	ha.Wall = c.parallel(workers, func(w string, k int) error {
		for r := 0; r < c.o.Rounds; r++ {
			name := fmt.Sprintf("%s-%d", w, r)
			_, err := c.rt.AddPod(ctx, c.spec(name, 2000+k*c.o.Rounds+r))
			if record(ha, name, err) {
				record(hd, name, c.rt.DelPod(ctx, name))
			}
		}
		return nil
	}, &Series{Op: "churn"})
	hd.Wall = ha.Wall

	if c.chain != "b" {
		return nil
	}
	// Scale: the node alternates between empty and ScalePods other pods
	// present, ScaleRounds times; each visit starts settled and measures
	// its share of ScaleSample ADDs, then as many DELs. Alternating puts
	// a drift of the machine's speed over the run on both states alike,
	// which one visit of each would read as growth or its absence.
	a0, d0 := c.series("0 pods present", "ADD"), c.series("0 pods present", "DEL")
	an, dn := c.series(fmt.Sprintf("%d pods present", c.o.ScalePods), "ADD"), c.series(fmt.Sprintf("%d pods present", c.o.ScalePods), "DEL")
	fill := &Series{}
	next := 0
	visit := func(tag string, sa, sd *Series, r int) {
		k := c.o.ScaleSample / c.o.ScaleRounds
		if r < c.o.ScaleSample%c.o.ScaleRounds {
			k++
		}
		names := make([]string, k)
		time.Sleep(c.o.Settle)
		for i := range names {
			names[i] = fmt.Sprintf("%s%d", tag, next)
			c.add(ctx, sa, names[i], 3000+next)
			next++
		}
		for _, n := range names {
			c.del(ctx, sd, n)
		}
	}
	for r := 0; r < c.o.ScaleRounds; r++ {
		visit("z", a0, d0, r)
		for i := 0; i < c.o.ScalePods; i++ {
			c.add(ctx, fill, fmt.Sprintf("f%d", i), 4000+i)
		}
		visit("y", an, dn, r)
		for i := 0; i < c.o.ScalePods; i++ {
			c.del(ctx, fill, fmt.Sprintf("f%d", i))
		}
	}
	if fill.Errors > 0 {
		return fmt.Errorf("%d errors while filling or draining the node", fill.Errors)
	}
	return nil
}

// parallel runs fn for every name at once and returns the wall time; each
// operation's CNI time goes into s.
func (c *benchCase) parallel(names []string, fn func(string, int) error, s *Series) time.Duration {
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	start := time.Now()
	for k, n := range names {
		wg.Add(1)
		go func(k int, n string) {
			defer wg.Done()
			errs[k] = fn(n, k)
		}(k, n)
	}
	wg.Wait()
	wall := time.Since(start)
	op := strings.ToLower(s.Op)
	for k, n := range names {
		if errs[k] != nil {
			s.Errors++
			c.o.Log.Warn(op, "pod", n, "err", errs[k])
			continue
		}
		s.Samples = append(s.Samples, c.took(op, n))
	}
	return wall
}

// Quantile returns the q-quantile (0..1) of d (nearest rank).
func Quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}
