package udp

import (
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"

	"linen.dev/linen/internal/tun"
)

// packetConn is the underlay side of the data path: the UDP socket
// (sockConn on Linux, a fake in tests).
type packetConn interface {
	// ReadBatch blocks until at least one datagram is there and fills up
	// to len(ms) messages.
	ReadBatch(ms []rxMsg) (int, error)
	// WriteBatch sends every message, falling back from GSO to one
	// datagram per segment on its own; per-message failures are counted,
	// not returned. It returns an error only when the socket is closed.
	WriteBatch(ms []txMsg) error
	Close() error
}

// errConnClosed is returned by a packetConn after Close.
var errConnClosed = errors.New("udp socket closed")

// txMsg is a run of datagrams to one peer. With more than one segment every
// segment but the last is gsoSize bytes (the last at most that), so the
// run can go out as one UDP GSO send.
type txMsg struct {
	to      netip.AddrPort
	segs    [][]byte
	gsoSize int
	start   int // index of segs[0] in the batch's flat segment list
	bytes   int
	closed  bool // the last segment was short: nothing more may join
}

// rxMsg is one received buffer: one datagram, or with UDP GRO a run of
// datagrams of gsoSize bytes each (the last may be shorter).
type rxMsg struct {
	buf     []byte
	n       int
	gsoSize int
	trunc   bool
}

// UDP GSO limits: segments per send (the kernel's UDP_MAX_SEGMENTS is 64 on
// older kernels) and payload bytes per send (IPv4 total length 65535 minus
// the outer headers).
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65535 - Overhead
)

// local is what the data path knows of this node's lease.
type local struct {
	subnet netip.Prefix // inner packets for other destinations are dropped on receive
	// icmpSrc is the source of the ICMP errors written into the TUN (see
	// icmpSource). Not the TUN's own address: the kernel drops a packet
	// arriving from one of its local addresses as a martian.
	icmpSrc netip.Addr
}

// dataPath moves packets between the TUN and the UDP socket: one goroutine
// per direction (runTx: TUN to UDP, runRx: UDP to TUN), each owning its
// buffers; the forwarding table and the own lease are swapped in
// atomically by Sync and Configure.
type dataPath struct {
	dev    tun.Device
	conn   packetConn
	off    Offload
	routes atomic.Pointer[table]
	local  atomic.Pointer[local]
	st     *counters
	log    *slog.Logger
}

func newDataPath(dev tun.Device, conn packetConn, off Offload, st *counters, log *slog.Logger) *dataPath {
	d := &dataPath{dev: dev, conn: conn, off: off, st: st, log: log}
	d.routes.Store(newTable(nil))
	return d
}

// Batch sizes when every buffer may hold 64 KiB (TSO reads, UDP GRO
// receives): each slot costs 64 KiB of resident memory (plus a split
// buffer on the send side) once used, and beyond these sizes more slots
// buy no throughput (measured).
var (
	tunBatchSuper = 4
	rxBatchGRO    = 8
)

// tunBufLen holds the largest packet a TUN read returns: a 64 KiB
// super-packet after its virtio header.
const tunBufLen = tun.VirtioNetHdrLen + 65535

// txState is runTx's scratch: the TUN read buffers, the split buffers and
// the batch of messages being built.
type txState struct {
	bufs      [][]byte
	sizes     []int
	splitBufs [][]byte // allocated on the first super-packet in a slot
	msgs      []txMsg
	flat      [][]byte
	segs      [][]byte
	cache     struct {
		t    *table
		p    netip.Prefix
		peer netip.AddrPort
	}
}

func (d *dataPath) newTxState() *txState {
	nbuf := d.off.Batch
	if d.dev.VnetHdr() {
		nbuf = min(nbuf, tunBatchSuper)
	}
	ts := &txState{bufs: make([][]byte, nbuf), sizes: make([]int, nbuf), splitBufs: make([][]byte, nbuf)}
	for i := range ts.bufs {
		ts.bufs[i] = make([]byte, tunBufLen)
	}
	return ts
}

// runTx reads packets from the TUN, routes them and sends them as UDP
// datagrams until the TUN or the socket is closed.
func (d *dataPath) runTx() error {
	ts := d.newTxState()
	for {
		n, err := d.dev.Read(ts.bufs, ts.sizes)
		if err != nil {
			if errors.Is(err, tun.ErrClosed) {
				return nil
			}
			d.st.tunReadErrors.Add(1)
			return err
		}
		d.st.tunReads.Add(1)
		d.txBatch(ts, n)
		if len(ts.msgs) == 0 {
			continue
		}
		if err := d.conn.WriteBatch(ts.msgs); err != nil {
			if errors.Is(err, errConnClosed) {
				return nil
			}
			return err
		}
	}
}

