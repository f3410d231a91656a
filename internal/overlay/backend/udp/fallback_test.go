package udp

import (
	"bytes"
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
)

// setTxChecksum switches an interface's transmit checksum offload (what
// `ethtool -K <if> tx on|off` does) with the legacy ETHTOOL_STXCSUM ioctl,
// from a thread in ns.
func setTxChecksum(ns *netns.NS, ifname string, on bool) error {
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		val := struct{ cmd, data uint32 }{cmd: unix.ETHTOOL_STXCSUM}
		if on {
			val.data = 1
		}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer
			_    [16]byte
		}
		copy(ifr.name[:], ifname)
		ifr.data = unsafe.Pointer(&val)
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
			return e
		}
		return nil
	})
}

// TestNoTxChecksum turns off transmit checksum offload on host 1's
// external interface. Kernels before 6.11 refuse UDP GSO sends then with
// EIO, and the backend must switch GSO off and resend; newer kernels
// checksum in software. Either way the transfer must arrive intact.
func TestNoTxChecksum(t *testing.T) {
	t.Parallel()
	c, nodes := setup(t, `{"Type":"udp"}`)
	a, b := c.Hosts[0], c.Hosts[1]
	if err := setTxChecksum(a.NS, "eth0", false); err != nil {
		t.Skipf("cannot turn off tx checksum offload on the veth: %v", err)
	}
	transfer(t, a.Pod, b.Pod, b.PodIP, 8<<20)
	st := nodes[0].b.Stats()
	t.Logf("udp_gso_disabled = %d, GSO in effect %v", st["udp_gso_disabled"], nodes[0].b.Offload().UDPGSO)
	if st["udp_gso_disabled"] == 1 && nodes[0].b.Offload().UDPGSO {
		t.Error("GSO counted as disabled but still in effect")
	}
}

// TestGSOFallbackOnEIO makes sendmmsg answer EIO to every GSO message, as
// a kernel does when the egress device cannot checksum: the socket must
// turn GSO off once and deliver every datagram, one per message.
func TestGSOFallbackOnEIO(t *testing.T) {
	ns := nstest.New(t)
	st := &counters{}
	var tx, rx *sockConn
	if err := ns.Do(func() error {
		if err := setUp(ns, "lo"); err != nil {
			return err
		}
		var err error
		if tx, _, err = listenUDP(netip.MustParseAddrPort("127.0.0.1:0"), DefaultOffload, st); err != nil {
			return err
		}
		rx, _, err = listenUDP(netip.MustParseAddrPort("127.0.0.1:0"), Offload{Batch: 64, SocketBuffer: 1 << 20}, &counters{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	defer rx.Close()
	if !tx.gso.Load() {
		t.Skip("no UDP GSO on this kernel")
	}
	eios := 0
	real := tx.sendmmsg
	tx.sendmmsg = func(fd uintptr, hdrs []mmsghdr) (int, syscall.Errno) {
		if hdrs[0].hdr.Controllen > 0 {
			eios++
			return 0, unix.EIO
		}
		return real(fd, hdrs)
	}
	var gsoOff error
	tx.onGSO = func(err error) { gsoOff = err }
	to := rx.LocalAddr()
	var segs [][]byte
	for i := 0; i < 5; i++ {
		segs = append(segs, bytes.Repeat([]byte{byte(i)}, 100))
	}
	msgs := []txMsg{{to: to, segs: segs[:3], gsoSize: 100}, {to: to, segs: segs[3:], gsoSize: 100}}
	if err := tx.WriteBatch(msgs); err != nil {
		t.Fatal(err)
	}
	if eios != 1 || !errors.Is(gsoOff, unix.EIO) || tx.gso.Load() || st.udpGSOOff.Load() != 1 {
		t.Fatalf("EIO answered %d times, GSO callback %v, still on %v: want one EIO and GSO off", eios, gsoOff, tx.gso.Load())
	}
	rx.uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	ms := make([]rxMsg, 8)
	for i := range ms {
		ms[i].buf = make([]byte, 2048)
	}
	var got []byte
	for len(got) < 5 {
		n, err := rx.ReadBatch(ms)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		for _, m := range ms[:n] {
			if m.n != 100 {
				t.Fatalf("datagram of %d bytes, want 100", m.n)
			}
			got = append(got, m.buf[0])
		}
	}
	if !bytes.Equal(got, []byte{0, 1, 2, 3, 4}) {
		t.Fatalf("datagrams %v, want 0..4 in order", got)
	}
}

func setUp(ns *netns.NS, ifname string) error {
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return err
	}
	return h.LinkSetUp(l)
}
