package udp

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"linen.dev/linen/internal/tun"
)

func fuzzDataPath(vnet bool, off Offload) (*dataPath, *tun.Fake) {
	dev := tun.NewFake("flannel0", vnet, 8192)
	off.VnetHdr = vnet
	off.TCPGRO = vnet && off.TCPGRO
	if off.Batch == 0 {
		off.Batch = 4
	}
	d := newDataPath(dev, newFakeConn(), off, &counters{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.local.Store(&local{subnet: ownNet, icmpSrc: network.Addr()})
	d.routes.Store(newTable([]Route{{Subnet: netip.MustParsePrefix("10.5.2.0/24"), Peer: peerB}}))
	return d, dev
}

// FuzzRx feeds one received buffer (with an arbitrary UDP GRO segment
// size) through the receive path: no panic, and everything written to the
// TUN is an IPv4 packet for this node's subnet (a GSO super-packet that
// splits cleanly, with TCPGRO).
func FuzzRx(f *testing.F) {
	seg := tcpPkt(podB, podA, 1, 0x10, 64, 1, pattern(100, 0))
	seg2 := tcpPkt(podB, podA, 101, 0x10, 64, 2, pattern(100, 1))
	f.Add(append(append([]byte(nil), seg...), seg2...), uint16(len(seg)), true)
	f.Add(udpPkt(podB, podA, 1, 2, 64, []byte("x")), uint16(0), false)
	f.Add([]byte{0x45, 0, 0, 20}, uint16(3), true)
	f.Fuzz(func(t *testing.T, data []byte, gso uint16, vnet bool) {
		if len(data) > 65535 {
			return
		}
		d, dev := fuzzDataPath(vnet, Offload{TCPGRO: true})
		rs := d.newRxState()
		rs.ms[0].n = copy(rs.ms[0].buf, data)
		rs.ms[0].gsoSize = int(gso)
		d.rxBatch(rs, 1)
		dev.Close()
		for {
			var p []byte
			select {
			case p = <-dev.Written():
			default:
				return
			}
			var h tun.VirtioNetHdr
			if vnet {
				var err error
				if h, err = tun.DecodeVirtioNetHdr(p); err != nil {
					t.Fatal(err)
				}
				p = p[tun.VirtioNetHdrLen:]
			}
			dst, ok := ipv4Dst(p)
			if !ok || !ownNet.Contains(dst) {
				t.Fatalf("wrote a packet for %v", dst)
			}
			if h.GSOType != tun.GSONone {
				if _, err := tun.Split(p, h, make([]byte, tun.SplitLen(p, h)), nil); err != nil {
					t.Fatalf("coalesced packet does not split: %v", err)
				}
			}
		}
	})
}

// FuzzTx feeds one TUN read (virtio header + packet) through the send
// path: no panic, and every datagram is one IPv4 packet whose length field
// matches, in messages that respect the UDP GSO rules.
func FuzzTx(f *testing.F) {
	pkt, vh := tsoPacket(pattern(3000, 2), 1000)
	var hb [tun.VirtioNetHdrLen]byte
	vh.Encode(hb[:])
	f.Add(append(hb[:], pkt...))
	f.Add(append(make([]byte, tun.VirtioNetHdrLen), udpPkt(podA, podB, 1, 2, 64, []byte("y"))...))
	f.Add(append(make([]byte, tun.VirtioNetHdrLen), udpPkt(podA, netip.MustParseAddr("10.5.9.9"), 1, 2, 64, []byte("y"))...))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, dev := fuzzDataPath(true, Offload{UDPGSO: true})
		defer dev.Close()
		ts := d.newTxState()
		if len(data) > len(ts.bufs[0]) {
			return
		}
		ts.sizes[0] = copy(ts.bufs[0], data)
		d.txBatch(ts, 1)
		for _, m := range ts.msgs {
			if m.to != peerB || len(m.segs) == 0 || len(m.segs) > maxGSOSegments {
				t.Fatalf("message to %v with %d segments", m.to, len(m.segs))
			}
			total := 0
			for i, s := range m.segs {
				total += len(s)
				if len(s) > m.gsoSize || (i < len(m.segs)-1 && len(s) != m.gsoSize) {
					t.Fatalf("segment %d: %d bytes, GSO size %d", i, len(s), m.gsoSize)
				}
				if len(s) < 20 || int(binary.BigEndian.Uint16(s[2:])) != len(s) {
					t.Fatalf("segment %d is not one IPv4 packet", i)
				}
			}
			if total > maxGSOBytes {
				t.Fatalf("message of %d bytes", total)
			}
		}
	})
}
