package udp

import (
	"encoding/binary"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file:\n--- want\n%s--- got\n%s", path, want, got)
	}
}

// naiveSum is an independent ones'-complement checksum (16-bit words).
func naiveSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// ipv4 builds an IPv4 packet with a valid header checksum around an L4
// payload whose checksum (if any) the caller has set.
func ipv4(src, dst netip.Addr, proto uint8, ttl uint8, id uint16, frag uint16, l4 []byte) []byte {
	p := make([]byte, 20, 20+len(l4))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(p[4:], id)
	binary.BigEndian.PutUint16(p[6:], frag)
	p[8], p[9] = ttl, proto
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], naiveSum(p))
	return append(p, l4...)
}

func pseudo(src, dst netip.Addr, proto uint8, l4 []byte) []byte {
	s, d := src.As4(), dst.As4()
	ph := append(append(s[:], d[:]...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
	return append(ph, l4...)
}

func udpPkt(src, dst netip.Addr, sport, dport uint16, ttl uint8, payload []byte) []byte {
	l4 := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	copy(l4[8:], payload)
	binary.BigEndian.PutUint16(l4[6:], naiveSum(pseudo(src, dst, 17, l4)))
	return ipv4(src, dst, 17, ttl, 1, 0x4000, l4)
}

func tcpPkt(src, dst netip.Addr, seq uint32, flags uint8, ttl uint8, id uint16, payload []byte) []byte {
	l4 := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(l4[0:], 40000)
	binary.BigEndian.PutUint16(l4[2:], 5201)
	binary.BigEndian.PutUint32(l4[4:], seq)
	binary.BigEndian.PutUint32(l4[8:], 1)
	l4[12] = 5 << 4
	l4[13] = flags
	binary.BigEndian.PutUint16(l4[14:], 1000)
	copy(l4[20:], payload)
	binary.BigEndian.PutUint16(l4[16:], naiveSum(pseudo(src, dst, 6, l4)))
	return ipv4(src, dst, 6, ttl, id, 0x4000, l4)
}

func icmpEcho(src, dst netip.Addr, ttl uint8) []byte {
	l4 := []byte{8, 0, 0, 0, 0, 1, 0, 1, 'p', 'i', 'n', 'g'}
	binary.BigEndian.PutUint16(l4[2:], naiveSum(l4))
	return ipv4(src, dst, 1, ttl, 1, 0, l4)
}

// validIPv4 checks the IPv4 header checksum and, for TCP/UDP/ICMP, the L4
// checksum, with naiveSum.
func validIPv4(p []byte) bool {
	if naiveSum(p[:20]) != 0 {
		return false
	}
	src, dst := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
	switch p[9] {
	case 1:
		return naiveSum(p[20:]) == 0
	case 6, 17:
		return naiveSum(pseudo(src, dst, p[9], p[20:])) == 0
	}
	return true
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13) ^ seed
	}
	return b
}

// recv waits (bounded) for the next value of ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10 s", what)
		var zero T
		return zero
	}
}
