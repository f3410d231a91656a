package nft

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Conn is one lasting NETLINK_NETFILTER socket in one network namespace.
//
// Everything in this package runs over it: google/nftables (created
// AsLasting, so it never opens a socket of its own) and the few requests the
// library cannot make (targeted element gets, table userdata, exclusive
// element adds, conntrack). Keeping one socket for the life of a plugin
// matters on recent kernels: releasing a netfilter socket while nf_tables'
// destroy work is pending (after any transaction that deleted something,
// ours or another process's) blocks ~15 ms in the kernel. Dial returns a
// duplicate of the socket descriptor so that the plugin entry can hand the
// final release to a detached helper (internal/reaper).
//
// A Conn is not safe for concurrent use.
type Conn struct {
	nft     *nftables.Conn
	nl      *netlink.Conn
	buf     []byte
	ready   map[*tableDef]bool
	lockDir string
	timeout time.Duration
	deleted bool
}

// DefaultLockDir holds the lock file that serialises creation of linen's
// tables across plugin processes.
const DefaultLockDir = "/run/linen"

// Dial opens a lasting nftables connection in the network namespace nsFd
// refers to (nsFd < 0: the calling thread's namespace). It also returns a
// duplicate (close-on-exec) of the socket's descriptor; the socket is
// released only when both the Conn is closed and sockFd is closed, so the
// caller decides where the release — and any kernel wait it brings — happens.
func Dial(nsFd int) (conn *Conn, sockFd *os.File, err error) {
	var raw *netlink.Conn
	opts := []nftables.ConnOption{
		nftables.AsLasting(),
		nftables.WithSockOptions(func(nc *netlink.Conn) error {
			raw = nc
			// Acks without the request echoed back, and the kernel's error
			// strings; both are best effort (old kernels lack them).
			_ = nc.SetOption(netlink.CapAcknowledge, true)
			_ = nc.SetOption(netlink.ExtendedAcknowledge, true)
			return nil
		}),
	}
	if nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFd))
	}
	nc, err := nftables.New(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	if raw == nil {
		nc.CloseLasting()
		return nil, nil, errors.New("open nftables netlink socket: no socket")
	}
	rc, err := raw.SyscallConn()
	if err != nil {
		nc.CloseLasting()
		return nil, nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		derr = err
	}
	if derr != nil {
		nc.CloseLasting()
		return nil, nil, fmt.Errorf("duplicate nftables socket: %w", derr)
	}
	c := &Conn{
		nft:     nc,
		nl:      raw,
		buf:     make([]byte, 64<<10),
		ready:   map[*tableDef]bool{},
		lockDir: DefaultLockDir,
		timeout: 10 * time.Second,
	}
	return c, os.NewFile(uintptr(dup), "nftables-netlink"), nil
}

// NFT is the google/nftables connection on the same socket, for callers
// that need library operations this package does not wrap.
func (c *Conn) NFT() *nftables.Conn { return c.nft }

// Deleted reports whether a transaction on c deleted something. Releasing
// the socket after that waits for nf_tables' destroy work (~15 ms), so a
// plugin process then hands the descriptor from Dial to a detached helper.
func (c *Conn) Deleted() bool { return c.deleted }

func deletes(msgs []netlink.Message) bool {
	for _, m := range msgs {
		switch int(m.Header.Type) & 0xff {
		case unix.NFT_MSG_DELTABLE, unix.NFT_MSG_DELCHAIN, unix.NFT_MSG_DELRULE,
			unix.NFT_MSG_DELSET, unix.NFT_MSG_DELSETELEM, unix.NFT_MSG_DELOBJ:
			if int(m.Header.Type)>>8 == unix.NFNL_SUBSYS_NFTABLES {
				return true
			}
		}
	}
	return false
}

// Close closes this process's handle on the socket. The socket itself is
// released when the descriptor returned by Dial is closed too.
func (c *Conn) Close() error { return c.nft.CloseLasting() }

// OpError is a failed netlink request: the kernel's errno and, when the
// kernel sent one, its explanation.
type OpError struct {
	Op    string
	Errno unix.Errno
	Msg   string // extended ack message, may be empty
}

func (e *OpError) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("%s: %v (%s)", e.Op, e.Errno, e.Msg)
	}
	return fmt.Sprintf("%s: %v", e.Op, e.Errno)
}

func (e *OpError) Unwrap() error { return e.Errno }

func nftType(msg int) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msg)
}

