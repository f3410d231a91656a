package udp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockConn is the underlay UDP socket with batched I/O (recvmmsg and
// sendmmsg on the runtime-polled fd) and UDP GSO/GRO. One goroutine reads
// and one writes; the scratch of each direction belongs to its goroutine.
type sockConn struct {
	uc    *net.UDPConn
	rc    syscall.RawConn
	batch int
	gso   atomic.Bool
	gro   bool
	st    *counters
	onGSO func(error) // told when GSO is turned off
	// sendmmsg is the system call (a seam for tests).
	sendmmsg func(fd uintptr, hdrs []mmsghdr) (int, syscall.Errno)

	// send scratch
	wire  []wireMsg
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	ctrl  []byte

	// receive scratch
	rhdrs []mmsghdr
	riovs []unix.Iovec
	rctrl []byte
}

type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// wireMsg is one msghdr of a sendmmsg: segments [seg, seg+n) of message
// msg, as one GSO send when gso > 0.
type wireMsg struct {
	msg, seg, n int
	gso         int
}

const rxCtrlLen = 64

var (
	segSpace = unix.CmsgSpace(2)
	cmsgData = unix.CmsgLen(0)
)

// listenUDP opens the socket on addr in the calling thread's network
// namespace and applies the offload settings the kernel takes; it returns
// the offloads in effect.
func listenUDP(addr netip.AddrPort, o Offload, st *counters) (*sockConn, Offload, error) {
	uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, o, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, o, err
	}
	cerr := rc.Control(func(fd uintptr) {
		if o.SocketBuffer > 0 {
			for _, opt := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[0], o.SocketBuffer); err != nil {
					// Without CAP_NET_ADMIN: as much as net.core.*mem_max allows.
					_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[1], o.SocketBuffer)
				}
			}
		}
		if o.UDPGSO {
			if _, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT); err != nil {
				o.UDPGSO = false // kernel < 4.18
			}
		}
		if o.UDPGRO {
			if !kernelAtLeast(5, 12) {
				o.UDPGRO = false // older kernels mishandle UDP GRO
			} else if err := unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1); err != nil {
				o.UDPGRO = false
			}
		}
	})
	if cerr != nil {
		uc.Close()
		return nil, o, cerr
	}
	c := &sockConn{uc: uc, rc: rc, batch: o.Batch, gro: o.UDPGRO, st: st, onGSO: func(error) {}, sendmmsg: sendmmsg}
	c.gso.Store(o.UDPGSO)
	c.names = make([]unix.RawSockaddrInet4, c.batch)
	c.hdrs = make([]mmsghdr, c.batch)
	c.ctrl = make([]byte, c.batch*segSpace)
	return c, o, nil
}

// kernelAtLeast compares the running kernel's release with major.minor.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}

func (c *sockConn) Close() error { return c.uc.Close() }

// LocalAddr is the socket's address.
func (c *sockConn) LocalAddr() netip.AddrPort { return c.uc.LocalAddr().(*net.UDPAddr).AddrPort() }

