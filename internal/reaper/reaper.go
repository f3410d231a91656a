// Package reaper takes the kernel's grace-period waits of a plugin's DEL off
// the pod's critical path.
//
// Two kernel operations on a DEL block their caller long after the visible
// work is done (measured on this project's kernel, 6.18):
//
//   - Deleting a link: the link is unlisted within ~1 ms, but the RTM_DELLINK
//     request then sits in rcu_barrier() (netdev_run_todo) for 15-30 ms.
//   - Releasing a NETLINK_NETFILTER socket while nf_tables' destroy list is
//     non-empty (after any transaction that deleted something): the close
//     waits ~15 ms in flush_work() for an RCU grace period. Process exit
//     closes the socket, so a plugin that deleted rules pays it on exit.
//
// A plugin process hands both to a detached helper (linen-cni started again
// under the name "linen-reaper"): the helper deletes the link in its own
// syscall and keeps a duplicate of the netfilter socket open until the
// plugin has exited, so the last close — and its wait — happen in the
// helper. The plugin returns as soon as the link is gone from the namespace
// and its netfilter transaction has committed, which is everything the
// runtime can observe. The helper never outlives its parent by more than
// the time of those kernel waits (bounded by HoldLimit).
package reaper

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Name is the argv[0] under which linen-cni runs the helper.
const Name = "linen-reaper"

// HoldLimit bounds how long a helper waits for its parent to exit.
const HoldLimit = 10 * time.Second

// ReleaseDelay is how long a helper keeps held descriptors after its
// parent exited.
var ReleaseDelay = 30 * time.Millisecond

// Job is the work handed to a helper.
type Job struct {
	// NS is the namespace of the link to delete; nil for none.
	NS *os.File
	// IfName is the link to delete in NS.
	IfName string
	// Hold are descriptors the helper keeps open until the parent exits.
	Hold []*os.File
}

// Proc is a started helper.
type Proc struct {
	cmd  *exec.Cmd
	done chan error
}

// Start launches a helper for job. The parent keeps nothing to clean up:
// the helper exits on its own once the parent has exited.
func Start(job Job) (*Proc, error) {
	// The pipe's write end stays (close-on-exec) in this process only; the
	// helper sees EOF on the read end when this process exits.
	// A raw descriptor has no finalizer, so nothing closes it before exit.
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	r := os.NewFile(uintptr(fds[0]), "reaper-pipe")
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: []string{Name}}
	cmd.ExtraFiles = []*os.File{r} // fd 3
	if job.NS != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, job.NS) // fd 4
		cmd.Args = append(cmd.Args, "-ns-fd", "4", "-ifname", job.IfName)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, job.Hold...)
	if err := cmd.Start(); err != nil {
		r.Close()
		unix.Close(fds[1])
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	r.Close()
	p := &Proc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// Exited returns a channel that yields the helper's exit status.
func (p *Proc) Exited() <-chan error { return p.done }

// WaitLinkGone polls h until no link with the given index exists, the helper
// exits, or timeout passes. It reports whether the link is gone.
func WaitLinkGone(h *netlink.Handle, index int, p *Proc, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	delay := 100 * time.Microsecond
	for {
		if _, err := h.LinkByIndex(index); err != nil {
			var lnf netlink.LinkNotFoundError
			if errors.As(err, &lnf) {
				return true
			}
		}
		if p != nil {
			select {
			case <-p.done:
				// The helper finished (or failed): one last look.
				_, err := h.LinkByIndex(index)
				var lnf netlink.LinkNotFoundError
				return errors.As(err, &lnf)
			default:
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay)
		if delay < 2*time.Millisecond {
			delay *= 2
		}
	}
}

// Main is the helper's entry point; it returns the exit status.
func Main(args []string, stderr io.Writer) int {
	parent := os.NewFile(3, "parent")
	code := 0
	var nsFd int = -1
	var ifName string
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "-ns-fd":
			n, err := strconv.Atoi(args[i+1])
			if err != nil {
				fmt.Fprintf(stderr, "%s: bad -ns-fd %q\n", Name, args[i+1])
				return 2
			}
			nsFd = n
		case "-ifname":
			ifName = args[i+1]
		}
	}
	if nsFd >= 0 && ifName != "" {
		if err := deleteLink(nsFd, ifName); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", Name, err)
			code = 1
		}
	}
	// Hold every inherited descriptor until the parent exits, and a little
	// longer: the kernel's destroy work of the parent's last netfilter
	// transaction finishes within about one grace period, after which the
	// release finds nothing pending and neither waits nor stalls the
	// namespace's next transaction (the release flushes pending work while
	// holding nf_tables' commit mutex).
	waitEOF(parent, HoldLimit)
	time.Sleep(ReleaseDelay)
	return code
}

func deleteLink(nsFd int, ifName string) error {
	h, err := netlink.NewHandleAt(vnetns.NsHandle(nsFd))
	if err != nil {
		return fmt.Errorf("open netlink in pod netns: %w", err)
	}
	defer h.Close()
	link, err := h.LinkByName(ifName)
	if err != nil {
		var lnf netlink.LinkNotFoundError
		if errors.As(err, &lnf) {
			return nil
		}
		return fmt.Errorf("find %q: %w", ifName, err)
	}
	if err := h.LinkDel(link); err != nil {
		var lnf netlink.LinkNotFoundError
		if errors.As(err, &lnf) {
			return nil
		}
		return fmt.Errorf("delete %q: %w", ifName, err)
	}
	return nil
}

func waitEOF(f *os.File, limit time.Duration) {
	done := make(chan struct{})
	go func() {
		var b [1]byte
		for {
			if _, err := f.Read(b[:]); err != nil {
				break
			}
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(limit):
	}
}
