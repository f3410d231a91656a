package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"linen.dev/linen/internal/atomicfile"
	"linen.dev/linen/internal/netns"
)

// Proc is a process the cluster started: a daemon or etcd.
type Proc struct {
	Pid  int      `json:"pid"`
	Args []string `json:"args"`
	Log  string   `json:"log"`
	// Marker is a string in the process's command line that proves a pid
	// still belongs to this cluster before it is signalled.
	Marker string `json:"marker"`
}

// startIn starts argv from a thread inside ns (the process inherits the
// namespace) in a session of its own, logging to logPath.
func startIn(ns *netns.NS, logPath, marker string, env []string, argv ...string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := ns.Do(func() error { return cmd.Start() }); err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(argv, " "), err)
	}
	p := &Proc{Pid: cmd.Process.Pid, Args: argv, Log: logPath, Marker: marker}
	// Reap it when it exits while we run; after we exit, init does.
	go func() { _ = cmd.Wait() }()
	return p, nil
}

// alive reports whether the pid still runs this process.
func (p *Proc) alive() bool {
	if p == nil || p.Pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid))
	if err != nil {
		return false
	}
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid)); err == nil {
		// A zombie is dead for our purposes.
		if f := strings.Fields(string(stat)); len(f) > 2 && f[2] == "Z" {
			return false
		}
	}
	return strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), p.Marker)
}

// Signal sends sig to the process if it is still ours.
func (p *Proc) Signal(sig syscall.Signal) error {
	if !p.alive() {
		return errors.New("not running")
	}
	return syscall.Kill(p.Pid, sig)
}

// Stop sends SIGTERM, waits up to timeout, then SIGKILL.
func (p *Proc) Stop(timeout time.Duration) {
	if !p.alive() {
		return
	}
	_ = syscall.Kill(p.Pid, syscall.SIGTERM)
	deadline := time.Now().Add(timeout)
	for p.alive() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if p.alive() {
		_ = syscall.Kill(p.Pid, syscall.SIGKILL)
		for i := 0; i < 100 && p.alive(); i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Host is one simulated node.
type Host struct {
	Index      int    `json:"index"`
	Name       string `json:"name"` // namespace name
	Addr       string `json:"addr"`
	Dir        string `json:"dir"`
	SubnetFile string `json:"subnetFile"`
	Daemon     *Proc  `json:"daemon"`
	Pods       []Pod  `json:"pods"`
}

// Pod is one pod of a host.
type Pod struct {
	Name  string `json:"name"`
	Netns string `json:"netns"`
	IP    string `json:"ip"`
}

// State describes a running cluster; it is saved so that `linen cluster`
// commands in other processes find it.
type State struct {
	Prefix  string    `json:"prefix"`
	Dir     string    `json:"dir"`
	Backend string    `json:"backend"`
	Network string    `json:"network"`
	Switch  string    `json:"switch"`
	Etcd    *Proc     `json:"etcd"`
	Hosts   []*Host   `json:"hosts"`
	Created time.Time `json:"created"`
}

func stateFile(stateDir, prefix string) string {
	return filepath.Join(stateDir, strings.TrimSuffix(prefix, "-"), "state.json")
}

// Save writes the state atomically.
func (s *State) Save(stateDir string) error {
	path := stateFile(stateDir, s.Prefix)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o644)
}

// LoadState reads the state of the cluster with prefix.
func LoadState(stateDir, prefix string) (*State, error) {
	b, err := os.ReadFile(stateFile(stateDir, prefix))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("cluster state %s: %w", stateFile(stateDir, prefix), err)
	}
	return &s, nil
}

func (s *State) stopProcesses() {
	for _, h := range s.Hosts {
		h.Daemon.Stop(5 * time.Second)
	}
	s.Etcd.Stop(5 * time.Second)
}

// Host returns host i (1-based) or nil.
func (s *State) Host(i int) *Host {
	for _, h := range s.Hosts {
		if h.Index == i {
			return h
		}
	}
	return nil
}
