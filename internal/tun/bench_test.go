package tun

import "testing"

func BenchmarkChecksum64K(b *testing.B) {
	buf := pattern(65536, 1)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		_ = Checksum(buf)
	}
}

func BenchmarkSplitTSO64K(b *testing.B) {
	pkt := partial(tcpSpec{src: a4, dst: b4, flags: tcpACK, payload: pattern(65535-40, 0)}.build())
	h := VirtioNetHdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1432, CsumStart: 20, CsumOffset: 16}
	out := make([]byte, SplitLen(pkt, h))
	var segs [][]byte
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		var err error
		if segs, err = Split(pkt, h, out, segs[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCoalesce64K(b *testing.B) {
	segs := flowSegments(tcpSpec{src: a4, dst: b4, sport: 1, dport: 2, seq: 1, ack: 1, id: 1}, pattern(45*1432, 0), 1432)
	work := clone(segs)
	var c Coalescer
	b.SetBytes(int64(45 * 1432))
	for b.Loop() {
		for i := range segs {
			copy(work[i][:40], segs[i][:40]) // restore the headers Flush rewrote
			c.Add(work[i])
		}
		_ = c.Flush(func([][]byte) error { return nil })
	}
}
