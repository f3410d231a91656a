package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// LocalEtcd describes the single-node etcd the daemon runs when it is
// given no external one: the linen-etcd binary as a child process.
type LocalEtcd struct {
	Binary      string // linen-etcd
	DataDir     string
	ClientURL   string
	Prefix      string
	NetConfFile string // net-conf.json stored when the store has none
	Log         *slog.Logger
}

// EtcdProcess is a running linen-etcd.
type EtcdProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// StartLocalEtcd starts linen-etcd and waits until its client port accepts
// connections.
func StartLocalEtcd(ctx context.Context, o LocalEtcd) (*EtcdProcess, error) {
	args := []string{"--data-dir", o.DataDir, "--listen-client-urls", o.ClientURL}
	if o.Prefix != "" {
		args = append(args, "--prefix", o.Prefix)
	}
	if o.NetConfFile != "" {
		args = append(args, "--init-config", "@"+o.NetConfFile)
	}
	cmd := exec.Command(o.Binary, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Dies with the daemon even if the daemon is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.Binary, err)
	}
	p := &EtcdProcess{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	u, err := url.Parse(o.ClientURL)
	if err != nil {
		p.Stop()
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", u.Host, 200*time.Millisecond)
		if err == nil {
			c.Close()
			if o.Log != nil {
				o.Log.Info("local etcd", "pid", cmd.Process.Pid, "endpoint", o.ClientURL, "data-dir", o.DataDir)
			}
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited before serving", o.Binary)
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("%s did not serve %s within 60 s", o.Binary, o.ClientURL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends linen-etcd (SIGTERM, then SIGKILL after 10 s).
func (p *EtcdProcess) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
