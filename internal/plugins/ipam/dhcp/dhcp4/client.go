package dhcp4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"
)

// Transport moves IPv4 packets on one interface; Conn is the real one.
type Transport interface {
	Send(packet []byte, dst net.HardwareAddr) error
	Recv(buf []byte, deadline time.Time) (Packet, error)
	HardwareAddr() net.HardwareAddr
}

// Client runs the client side of RFC 2131 on one interface.
type Client struct {
	T Transport
	// ClientID is the data of option 61 (type byte included).
	ClientID []byte
	// Params is the parameter request list (option 55).
	Params []uint8
	// Extra are options sent in DISCOVER and REQUEST messages (host name,
	// vendor class, ...).
	Extra Options
	// Broadcast asks servers to broadcast replies.
	Broadcast bool
	// MaxSize is option 57, 0 to leave it out.
	MaxSize uint16
	// FirstResend is the first retransmission interval (default 2 s);
	// it doubles up to ResendMax (default 62 s), with a random jitter of
	// a quarter of the interval, at most ±0.5 s.
	FirstResend, ResendMax time.Duration
	Log                    *slog.Logger
}

// Lease is a bound lease.
type Lease struct {
	Address netip.Addr
	// Server is the server identifier (option 54), to which renewals and
	// releases are sent.
	Server netip.Addr
	// ServerMAC is the link-layer source of the last ACK: the server, or
	// the relay that forwards to it.
	ServerMAC net.HardwareAddr
	// Options are the options of the last ACK.
	Options Options
	// Start is when the REQUEST that the last ACK answered was first sent;
	// the lease's times count from it (RFC 2131 4.4.1).
	Start            time.Time
	Duration, T1, T2 time.Duration
}

// Expiry, Renew and Rebind are the lease's absolute times; an infinite
// lease returns the zero Time.
func (l *Lease) Expiry() time.Time { return l.at(l.Duration) }

// RenewAt is T1.
func (l *Lease) RenewAt() time.Time { return l.at(l.T1) }

// RebindAt is T2.
func (l *Lease) RebindAt() time.Time { return l.at(l.T2) }

func (l *Lease) at(d time.Duration) time.Time {
	if l.Duration == Infinite {
		return time.Time{}
	}
	return l.Start.Add(d)
}

// NakError is a DHCPNAK.
type NakError struct {
	Server  netip.Addr
	Message string
}

func (e *NakError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("server %s refused the request (DHCPNAK): %s", e.Server, e.Message)
	}
	return fmt.Sprintf("server %s refused the request (DHCPNAK)", e.Server)
}

// ErrNoAnswer is returned (wrapped) when no server answered in time.
var ErrNoAnswer = errors.New("no answer from a DHCP server")

var unspecified = netip.AddrFrom4([4]byte{})
var broadcastIP = netip.AddrFrom4([4]byte{255, 255, 255, 255})

func (c *Client) logger() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (c *Client) base(t MessageType, xid uint32, secs uint16) *Message {
	m := &Message{Op: OpRequest, HType: 1, HLen: 6, XID: xid, Secs: secs,
		CIAddr: unspecified, YIAddr: unspecified, SIAddr: unspecified, GIAddr: unspecified,
		CHAddr: c.T.HardwareAddr()}
	if c.Broadcast {
		m.Flags = FlagBroadcast
	}
	m.Options.Set(OptMessageType, []byte{byte(t)})
	if len(c.ClientID) > 0 {
		m.Options.Set(OptClientID, c.ClientID)
	}
	if t == Discover || t == Request {
		if c.MaxSize >= 576 {
			m.Options.Set(OptMaxMessageSize, []byte{byte(c.MaxSize >> 8), byte(c.MaxSize)})
		}
		if len(c.Params) > 0 {
			m.Options.Set(OptParamRequest, c.Params)
		}
		for _, o := range c.Extra {
			m.Options.Set(o.Code, o.Data)
		}
	}
	return m
}

// outgoing is one message and where it goes.
type outgoing struct {
	build    func(secs uint16) *Message
	src, dst netip.Addr
	dstMAC   net.HardwareAddr
}