// txBatch turns the n packets read into ts.bufs into ts.msgs.
func (d *dataPath) txBatch(ts *txState, n int) {
	ts.msgs, ts.flat = ts.msgs[:0], ts.flat[:0]
	routes := d.routes.Load()
	if ts.cache.t != routes {
		ts.cache.t, ts.cache.p = routes, netip.Prefix{}
	}
	vnet := d.dev.VnetHdr()
	for i := 0; i < n; i++ {
		b := ts.bufs[i][:ts.sizes[i]]
		var h tun.VirtioNetHdr
		if vnet {
			var err error
			if h, err = tun.DecodeVirtioNetHdr(b); err != nil {
				d.st.dropMalformed.Add(1)
				continue
			}
			b = b[tun.VirtioNetHdrLen:]
		}
		d.st.tunRxPackets.Add(1)
		d.st.tunRxBytes.Add(uint64(len(b)))
		dst, ok := ipv4Dst(b)
		if !ok {
			d.st.dropNotIPv4.Add(1)
			continue
		}
		if b, ok = trimIPv4(b); !ok {
			d.st.dropMalformed.Add(1)
			continue
		}
		var peer netip.AddrPort
		if ts.cache.p.IsValid() && ts.cache.p.Contains(dst) {
			peer = ts.cache.peer
		} else if peer, ts.cache.p, ok = routes.lookup(dst); ok {
			ts.cache.peer = peer
		} else {
			d.unreachable(b)
			continue
		}
		if !decTTL(b) {
			d.st.dropTTL.Add(1)
			continue
		}
		if h.GSOType != tun.GSONone {
			d.st.tunRxSuper.Add(1)
			if ts.splitBufs[i] == nil {
				ts.splitBufs[i] = make([]byte, 2*65536)
			}
		}
		var err error
		ts.segs, err = tun.Split(b, h, ts.splitBufs[i], ts.segs[:0])
		if err != nil {
			d.st.dropMalformed.Add(1)
			continue
		}
		for _, s := range ts.segs {
			ts.msgs, ts.flat = d.appendSeg(ts.msgs, ts.flat, peer, s)
		}
	}
}

// appendSeg adds one datagram for peer to the batch: to the last message
// when it goes to the same peer and may grow (UDP GSO), else as a new
// message. flat holds every segment of the batch in order; a message's
// segs are a window of it, and only the last message ever grows.
func (d *dataPath) appendSeg(msgs []txMsg, flat [][]byte, peer netip.AddrPort, seg []byte) ([]txMsg, [][]byte) {
	d.st.udpTxDatagrams.Add(1)
	d.st.udpTxBytes.Add(uint64(len(seg)))
	if d.off.UDPGSO && len(msgs) > 0 {
		m := &msgs[len(msgs)-1]
		if m.to == peer && !m.closed && len(m.segs) < maxGSOSegments && len(seg) <= m.gsoSize && m.bytes+len(seg) <= maxGSOBytes {
			flat = append(flat, seg)
			m.segs = flat[m.start:]
			m.bytes += len(seg)
			m.closed = len(seg) < m.gsoSize
			return msgs, flat
		}
	}
	flat = append(flat, seg)
	return append(msgs, txMsg{to: peer, segs: flat[len(flat)-1:], gsoSize: len(seg), start: len(flat) - 1, bytes: len(seg)}), flat
}

// unreachable answers a packet without a route with ICMP net unreachable,
// written back into the TUN (flannel's behaviour), then drops it.
func (d *dataPath) unreachable(p []byte) {
	d.st.dropNoRoute.Add(1)
	loc := d.local.Load()
	if loc == nil || !wantsUnreachable(p) {
		return
	}
	var hdr [tun.VirtioNetHdrLen]byte
	buf := make([]byte, 0, tun.VirtioNetHdrLen+28+60+8)
	if d.dev.VnetHdr() {
		buf = append(buf, hdr[:]...)
	}
	buf = netUnreachable(buf, loc.icmpSrc, p)
	if _, err := d.dev.Write([][]byte{buf}); err != nil {
		d.st.tunWriteErrors.Add(1)
		return
	}
	d.st.icmpSent.Add(1)
}

// rxState is runRx's scratch: the receive buffers and the coalescer that
// holds references into them until the batch is flushed.
type rxState struct {
	ms     []rxMsg
	co     tun.Coalescer
	gro    bool
	vnet   bool
	iov    [][]byte
	zero   [tun.VirtioNetHdrLen]byte
	closed bool // the TUN is closed
}

func (d *dataPath) newRxState() *rxState {
	rs := &rxState{vnet: d.dev.VnetHdr(), iov: make([][]byte, 0, 2)}
	rs.gro = rs.vnet && d.off.TCPGRO
	nmsg := d.off.Batch
	if d.off.UDPGRO {
		nmsg = min(nmsg, rxBatchGRO)
	}
	rs.ms = make([]rxMsg, nmsg)
	for i := range rs.ms {
		rs.ms[i].buf = make([]byte, 65535)
	}
	return rs
}

// runRx receives datagrams, checks and forwards the inner packets into the
// TUN (merged per TCP flow when TCPGRO is on) until the socket or the TUN
// is closed.
func (d *dataPath) runRx() error {
	rs := d.newRxState()
	for !rs.closed {
		n, err := d.conn.ReadBatch(rs.ms)
		if err != nil {
			if errors.Is(err, errConnClosed) {
				return nil
			}
			d.st.udpRxErrors.Add(1)
			continue
		}
		d.st.udpRxCalls.Add(1)
		d.rxBatch(rs, n)
	}
	return nil
}

