package tun

import (
	"errors"
	"sync"
)

// Device is a TUN device: an IP-level interface whose packets are read and
// written by the process.
//
// When VnetHdr reports true, every packet read starts with a virtio_net_hdr
// (VirtioNetHdrLen bytes) that may describe a GSO super-packet (see Split),
// and every packet written must start with one (see Coalescer.Flush).
type Device interface {
	// Name is the interface name (the kernel's expansion of a "%d" template).
	Name() string
	// VnetHdr reports whether packets carry a virtio_net_hdr.
	VnetHdr() bool
	// Offload reports the offloads the kernel accepted.
	Offload() Offload
	// Read blocks until at least one packet is available, then reads it and
	// any further packets that are already queued, without blocking again,
	// up to len(bufs) and len(sizes). Packet i lands in bufs[i][:sizes[i]];
	// a buffer should hold VirtioNetHdrLen+65535 bytes. It returns the number
	// of packets.
	Read(bufs [][]byte, sizes []int) (int, error)
	// Write writes one packet gathered from iov (one writev).
	Write(iov [][]byte) (int, error)
	// Close releases the device; a blocked Read returns ErrClosed. The
	// kernel removes a non-persistent device when its last fd is closed.
	Close() error
}

// ErrClosed is returned by Read and Write after Close.
var ErrClosed = errors.New("tun device closed")

// Offload is a set of TUNSETOFFLOAD features (meaningful with VnetHdr only).
type Offload struct {
	Csum bool // TUN_F_CSUM: packets may carry partial checksums (FlagNeedsCsum)
	TSO4 bool // TUN_F_TSO4: TCP/IPv4 super-packets (needs Csum)
	TSO6 bool // TUN_F_TSO6: TCP/IPv6 super-packets (needs Csum)
	USO  bool // TUN_F_USO4|TUN_F_USO6 (the kernel takes them only together): UDP super-packets (needs Csum, kernel >= 6.2)
}

// TUN_F_* (include/uapi/linux/if_tun.h).
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
	tunFUSO4 = 0x20
	tunFUSO6 = 0x40
)

func (o Offload) flags() int {
	if !o.Csum {
		return 0
	}
	f := tunFCsum
	if o.TSO4 {
		f |= tunFTSO4
	}
	if o.TSO6 {
		f |= tunFTSO6
	}
	if o.USO {
		f |= tunFUSO4 | tunFUSO6
	}
	return f
}

// AllOffloads is every offload Open knows how to request.
var AllOffloads = Offload{Csum: true, TSO4: true, TSO6: true, USO: true}

// Fake is an in-memory Device for tests. Packets given to Inject come out of
// Read (as if the kernel routed them into the device); packets passed to
// Write come out of Written.
type Fake struct {
	name    string
	vnetHdr bool
	in      chan []byte
	out     chan []byte
	done    chan struct{}
	once    sync.Once
}

var _ Device = (*Fake)(nil)

// NewFake returns a fake device whose queues hold up to queue packets each.
func NewFake(name string, vnetHdr bool, queue int) *Fake {
	return &Fake{name: name, vnetHdr: vnetHdr, in: make(chan []byte, queue), out: make(chan []byte, queue), done: make(chan struct{})}
}

func (f *Fake) Name() string  { return f.name }
func (f *Fake) VnetHdr() bool { return f.vnetHdr }

// Offload is AllOffloads with a virtio header, none without.
func (f *Fake) Offload() Offload {
	if f.vnetHdr {
		return AllOffloads
	}
	return Offload{}
}

// Inject queues a packet (including its virtio_net_hdr when VnetHdr) for
// Read. It blocks while the queue is full and returns false once the device
// is closed.
func (f *Fake) Inject(pkt []byte) bool {
	select {
	case f.in <- pkt:
		return true
	case <-f.done:
		return false
	}
}

// Written is the queue of packets written to the device, each joined from
// its iov.
func (f *Fake) Written() <-chan []byte { return f.out }

func (f *Fake) Read(bufs [][]byte, sizes []int) (int, error) {
	n := min(len(bufs), len(sizes))
	if n == 0 {
		return 0, nil
	}
	select {
	case p := <-f.in:
		sizes[0] = copy(bufs[0], p)
	case <-f.done:
		return 0, ErrClosed
	}
	i := 1
	for ; i < n; i++ {
		select {
		case p := <-f.in:
			sizes[i] = copy(bufs[i], p)
		default:
			return i, nil
		}
	}
	return i, nil
}

func (f *Fake) Write(iov [][]byte) (int, error) {
	var p []byte
	for _, b := range iov {
		p = append(p, b...)
	}
	select {
	case <-f.done:
		return 0, ErrClosed
	default:
	}
	select {
	case f.out <- p:
		return len(p), nil
	case <-f.done:
		return 0, ErrClosed
	}
}

func (f *Fake) Close() error {
	f.once.Do(func() { close(f.done) })
	return nil
}