// exchange sends out, resending with exponential backoff, until accept
// takes a reply (done) or returns an error, or until deadline.
func (c *Client) exchange(ctx context.Context, out outgoing, deadline time.Time, accept func(*Message, Packet) (bool, error)) error {
	first := c.FirstResend
	if first <= 0 {
		first = 2 * time.Second
	}
	maxResend := c.ResendMax
	if maxResend <= 0 {
		maxResend = 62 * time.Second
	}
	start := time.Now()
	buf := make([]byte, 65536)
	interval := first
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := time.Now()
		if !now.Before(deadline) {
			return fmt.Errorf("%w after %d attempts in %s", ErrNoAnswer, attempt, now.Sub(start).Round(time.Millisecond))
		}
		secs := uint16(min(now.Sub(start)/time.Second, 0xffff))
		msg := out.build(secs)
		pkt := BuildUDP4(out.src, out.dst, ClientPort, ServerPort, msg.Encode())
		if err := c.T.Send(pkt, out.dstMAC); err != nil {
			return fmt.Errorf("send %s: %w", msg.Type(), err)
		}
		c.logger().Debug("dhcp sent", "type", msg.Type().String(), "xid", fmt.Sprintf("%#08x", msg.XID), "to", out.dst)
		// Jitter of up to a quarter of the interval (at most 0.5 s) keeps
		// clients that started together from resending together.
		j := min(interval/4, 500*time.Millisecond)
		jitter := time.Duration(rand.Int64N(int64(2*j)+1)) - j
		wait := now.Add(max(interval+jitter, 10*time.Millisecond))
		if deadline.Before(wait) {
			wait = deadline
		}
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			// Wake at least every second to notice cancellation.
			until := time.Now().Add(time.Second)
			if wait.Before(until) {
				until = wait
			}
			if d, ok := ctx.Deadline(); ok && d.Before(until) {
				until = d
			}
			p, err := c.T.Recv(buf, until)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if time.Now().Before(wait) {
					continue
				}
				break
			}
			if err != nil {
				return fmt.Errorf("receive: %w", err)
			}
			m := c.parse(p, msg.XID)
			if m == nil {
				continue
			}
			done, err := accept(m, p)
			if err != nil || done {
				return err
			}
		}
		interval = min(interval*2, maxResend)
	}
}

// parse returns the DHCP reply in p for xid and this client, or nil.
func (c *Client) parse(p Packet, xid uint32) *Message {
	u, err := ParseUDP4(p.Data, p.ChecksumReady)
	if err != nil || u.DstPort != ClientPort || u.SrcPort != ServerPort {
		return nil
	}
	m, err := Decode(u.Payload)
	if err != nil || m.Op != OpReply || m.XID != xid {
		return nil
	}
	if !bytes.Equal(m.CHAddr, c.T.HardwareAddr()) {
		return nil
	}
	return m
}

// Acquire runs DISCOVER, OFFER, REQUEST, ACK until deadline. A DHCPNAK
// restarts the exchange (at most four times).
func (c *Client) Acquire(ctx context.Context, deadline time.Time) (*Lease, error) {
	var lastNak error
	for round := 0; round < 4; round++ {
		xid := rand.Uint32()
		var offer *Message
		err := c.exchange(ctx, outgoing{
			build: func(secs uint16) *Message { return c.base(Discover, xid, secs) },
			src:   unspecified, dst: broadcastIP, dstMAC: BroadcastMAC,
		}, deadline, func(m *Message, _ Packet) (bool, error) {
			if m.Type() != Offer || !m.YIAddr.Is4() || m.YIAddr.IsUnspecified() || !m.ServerID().IsValid() {
				return false, nil
			}
			offer = m
			return true, nil
		})
		if err != nil {
			if lastNak != nil {
				return nil, fmt.Errorf("%w (after %v)", err, lastNak)
			}
			return nil, fmt.Errorf("DHCPDISCOVER: %w", err)
		}
		c.logger().Debug("dhcp offer", "address", offer.YIAddr, "server", offer.ServerID())
		server := offer.ServerID()
		start := time.Now()
		var lease *Lease
		err = c.exchange(ctx, outgoing{
			build: func(secs uint16) *Message {
				m := c.base(Request, xid, secs)
				a, s := offer.YIAddr.As4(), server.As4()
				m.Options.Set(OptRequestedIP, a[:])
				m.Options.Set(OptServerID, s[:])
				return m
			},
			src: unspecified, dst: broadcastIP, dstMAC: BroadcastMAC,
		}, deadline, func(m *Message, p Packet) (bool, error) {
			if m.ServerID() != server {
				return false, nil
			}
			switch m.Type() {
			case Nak:
				return true, &NakError{Server: server, Message: string(m.Options.Get(OptMessage))}
			case Ack:
				if m.YIAddr != offer.YIAddr {
					return false, nil
				}
				lease = newLease(m, p, start, nil)
				return true, nil
			}
			return false, nil
		})
		var nak *NakError
		if errors.As(err, &nak) {
			lastNak = err
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("DHCPREQUEST for %s: %w", offer.YIAddr, err)
		}
		return lease, nil
	}
	return nil, lastNak
}

