package dhcp4

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
)

// Conn is an AF_PACKET datagram socket bound to one interface of a network
// namespace. It carries IPv4 packets whose link-layer header the kernel
// adds (SOCK_DGRAM), so a client can talk DHCP before the interface has an
// address, independently of routes and of the namespace's IP stack. A
// kernel filter passes only unfragmented UDP datagrams to port 68.
type Conn struct {
	f       *os.File
	rc      syscall.RawConn
	ifindex int
	mac     net.HardwareAddr
	mtu     int
}

// ErrNotEthernet is returned for interfaces without a 6-byte hardware
// address (DHCP here is Ethernet only).
var ErrNotEthernet = errors.New("not an Ethernet interface")

// clientFilter accepts IPv4 UDP to port 68 (classic BPF, offsets from the
// IP header since the socket is SOCK_DGRAM).
var clientFilter = []unix.SockFilter{
	{Code: 0x30, K: 9},                 // ldb [9]            protocol
	{Code: 0x15, Jf: 6, K: protoUDP},   // jeq #17 else drop
	{Code: 0x28, K: 6},                 // ldh [6]            flags+fragment
	{Code: 0x45, Jt: 4, K: 0x3fff},     // jset MF|offset -> drop
	{Code: 0xb1, K: 0},                 // ldxb 4*([0]&0xf)   header length
	{Code: 0x48, K: 2},                 // ldh [x+2]          UDP dst port
	{Code: 0x15, Jf: 1, K: ClientPort}, // jeq #68 else drop
	{Code: 0x06, K: 0x40000},           // accept
	{Code: 0x06, K: 0},                 // drop
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Open opens a Conn on ifName inside ns. The socket is created by a thread
// that has joined ns (through netns.Do), so it belongs to that namespace
// for its whole life; it is used afterwards from any goroutine.
func Open(ns *netns.NS, ifName string) (*Conn, error) {
	var fd = -1
	var ifi *net.Interface
	err := ns.Do(func() error {
		var err error
		ifi, err = net.InterfaceByName(ifName)
		if err != nil {
			return fmt.Errorf("find interface %q: %w", ifName, err)
		}
		if len(ifi.HardwareAddr) != 6 {
			return fmt.Errorf("interface %q: %w", ifName, ErrNotEthernet)
		}
		// Protocol 0: the socket receives nothing until bind names the
		// protocol and the interface, after the filter is in place.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		return nil
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, err
	}
	fail := func(what string, err error) (*Conn, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s on %q: %w", what, ifName, err)
	}
	prog := unix.SockFprog{Len: uint16(len(clientFilter)), Filter: &clientFilter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		return fail("attach packet filter", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return fail("enable PACKET_AUXDATA", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
		return fail("bind packet socket", err)
	}
	f := os.NewFile(uintptr(fd), "dhcp4:"+ifName)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("packet socket on %q: %w", ifName, err)
	}
	return &Conn{f: f, rc: rc, ifindex: ifi.Index, mac: ifi.HardwareAddr, mtu: ifi.MTU}, nil
}

// HardwareAddr is the interface's MAC address.
func (c *Conn) HardwareAddr() net.HardwareAddr { return c.mac }

// MTU is the interface's MTU when the socket was opened.
func (c *Conn) MTU() int { return c.mtu }

// Close closes the socket.
func (c *Conn) Close() error { return c.f.Close() }

// BroadcastMAC is the Ethernet broadcast address.
var BroadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Send sends an IPv4 packet to the link-layer address dst.
func (c *Conn) Send(packet []byte, dst net.HardwareAddr) error {
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: c.ifindex, Halen: uint8(len(dst))}
	copy(sa.Addr[:], dst)
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), packet, 0, sa)
		return !errors.Is(serr, unix.EAGAIN)
	})
	if err != nil {
		return err
	}
	return serr
}

// Packet is one received IPv4 packet.
type Packet struct {
	Data []byte
	// From is the sender's link-layer address.
	From net.HardwareAddr
	// ChecksumReady is false when the kernel has not computed the UDP
	// checksum yet (the sender is local, with checksum offload), so the
	// checksum field cannot be verified.
	ChecksumReady bool
}

// Recv waits until deadline for the next packet, copied into buf.
func (c *Conn) Recv(buf []byte, deadline time.Time) (Packet, error) {
	if err := c.f.SetReadDeadline(deadline); err != nil {
		return Packet{}, err
	}
	oob := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.TpacketAuxdata{}))))
	var n, oobn int
	var from unix.Sockaddr
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		n, oobn, _, from, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err != nil {
		return Packet{}, err
	}
	if rerr != nil {
		return Packet{}, rerr
	}
	p := Packet{Data: buf[:n], ChecksumReady: true}
	if ll, ok := from.(*unix.SockaddrLinklayer); ok && int(ll.Halen) <= len(ll.Addr) {
		p.From = append(net.HardwareAddr(nil), ll.Addr[:ll.Halen]...)
	}
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
				aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
				if aux.Status&unix.TP_STATUS_CSUMNOTREADY != 0 {
					p.ChecksumReady = false
				}
			}
		}
	}
	return p, nil
}