// rxBatch delivers the n messages received into rs.ms to the TUN.
func (d *dataPath) rxBatch(rs *rxState, n int) {
	loc := d.local.Load()
	for i := 0; i < n && !rs.closed; i++ {
		m := &rs.ms[i]
		if m.trunc {
			d.st.dropTruncated.Add(1)
			continue
		}
		data := m.buf[:m.n]
		seg := m.gsoSize
		if seg <= 0 || seg > len(data) {
			seg = len(data)
		} else if seg < len(data) {
			d.st.udpRxGRO.Add(1)
		}
		for len(data) > 0 && !rs.closed {
			p := data[:min(seg, len(data))]
			data = data[len(p):]
			d.st.udpRxDatagrams.Add(1)
			d.st.udpRxBytes.Add(uint64(len(p)))
			p, ok := d.accept(p, loc)
			if !ok {
				continue
			}
			d.st.tunWritePackets.Add(1)
			if rs.gro {
				rs.co.Add(p)
				continue
			}
			rs.iov = rs.iov[:0]
			if rs.vnet {
				rs.iov = append(rs.iov, rs.zero[:])
			}
			_ = d.writeTUN(rs, append(rs.iov, p))
		}
	}
	if rs.gro {
		_ = rs.co.Flush(func(iov [][]byte) error { return d.writeTUN(rs, iov) })
	}
}

// writeTUN writes one packet; only a closed device stops the batch.
func (d *dataPath) writeTUN(rs *rxState, iov [][]byte) error {
	if _, err := d.dev.Write(iov); err != nil {
		if errors.Is(err, tun.ErrClosed) {
			rs.closed = true
			return err
		}
		d.st.tunWriteErrors.Add(1)
		return nil
	}
	d.st.tunWrites.Add(1)
	return nil
}

// accept checks an inner packet from the wire and prepares it for the TUN:
// IPv4, trimmed to its length, addressed to this node's subnet, TTL
// decremented.
func (d *dataPath) accept(p []byte, loc *local) ([]byte, bool) {
	dst, ok := ipv4Dst(p)
	if !ok {
		d.st.dropNotIPv4.Add(1)
		return nil, false
	}
	if p, ok = trimIPv4(p); !ok {
		d.st.dropMalformed.Add(1)
		return nil, false
	}
	if loc == nil || !loc.subnet.Contains(dst) {
		d.st.dropNotLocal.Add(1)
		return nil, false
	}
	if !decTTL(p) {
		d.st.dropTTL.Add(1)
		return nil, false
	}
	return p, true
}

// counters are the data path's statistics (Backend.Stats).
type counters struct {
	tunReads, tunReadErrors, tunRxPackets, tunRxBytes, tunRxSuper  atomic.Uint64
	udpTxDatagrams, udpTxBytes, udpTxSends, udpTxErrors, udpGSOOff atomic.Uint64
	udpRxCalls, udpRxDatagrams, udpRxBytes, udpRxGRO, udpRxErrors  atomic.Uint64
	tunWrites, tunWritePackets, tunWriteErrors, icmpSent           atomic.Uint64
	dropNoRoute, dropTTL, dropMalformed, dropNotIPv4, dropNotLocal atomic.Uint64
	dropTruncated                                                  atomic.Uint64
}

func (c *counters) snapshot() map[string]uint64 {
	return map[string]uint64{
		"tun_reads":             c.tunReads.Load(),
		"tun_read_errors":       c.tunReadErrors.Load(),
		"tun_rx_packets":        c.tunRxPackets.Load(),
		"tun_rx_bytes":          c.tunRxBytes.Load(),
		"tun_rx_super_packets":  c.tunRxSuper.Load(),
		"udp_tx_datagrams":      c.udpTxDatagrams.Load(),
		"udp_tx_bytes":          c.udpTxBytes.Load(),
		"udp_tx_sends":          c.udpTxSends.Load(),
		"udp_tx_errors":         c.udpTxErrors.Load(),
		"udp_gso_disabled":      c.udpGSOOff.Load(),
		"udp_rx_calls":          c.udpRxCalls.Load(),
		"udp_rx_datagrams":      c.udpRxDatagrams.Load(),
		"udp_rx_bytes":          c.udpRxBytes.Load(),
		"udp_rx_gro_buffers":    c.udpRxGRO.Load(),
		"udp_rx_errors":         c.udpRxErrors.Load(),
		"tun_writes":            c.tunWrites.Load(),
		"tun_write_packets":     c.tunWritePackets.Load(),
		"tun_write_errors":      c.tunWriteErrors.Load(),
		"icmp_unreachable_sent": c.icmpSent.Load(),
		"drop_no_route":         c.dropNoRoute.Load(),
		"drop_ttl":              c.dropTTL.Load(),
		"drop_malformed":        c.dropMalformed.Load(),
		"drop_not_ipv4":         c.dropNotIPv4.Load(),
		"drop_not_local":        c.dropNotLocal.Load(),
		"drop_truncated":        c.dropTruncated.Load(),
	}
}