// nfgen is the nfgenmsg header every nfnetlink message starts with.
func nfgen(family byte, resID uint16) []byte {
	return []byte{family, unix.NFNETLINK_V0, byte(resID >> 8), byte(resID)}
}

// send writes msgs in one sendmsg (one skb, as nfnetlink batches require)
// and returns them with their sequence numbers filled in.
func (c *Conn) send(msgs []netlink.Message) ([]netlink.Message, error) {
	for i := range msgs {
		msgs[i].Header.Sequence = 0
		msgs[i].Header.PID = 0
		msgs[i].Header.Length = 0
	}
	sent, err := c.nl.SendMessages(msgs)
	if err != nil {
		return nil, fmt.Errorf("send netlink request: %w", err)
	}
	return sent, nil
}

// recv reads one datagram. The messages point into c.buf and are valid
// until the next recv.
func (c *Conn) recv() ([]syscall.NetlinkMessage, error) {
	rc, err := c.nl.SyscallConn()
	if err != nil {
		return nil, err
	}
	var n, flags int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, flags, _, rerr = unix.Recvmsg(int(fd), c.buf, nil, unix.MSG_DONTWAIT)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err != nil {
		return nil, fmt.Errorf("receive netlink reply: %w", err)
	}
	if rerr != nil {
		return nil, fmt.Errorf("receive netlink reply: %w", rerr)
	}
	if flags&unix.MSG_TRUNC != 0 {
		return nil, errors.New("receive netlink reply: message truncated")
	}
	msgs, err := syscall.ParseNetlinkMessage(c.buf[:n])
	if err != nil {
		return nil, fmt.Errorf("parse netlink reply: %w", err)
	}
	return msgs, nil
}

// read feeds received messages to fn until fn reports it is done, bounded
// by the Conn's timeout.
func (c *Conn) read(fn func(m syscall.NetlinkMessage) (done bool, err error)) error {
	if err := c.nl.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return err
	}
	defer c.nl.SetReadDeadline(time.Time{})
	for {
		msgs, err := c.recv()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			done, err := fn(m)
			if err != nil {
				return err
			}
			if done {
				return nil
			}
		}
	}
}

// ackErrno decodes an NLMSG_ERROR: the errno (0 for an ack) and the
// extended ack message if any.
func ackErrno(m syscall.NetlinkMessage) (unix.Errno, string) {
	if len(m.Data) < 4 {
		return unix.EBADMSG, "short netlink error message"
	}
	code := int32(nativeEndian.Uint32(m.Data[:4]))
	if code == 0 {
		return 0, ""
	}
	errno := unix.Errno(-code)
	var msg string
	if m.Header.Flags&unix.NLM_F_ACK_TLVS != 0 {
		off := 4 + unix.SizeofNlMsghdr // the request header comes back...
		if m.Header.Flags&unix.NLM_F_CAPPED == 0 && len(m.Data) >= 4+4 {
			// ...and, uncapped, the whole request.
			off = 4 + int(nativeEndian.Uint32(m.Data[4:8]))
		}
		if off <= len(m.Data) {
			if ad, err := netlink.NewAttributeDecoder(m.Data[off:]); err == nil {
				for ad.Next() {
					if ad.Type() == unix.NLMSGERR_ATTR_MSG {
						msg = ad.String()
					}
				}
			}
		}
	}
	return errno, msg
}

// transact runs msgs as one nf_tables transaction (a batch): all of them
// or none. It returns the first failure.
func (c *Conn) transact(op string, msgs []netlink.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	all := make([]netlink.Message, 0, len(msgs)+2)
	all = append(all, batchMsg(unix.NFNL_MSG_BATCH_BEGIN))
	for _, m := range msgs {
		m.Header.Flags |= netlink.Request | netlink.Acknowledge
		all = append(all, m)
	}
	all = append(all, batchMsg(unix.NFNL_MSG_BATCH_END))
	sent, err := c.send(all)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	begin, end := sent[0].Header.Sequence, sent[len(sent)-1].Header.Sequence
	pending := make(map[uint32]bool, len(msgs))
	for _, m := range sent[1 : len(sent)-1] {
		pending[m.Header.Sequence] = true
	}
	var first *OpError
	err = c.read(func(m syscall.NetlinkMessage) (bool, error) {
		if m.Header.Type != unix.NLMSG_ERROR {
			return false, nil
		}
		seq := m.Header.Seq
		if seq == begin || seq == end {
			// The batch as a whole was refused (permissions, memory).
			errno, msg := ackErrno(m)
			return true, &OpError{Op: op, Errno: errno, Msg: msg}
		}
		if !pending[seq] {
			return false, nil // a stale reply of an earlier request
		}
		delete(pending, seq)
		if errno, msg := ackErrno(m); errno != 0 && first == nil {
			first = &OpError{Op: op, Errno: errno, Msg: msg}
		}
		return len(pending) == 0, nil
	})
	if err != nil {
		return err
	}
	if first != nil {
		return first
	}
	if deletes(msgs) {
		c.deleted = true
	}
	return nil
}