// WriteBatch implements packetConn.
func (c *sockConn) WriteBatch(ms []txMsg) error {
	msg, seg := 0, 0
	for msg < len(ms) {
		// Lay out up to batch msghdrs from (msg, seg) on.
		c.wire = c.wire[:0]
		m, s := msg, seg
		gso := c.gso.Load()
		for len(c.wire) < c.batch && m < len(ms) {
			if gso && s == 0 && len(ms[m].segs) > 1 {
				c.wire = append(c.wire, wireMsg{msg: m, n: len(ms[m].segs), gso: ms[m].gsoSize})
				m++
				continue
			}
			c.wire = append(c.wire, wireMsg{msg: m, seg: s, n: 1})
			if s++; s == len(ms[m].segs) {
				m, s = m+1, 0
			}
		}
		c.iovs = c.iovs[:0]
		for _, w := range c.wire {
			for _, b := range ms[w.msg].segs[w.seg : w.seg+w.n] {
				v := unix.Iovec{Base: unsafe.SliceData(b)}
				v.SetLen(len(b))
				c.iovs = append(c.iovs, v)
			}
		}
		iv := 0
		for i, w := range c.wire {
			to := ms[w.msg].to
			sa := &c.names[i]
			*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: to.Addr().As4()}
			binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], to.Port())
			h := &c.hdrs[i].hdr
			*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(sa)), Namelen: unix.SizeofSockaddrInet4, Iov: &c.iovs[iv]}
			h.SetIovlen(w.n)
			iv += w.n
			if w.gso > 0 {
				cm := c.ctrl[i*segSpace : (i+1)*segSpace]
				ch := (*unix.Cmsghdr)(unsafe.Pointer(&cm[0]))
				ch.Level, ch.Type = unix.SOL_UDP, unix.UDP_SEGMENT
				ch.SetLen(unix.CmsgLen(2))
				binary.NativeEndian.PutUint16(cm[cmsgData:], uint16(w.gso))
				h.Control = &cm[0]
				h.SetControllen(segSpace)
			}
		}
		var sent int
		var errno syscall.Errno
		err := c.rc.Write(func(fd uintptr) bool {
			sent, errno = c.sendmmsg(fd, c.hdrs[:len(c.wire)])
			return errno != unix.EAGAIN
		})
		if err != nil {
			return errConnClosed
		}
		c.st.udpTxSends.Add(1)
		if errno == 0 {
			if sent >= len(c.wire) {
				msg, seg = m, s
			} else {
				msg, seg = c.wire[sent].msg, c.wire[sent].seg
			}
			continue
		}
		w := c.wire[0]
		if errno == unix.EIO && w.gso > 0 && c.gso.Load() {
			// No checksum offload on the egress device: UDP GSO cannot work.
			c.gso.Store(false)
			c.st.udpGSOOff.Add(1)
			c.onGSO(errno)
			msg, seg = w.msg, w.seg
			continue
		}
		// The first message failed (unreachable, no buffer space, ...):
		// drop it and go on with the rest.
		c.st.udpTxErrors.Add(1)
		if w.seg+w.n >= len(ms[w.msg].segs) {
			msg, seg = w.msg+1, 0
		} else {
			msg, seg = w.msg, w.seg+w.n
		}
	}
	return nil
}

func sendmmsg(fd uintptr, hdrs []mmsghdr) (int, syscall.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
	return int(r), e
}

// ReadBatch implements packetConn.
func (c *sockConn) ReadBatch(ms []rxMsg) (int, error) {
	n := min(len(ms), c.batch)
	if n == 0 {
		return 0, nil
	}
	if len(c.rhdrs) < n {
		c.rhdrs = make([]mmsghdr, n)
		c.riovs = make([]unix.Iovec, n)
		c.rctrl = make([]byte, n*rxCtrlLen)
	}
	for i := 0; i < n; i++ {
		c.riovs[i] = unix.Iovec{Base: unsafe.SliceData(ms[i].buf)}
		c.riovs[i].SetLen(len(ms[i].buf))
		h := &c.rhdrs[i].hdr
		*h = unix.Msghdr{Iov: &c.riovs[i]}
		h.SetIovlen(1)
		if c.gro {
			h.Control = &c.rctrl[i*rxCtrlLen]
			h.SetControllen(rxCtrlLen)
		}
	}
	var got int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&c.rhdrs[0])), uintptr(n), 0, 0, 0)
		got, errno = int(r), e
		return e != unix.EAGAIN
	})
	if err != nil {
		return 0, errConnClosed
	}
	if errno != 0 {
		return 0, fmt.Errorf("recvmmsg: %w", errno)
	}
	for i := 0; i < got; i++ {
		h := &c.rhdrs[i]
		ms[i].n = int(h.n)
		ms[i].trunc = h.hdr.Flags&unix.MSG_TRUNC != 0
		ms[i].gsoSize = 0
		if c.gro {
			ms[i].gsoSize = groSize(c.rctrl[i*rxCtrlLen : i*rxCtrlLen+int(h.hdr.Controllen)])
		}
	}
	return got, nil
}

// groSize finds the UDP_GRO control message (the segment size of a
// coalesced datagram run) in a control buffer.
func groSize(b []byte) int {
	for len(b) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(b) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= cmsgData+4 {
			return int(binary.NativeEndian.Uint32(b[cmsgData:]))
		}
		b = b[min(unix.CmsgSpace(l-cmsgData), len(b)):]
	}
	return 0
}