// newLease builds a lease from an ACK; prev supplies values a renewal ACK
// may omit.
func newLease(m *Message, p Packet, start time.Time, prev *Lease) *Lease {
	l := &Lease{Address: m.YIAddr, Server: m.ServerID(), ServerMAC: p.From, Options: m.Options, Start: start}
	if !l.Server.IsValid() && prev != nil {
		l.Server = prev.Server
	}
	d, ok := m.Options.Duration(OptLeaseTime)
	if !ok || d == 0 {
		d = time.Hour
		if prev != nil {
			d = prev.Duration
		}
	}
	l.Duration = d
	if d == Infinite {
		l.T1, l.T2 = Infinite, Infinite
		return l
	}
	t1, ok1 := m.Options.Duration(OptRenewalTime)
	t2, ok2 := m.Options.Duration(OptRebindingTime)
	if !ok2 || t2 <= 0 || t2 >= d {
		t2 = d * 7 / 8
	}
	if !ok1 || t1 <= 0 || t1 >= t2 {
		t1 = min(d/2, t2)
	}
	l.T1, l.T2 = t1, t2
	return l
}

// Renew extends l by a REQUEST unicast to its server (RENEWING), resending
// until deadline (normally T2).
func (c *Client) Renew(ctx context.Context, l *Lease, deadline time.Time) (*Lease, error) {
	mac := l.ServerMAC
	if len(mac) != 6 {
		mac = BroadcastMAC
	}
	return c.extend(ctx, l, l.Server, mac, deadline)
}

// Rebind extends l by a broadcast REQUEST to any server (REBINDING),
// resending until deadline (normally the lease's expiry).
func (c *Client) Rebind(ctx context.Context, l *Lease, deadline time.Time) (*Lease, error) {
	return c.extend(ctx, l, broadcastIP, BroadcastMAC, deadline)
}

func (c *Client) extend(ctx context.Context, l *Lease, dst netip.Addr, mac net.HardwareAddr, deadline time.Time) (*Lease, error) {
	xid := rand.Uint32()
	start := time.Now()
	var out *Lease
	err := c.exchange(ctx, outgoing{
		build: func(secs uint16) *Message {
			m := c.base(Request, xid, secs)
			m.Flags = 0 // the client can receive unicast at its address
			m.CIAddr = l.Address
			return m
		},
		src: l.Address, dst: dst, dstMAC: mac,
	}, deadline, func(m *Message, p Packet) (bool, error) {
		switch m.Type() {
		case Nak:
			return true, &NakError{Server: m.ServerID(), Message: string(m.Options.Get(OptMessage))}
		case Ack:
			if m.YIAddr != l.Address {
				return true, fmt.Errorf("server %s acknowledged %s instead of %s", m.ServerID(), m.YIAddr, l.Address)
			}
			out = newLease(m, p, start, l)
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Release gives l back to its server (DHCPRELEASE; no answer is expected).
func (c *Client) Release(l *Lease) error {
	m := c.base(Release, rand.Uint32(), 0)
	m.Flags = 0
	m.CIAddr = l.Address
	s := l.Server.As4()
	m.Options.Set(OptServerID, s[:])
	mac := l.ServerMAC
	if len(mac) != 6 {
		mac = BroadcastMAC
	}
	pkt := BuildUDP4(l.Address, l.Server, ClientPort, ServerPort, m.Encode())
	if err := c.T.Send(pkt, mac); err != nil {
		return fmt.Errorf("send DHCPRELEASE for %s to %s: %w", l.Address, l.Server, err)
	}
	return nil
}
