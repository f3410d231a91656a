package dhcp4

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzDecode: any datagram decodes or fails cleanly, and what decodes
// encodes to a message that decodes to the same options.
func FuzzDecode(f *testing.F) {
	m := &Message{Op: OpReply, HType: 1, HLen: 6, CHAddr: []byte{1, 2, 3, 4, 5, 6}}
	m.Options.Set(OptMessageType, []byte{byte(Ack)})
	m.Options.Set(OptClasslessRoutes, EncodeClasslessRoutes([]Route{{Dst: netip.MustParsePrefix("10.0.0.0/8"), Router: netip.MustParseAddr("192.0.2.1")}}))
	f.Add(m.Encode())
	m.Options.Set(OptOverload, []byte{3})
	f.Add(m.Encode())
	f.Add(make([]byte, 240))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		_ = m.Type().String()
		_ = m.ServerID()
		again, err := Decode(m.Encode())
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if len(again.Options) != len(m.Options) {
			t.Fatalf("options %d -> %d", len(m.Options), len(again.Options))
		}
		for i := range m.Options {
			if again.Options[i].Code != m.Options[i].Code || !bytes.Equal(again.Options[i].Data, m.Options[i].Data) {
				t.Fatalf("option %d changed", m.Options[i].Code)
			}
		}
	})
}

// FuzzOptionValues: the option value decoders never panic, and classless
// routes that parse re-encode to the same bytes.
func FuzzOptionValues(f *testing.F) {
	f.Add([]byte{24, 192, 168, 1, 10, 0, 0, 1, 0, 10, 0, 0, 1})
	f.Add([]byte{3, 'e', 'n', 'g', 0, 1, 'x', 0xc0, 0})
	f.Add([]byte{255, 255, 255, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if rs, err := ParseClasslessRoutes(b); err == nil {
			if enc := EncodeClasslessRoutes(rs); !bytes.Equal(enc, b) {
				t.Fatalf("classless routes %x re-encode to %x", b, enc)
			}
		}
		_, _ = ParseStaticRoutes(b)
		_, _ = ParseDomainSearch(b)
		_, _ = MaskBits(b)
		o := Options{{Code: 1, Data: b}}
		_, _ = o.Addrs(1)
		_, _ = o.Duration(1)
	})
}

// FuzzParseUDP4: arbitrary packets from the packet socket never panic the
// IPv4/UDP parser, and a payload it returns lies inside the packet.
func FuzzParseUDP4(f *testing.F) {
	f.Add(BuildUDP4(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("255.255.255.255"), 67, 68, []byte("x")), true)
	f.Add([]byte{0x4f, 0, 0, 20}, false)
	f.Fuzz(func(t *testing.T, b []byte, verify bool) {
		u, err := ParseUDP4(b, verify)
		if err != nil {
			return
		}
		if len(u.Payload) > len(b) {
			t.Fatal("payload longer than the packet")
		}
	})
}
