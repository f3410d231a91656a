// Package netns is the only package in linen that switches a thread's
// network namespace (setns, unshare, LockOSThread).
//
// A network namespace belongs to an OS thread, not to a goroutine. Code that
// must run "inside" a namespace goes through NS.Do, which runs the function on
// a fresh goroutine locked to its thread and, if the thread cannot be switched
// back, lets that thread die with the goroutine instead of returning it to the
// Go scheduler in the wrong namespace. Wherever possible prefer a netlink
// handle bound to the namespace (netlink.NewHandleAt(ns.Handle())), which
// works from any goroutine and costs no thread switch.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNotExist is returned (wrapped) when a namespace path does not exist.
var ErrNotExist = errors.New("network namespace does not exist")

// ErrNotNetNS is returned (wrapped) when a path exists but is not a network
// namespace (not on nsfs or procfs).
var ErrNotNetNS = errors.New("not a network namespace")

// NS is an open network namespace.
type NS struct {
	f    *os.File
	path string
}

// Open opens the namespace at path (a bind mount such as /run/netns/x or a
// /proc/<pid>/ns/net link) and checks that it really is a network namespace.
func Open(path string) (*NS, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open netns %q: %w", path, ErrNotExist)
		}
		return nil, fmt.Errorf("open netns %q: %w", path, err)
	}
	if err := checkNetNS(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("open netns %q: %w", path, err)
	}
	return &NS{f: f, path: path}, nil
}

func checkNetNS(f *os.File) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return err
	}
	if st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC {
		return ErrNotNetNS
	}
	// NS_GET_NSTYPE tells a network namespace from the other kinds.
	t, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return ErrNotNetNS
	}
	if t != unix.CLONE_NEWNET {
		return ErrNotNetNS
	}
	return nil
}

// Current opens the network namespace of the calling thread.
func Current() (*NS, error) {
	return Open("/proc/thread-self/ns/net")
}

// Path is the path the namespace was opened from.
func (n *NS) Path() string { return n.path }

// Fd is the namespace file descriptor.
func (n *NS) Fd() int { return int(n.f.Fd()) }

// File is the underlying file, for passing to a child process.
func (n *NS) File() *os.File { return n.f }

// Handle converts to the vishvananda/netns handle type used by netlink.
func (n *NS) Handle() vnetns.NsHandle { return vnetns.NsHandle(n.f.Fd()) }

// Close closes the namespace file descriptor.
func (n *NS) Close() error { return n.f.Close() }

// ID identifies the namespace (device and inode of its nsfs file).
func (n *NS) ID() (uint64, uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(n.Fd(), &st); err != nil {
		return 0, 0, err
	}
	return st.Dev, st.Ino, nil
}

// Same reports whether two handles refer to the same namespace.
func (n *NS) Same(o *NS) bool {
	d1, i1, err1 := n.ID()
	d2, i2, err2 := o.ID()
	return err1 == nil && err2 == nil && d1 == d2 && i1 == i2
}

// Do runs fn with the calling goroutine's work moved into the namespace: fn
// runs on a new goroutine locked to an OS thread that has joined n. Goroutines
// that fn starts do not inherit the namespace.
func (n *NS) Do(fn func() error) error {
	type result struct{ err error }
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{fmt.Errorf("open current netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Setns(n.Fd(), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{fmt.Errorf("enter netns %q: %w", n.path, err)}
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it exits with this goroutine and
			// never runs other goroutines in the wrong namespace.
			ch <- result{errors.Join(ferr, fmt.Errorf("return from netns %q: %w", n.path, err))}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{ferr}
	}()
	return (<-ch).err
}

// DoPath opens the namespace at path, runs fn in it and closes it.
func DoPath(path string, fn func() error) error {
	ns, err := Open(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	return ns.Do(fn)
}

// DefaultDir is where named namespaces are bind-mounted, as iproute2 does.
const DefaultDir = "/run/netns"

// NewNamed creates a network namespace and bind-mounts it at dir/name, like
// `ip netns add`. It returns the open namespace.
func NewNamed(dir, name string) (*NS, error) {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return nil, fmt.Errorf("create netns: invalid name %q", name)
	}
	if err := ensureSharedDir(dir); err != nil {
		return nil, fmt.Errorf("create netns %q: %w", name, err)
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("create netns %q: %w", name, err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		merr := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(merr, fmt.Errorf("return to original netns: %w", err))
			return // thread stays locked and dies
		}
		runtime.UnlockOSThread()
		if merr != nil {
			merr = fmt.Errorf("bind mount: %w", merr)
		}
		errc <- merr
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("create netns %q: %w", name, err)
	}
	ns, err := Open(path)
	if err != nil {
		_ = DeleteNamed(path)
		return nil, err
	}
	return ns, nil
}

// DeleteNamed unmounts and removes a namespace created by NewNamed (or `ip
// netns add`). A missing path is not an error. The kernel destroys the
// namespace once nothing else holds it.
func DeleteNamed(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %q: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %q: %w", path, err)
	}
	return nil
}

// ensureSharedDir makes dir a shared mount point, as iproute2 does, so that
// namespace bind mounts propagate to mount namespaces created later (for
// example those of container runtimes).
func ensureSharedDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// SweepPrefix removes every named namespace in dir whose name starts with
// prefix: what a crashed run of a test, benchmark or demo left behind.
func SweepPrefix(dir, prefix string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			_ = DeleteNamed(filepath.Join(dir, e.Name()))
		}
	}
}