// checkTransaction sends msgs as a batch without its end marker: the
// kernel validates every message (loading modules as needed) and then
// aborts, so nothing changes. This is how `nft --check` works.
func (c *Conn) checkTransaction(op string, msgs []netlink.Message) error {
	all := make([]netlink.Message, 0, len(msgs)+1)
	all = append(all, batchMsg(unix.NFNL_MSG_BATCH_BEGIN))
	for _, m := range msgs {
		m.Header.Flags |= netlink.Request | netlink.Acknowledge
		all = append(all, m)
	}
	sent, err := c.send(all)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	begin := sent[0].Header.Sequence
	pending := make(map[uint32]bool, len(msgs))
	for _, m := range sent[1:] {
		pending[m.Header.Sequence] = true
	}
	var first *OpError
	err = c.read(func(m syscall.NetlinkMessage) (bool, error) {
		if m.Header.Type != unix.NLMSG_ERROR {
			return false, nil
		}
		if m.Header.Seq == begin {
			errno, msg := ackErrno(m)
			return true, &OpError{Op: op, Errno: errno, Msg: msg}
		}
		if !pending[m.Header.Seq] {
			return false, nil
		}
		delete(pending, m.Header.Seq)
		if errno, msg := ackErrno(m); errno != 0 && first == nil {
			first = &OpError{Op: op, Errno: errno, Msg: msg}
		}
		return len(pending) == 0, nil
	})
	if err != nil {
		return err
	}
	if first != nil {
		return first
	}
	return nil
}

func batchMsg(t int) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(t), Flags: netlink.Request},
		Data:   nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES),
	}
}

// result is the outcome of one non-batch request.
type result struct {
	data [][]byte // payloads (nfgenmsg included) of the reply messages
	err  error
}

// query sends requests in one sendmsg and collects their replies. A get
// ends with its ack or error, a dump (netlink.Dump set) with its done
// message or error; a dump that raced with a change reports
// errDumpInterrupted.
func (c *Conn) query(op string, reqs []netlink.Message) ([]result, error) {
	for i := range reqs {
		reqs[i].Header.Flags |= netlink.Request
		if reqs[i].Header.Flags&netlink.Dump == 0 {
			reqs[i].Header.Flags |= netlink.Acknowledge
		}
	}
	sent, err := c.send(reqs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	index := make(map[uint32]int, len(sent))
	for i, m := range sent {
		index[m.Header.Sequence] = i
	}
	out := make([]result, len(sent))
	left := len(sent)
	err = c.read(func(m syscall.NetlinkMessage) (bool, error) {
		i, ok := index[m.Header.Seq]
		if !ok {
			return false, nil
		}
		if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 && out[i].err == nil {
			out[i].err = fmt.Errorf("%s: %w", op, errDumpInterrupted)
		}
		switch m.Header.Type {
		case unix.NLMSG_ERROR, unix.NLMSG_DONE:
			if m.Header.Type == unix.NLMSG_ERROR {
				if errno, msg := ackErrno(m); errno != 0 {
					out[i].err = &OpError{Op: op, Errno: errno, Msg: msg}
				}
			}
			delete(index, m.Header.Seq)
			left--
			return left == 0, nil
		}
		out[i].data = append(out[i].data, append([]byte(nil), m.Data...))
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// errDumpInterrupted reports a dump that raced with a ruleset change.
var errDumpInterrupted = errors.New("dump interrupted by a concurrent change")

// dump runs one dump request and returns the payloads of its messages.
func (c *Conn) dump(op string, req netlink.Message) ([][]byte, error) {
	req.Header.Flags = netlink.Dump
	for attempt := 0; ; attempt++ {
		res, err := c.query(op, []netlink.Message{req})
		if err != nil {
			return nil, err
		}
		if errors.Is(res[0].err, errDumpInterrupted) && attempt < 5 {
			continue
		}
		return res[0].data, res[0].err
	}
}
