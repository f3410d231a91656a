package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Config describes the TUN device Open creates.
type Config struct {
	// Name is the interface name or a template with "%d" ("flannel%d");
	// empty means the kernel's "tun%d".
	Name string
	// VnetHdr opens the device with IFF_VNET_HDR.
	VnetHdr bool
	// Offload is requested with TUNSETOFFLOAD when VnetHdr is set. When the
	// kernel refuses it (EINVAL), Open retries without USO, then without
	// TSO, then without checksum offload; Device.Offload tells what stuck.
	Offload Offload
	// MTU, when positive, is set with SIOCSIFMTU.
	MTU int
}

// Linux is a TUN device opened from /dev/net/tun. Its fd is non-blocking and
// served by the Go runtime's poller, so a Read parks the goroutine, not the
// thread, and Close wakes it.
type Linux struct {
	f       *os.File
	rc      syscall.RawConn
	name    string
	vnetHdr bool
	off     Offload

	wmu    sync.Mutex
	wiov   []unix.Iovec
	closed atomic.Bool
}

var _ Device = (*Linux)(nil)

// Open creates (or attaches to) the TUN device in the network namespace of
// the calling thread: the device belongs to that namespace for its life,
// whichever goroutine uses it afterwards.
func Open(c Config) (*Linux, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	ifr, err := unix.NewIfreq(c.Name)
	if err != nil {
		return nil, fmt.Errorf("tun name %q: %w", c.Name, err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if c.VnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return nil, fmt.Errorf("create tun %q (TUNSETIFF): %w", c.Name, err)
	}
	d := &Linux{name: ifr.Name(), vnetHdr: c.VnetHdr}
	if c.VnetHdr {
		off, err := setOffload(fd, c.Offload)
		if err != nil {
			return nil, fmt.Errorf("tun %s: TUNSETOFFLOAD: %w", d.name, err)
		}
		d.off = off
	}
	if c.MTU > 0 {
		if err := setMTU(d.name, c.MTU); err != nil {
			return nil, fmt.Errorf("tun %s: set MTU %d: %w", d.name, c.MTU, err)
		}
	}
	d.f = os.NewFile(uintptr(fd), "/dev/net/tun:"+d.name)
	rc, err := d.f.SyscallConn()
	if err != nil {
		d.f.Close()
		ok = true // closed by f
		return nil, fmt.Errorf("tun %s: %w", d.name, err)
	}
	d.rc = rc
	ok = true
	return d, nil
}

// setOffload asks for o and steps down while the kernel says EINVAL (an
// older kernel without USO, or a configuration without TSO).
func setOffload(fd int, o Offload) (Offload, error) {
	for {
		err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, o.flags())
		switch {
		case err == nil:
			return o, nil
		case !errors.Is(err, unix.EINVAL):
			return Offload{}, err
		case o.USO:
			o.USO = false
		case o.TSO4 || o.TSO6:
			o.TSO4, o.TSO6 = false, false
		case o.Csum:
			o.Csum = false
		default:
			return Offload{}, err
		}
	}
}

func setMTU(name string, mtu int) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint32(uint32(mtu))
	return unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr)
}

func (d *Linux) Name() string     { return d.name }
func (d *Linux) VnetHdr() bool    { return d.vnetHdr }
func (d *Linux) Offload() Offload { return d.off }

// Read implements Device.
func (d *Linux) Read(bufs [][]byte, sizes []int) (int, error) {
	limit := min(len(bufs), len(sizes))
	if limit == 0 {
		return 0, nil
	}
	n := 0
	var opErr error
	err := d.rc.Read(func(fd uintptr) bool {
		for n < limit {
			r, err := unix.Read(int(fd), bufs[n])
			switch {
			case err == nil:
				sizes[n] = r
				n++
			case err == unix.EINTR:
			case err == unix.EAGAIN:
				return n > 0 // wait for readability only when nothing was read
			default:
				opErr = err
				return true
			}
		}
		return true
	})
	if n > 0 {
		return n, nil
	}
	if err != nil {
		return 0, d.closedErr(err)
	}
	return 0, fmt.Errorf("read %s: %w", d.name, opErr)
}

// Write implements Device with one writev.
func (d *Linux) Write(iov [][]byte) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.wiov = d.wiov[:0]
	for _, b := range iov {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		d.wiov = append(d.wiov, v)
	}
	if len(d.wiov) == 0 {
		return 0, nil
	}
	var n int
	var opErr error
	err := d.rc.Write(func(fd uintptr) bool {
		for {
			r, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&d.wiov[0])), uintptr(len(d.wiov)))
			switch e {
			case 0:
				n = int(r)
				return true
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			default:
				opErr = e
				return true
			}
		}
	})
	if err != nil {
		return 0, d.closedErr(err)
	}
	if opErr != nil {
		return 0, fmt.Errorf("write %s: %w", d.name, opErr)
	}
	return n, nil
}

// Close implements Device.
func (d *Linux) Close() error {
	d.closed.Store(true)
	err := d.f.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// closedErr maps the poller's "use of closed file" (not an exported error
// value) to ErrClosed.
func (d *Linux) closedErr(err error) error {
	if d.closed.Load() || errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return err
}
