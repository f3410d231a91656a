package dhcp4

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 600) // split into three instances
	m := &Message{Op: OpRequest, HType: 1, HLen: 6, XID: 0xdeadbeef, Secs: 3, Flags: FlagBroadcast,
		CIAddr: netip.MustParseAddr("10.0.0.9"), YIAddr: unspecified, SIAddr: unspecified, GIAddr: netip.MustParseAddr("10.0.0.1"),
		CHAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	m.Options.Set(OptMessageType, []byte{byte(Discover)})
	m.Options.Set(OptHostName, []byte("web-0"))
	m.Options.Set(224, long)
	b := m.Encode()
	if len(b) < MinLen {
		t.Fatalf("encoded length %d < %d", len(b), MinLen)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if got.Type() != Discover || got.Type().String() != "DHCPDISCOVER" {
		t.Errorf("type %v", got.Type())
	}
}

func TestDecodeOverloadAndErrors(t *testing.T) {
	m := &Message{Op: OpReply, HType: 1, HLen: 6, CHAddr: net.HardwareAddr{1, 2, 3, 4, 5, 6}}
	m.Options.Set(OptMessageType, []byte{byte(Ack)})
	m.Options.Set(OptOverload, []byte{3})
	b := m.Encode()
	// file field carries the router, sname the subnet mask.
	copy(b[108:], []byte{OptRouter, 4, 10, 0, 0, 1, OptEnd})
	copy(b[44:], []byte{OptSubnetMask, 4, 255, 255, 255, 0, OptEnd})
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := got.Options.Addrs(OptRouter); len(r) != 1 || r[0].String() != "10.0.0.1" {
		t.Errorf("router from file field: %v", r)
	}
	if bits, err := MaskBits(got.Options.Get(OptSubnetMask)); err != nil || bits != 24 {
		t.Errorf("mask from sname field: %d %v", bits, err)
	}

	bad := m.Encode()
	copy(bad[240:], []byte{OptHostName, 200, 'a'})
	for name, in := range map[string][]byte{
		"short":     b[:100],
		"no cookie": append(append([]byte{}, b[:236]...), 1, 2, 3, 4),
		"overrun":   bad[:246],
		"long hlen": func() []byte { x := append([]byte{}, b...); x[2] = 17; return x }(),
	} {
		if _, err := Decode(in); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestClasslessRoutes(t *testing.T) {
	rs := []Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Router: netip.MustParseAddr("10.0.0.1")},
		{Dst: netip.MustParsePrefix("192.168.50.0/24"), Router: netip.MustParseAddr("10.0.0.2")},
		{Dst: netip.MustParsePrefix("10.128.0.0/9"), Router: netip.MustParseAddr("0.0.0.0")},
		{Dst: netip.MustParsePrefix("203.0.113.7/32"), Router: netip.MustParseAddr("10.0.0.3")},
	}
	b := EncodeClasslessRoutes(rs)
	// RFC 3442's examples: 0 -> 1 octet, /24 -> 4, /9 -> 3, /32 -> 5.
	if want := (1 + 4) + (4 + 4) + (3 + 4) + (5 + 4); len(b) != want {
		t.Errorf("encoded length %d, want %d", len(b), want)
	}
	got, err := ParseClasslessRoutes(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rs, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Error(diff)
	}
	for name, in := range map[string][]byte{
		"bits > 32":      {33, 1, 2, 3, 4, 5, 10, 0, 0, 1},
		"truncated":      {24, 192, 168},
		"host bits set":  {8, 10, 10, 0, 0, 1, 0},
		"router cut off": {0, 10, 0, 0},
	} {
		if _, err := ParseClasslessRoutes(in); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestStaticRoutesAndMask(t *testing.T) {
	got, err := ParseStaticRoutes([]byte{192, 168, 5, 0, 10, 0, 0, 1, 172, 16, 0, 0, 10, 0, 0, 2})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Dst.String() != "192.168.5.0/24" || got[1].Dst.String() != "172.16.0.0/16" {
		t.Errorf("classful destinations %v", got)
	}
	if _, err := ParseStaticRoutes([]byte{0, 0, 0, 0, 10, 0, 0, 1}); err == nil {
		t.Error("default destination accepted in option 33")
	}
	if _, err := MaskBits([]byte{255, 0, 255, 0}); err == nil {
		t.Error("non-contiguous mask accepted")
	}
	if n, _ := MaskBits([]byte{255, 255, 255, 255}); n != 32 {
		t.Errorf("/32 mask = %d", n)
	}
}

func TestDomainSearch(t *testing.T) {
	// RFC 3397's example: eng.apple.com and marketing.apple.com, the
	// second compressed.
	b := []byte{3, 'e', 'n', 'g', 5, 'a', 'p', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0,
		9, 'm', 'a', 'r', 'k', 'e', 't', 'i', 'n', 'g', 0xc0, 4}
	got, err := ParseDomainSearch(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"eng.apple.com", "marketing.apple.com"}, got); diff != "" {
		t.Error(diff)
	}
	enc, _ := EncodeDomainSearch([]string{"a.example", "b.example."})
	if got, err := ParseDomainSearch(enc); err != nil || strings.Join(got, ",") != "a.example,b.example" {
		t.Errorf("round trip %v %v", got, err)
	}
	for name, in := range map[string][]byte{
		"forward pointer": {0xc0, 5, 0},
		"self pointer":    {1, 'a', 0xc0, 2},
		"truncated":       {5, 'a'},
		"no terminator":   {1, 'a'},
	} {
		if _, err := ParseDomainSearch(in); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestFrameChecksums(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.1")
	pkt := BuildUDP4(src, dst, ClientPort, ServerPort, []byte("hello, server"))
	u, err := ParseUDP4(pkt, true)
	if err != nil {
		t.Fatal(err)
	}
	if u.Src != src || u.Dst != dst || u.SrcPort != 68 || u.DstPort != 67 || string(u.Payload) != "hello, server" {
		t.Errorf("parsed %+v", u)
	}
	bad := append([]byte{}, pkt...)
	bad[len(bad)-1] ^= 1
	if _, err := ParseUDP4(bad, true); !errors.Is(err, ErrChecksum) {
		t.Errorf("corrupt payload: %v", err)
	}
	if _, err := ParseUDP4(bad, false); err != nil {
		t.Errorf("corrupt payload with checksum not ready: %v", err)
	}
	bad = append([]byte{}, pkt...)
	bad[8]-- // TTL
	if _, err := ParseUDP4(bad, true); !errors.Is(err, ErrIPChecksum) {
		t.Errorf("corrupt header: %v", err)
	}
	frag := BuildUDP4(src, dst, 68, 67, nil)
	frag[6] = 0x20 // MF
	if _, err := ParseUDP4(frag, false); !errors.Is(err, ErrNotUDP4) {
		t.Errorf("fragment: %v", err)
	}
}

func TestLookupAndEncodeValue(t *testing.T) {
	for in, want := range map[string]uint8{"host-name": 12, "Classless-Static-Routes": 121, "121": 121, "routers": 3, "ip-address": 50, "224": 224} {
		d, ok := Lookup(in)
		if !ok || d.Code != want {
			t.Errorf("Lookup(%q) = %v %v, want %d", in, d, ok, want)
		}
	}
	for _, bad := range []string{"", "0", "255", "256", "no-such-option"} {
		if _, ok := Lookup(bad); ok {
			t.Errorf("Lookup(%q) succeeded", bad)
		}
	}
	cases := []struct {
		k    Kind
		in   string
		want []byte
	}{
		{KindString, "web-0", []byte("web-0")},
		{KindAddrs, "10.0.0.1, 10.0.0.2", []byte{10, 0, 0, 1, 10, 0, 0, 2}},
		{KindUint16, "1500", []byte{5, 220}},
		{KindUint32, "3600", []byte{0, 0, 14, 16}},
		{KindBool, "true", []byte{1}},
		{KindBytes, "0x0102ff", []byte{1, 2, 255}},
		{KindBytes, "01:02:ff", []byte{1, 2, 255}},
		{KindBytes, "plain", []byte("plain")},
	}
	for _, c := range cases {
		got, err := EncodeValue(c.k, c.in)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("EncodeValue(%v, %q) = %v %v, want %v", c.k, c.in, got, err, c.want)
		}
	}
	for _, c := range []struct {
		k  Kind
		in string
	}{{KindAddr, "::1"}, {KindUint8, "256"}, {KindBool, "maybe"}, {KindString, ""}, {KindBytes, "0xzz"}} {
		if _, err := EncodeValue(c.k, c.in); err == nil {
			t.Errorf("EncodeValue(%v, %q) succeeded", c.k, c.in)
		}
	}
}

// fakeNet is an in-memory link between a client and a scripted server.
type fakeNet struct {
	mu      sync.Mutex
	mac     net.HardwareAddr
	in      chan Packet
	serve   func(m *Message, dstMAC net.HardwareAddr) []*Message
	sent    []*Message
	dstMACs []net.HardwareAddr
}

var serverMAC = net.HardwareAddr{2, 0, 0, 0, 0, 0xfe}

func (f *fakeNet) HardwareAddr() net.HardwareAddr { return f.mac }

func (f *fakeNet) Send(pkt []byte, dst net.HardwareAddr) error {
	u, err := ParseUDP4(pkt, true)
	if err != nil {
		return err
	}
	m, err := Decode(u.Payload)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.sent = append(f.sent, m)
	f.dstMACs = append(f.dstMACs, dst)
	f.mu.Unlock()
	for _, r := range f.serve(m, dst) {
		f.in <- Packet{Data: BuildUDP4(netip.MustParseAddr("10.9.0.1"), broadcastIP, ServerPort, ClientPort, r.Encode()), From: serverMAC, ChecksumReady: true}
	}
	return nil
}

func (f *fakeNet) Recv(buf []byte, deadline time.Time) (Packet, error) {
	select {
	case p := <-f.in:
		return p, nil
	case <-time.After(time.Until(deadline)):
		return Packet{}, os.ErrDeadlineExceeded
	}
}

func reply(req *Message, t MessageType, yi string, opts ...Option) *Message {
	r := &Message{Op: OpReply, HType: 1, HLen: 6, XID: req.XID, CHAddr: req.CHAddr,
		CIAddr: unspecified, YIAddr: netip.MustParseAddr(yi), SIAddr: unspecified, GIAddr: unspecified}
	r.Options.Set(OptMessageType, []byte{byte(t)})
	r.Options.Set(OptServerID, []byte{10, 9, 0, 1})
	for _, o := range opts {
		r.Options.Set(o.Code, o.Data)
	}
	return r
}

// The client follows the protocol: a NAK restarts the exchange, replies
// for other transactions or clients are ignored, lease times come from
// the ACK, renewals go unicast to the server's MAC with ciaddr set, and a
// release names the server.
func TestClientAgainstScriptedServer(t *testing.T) {
	naks := 1
	f := &fakeNet{mac: net.HardwareAddr{2, 0, 0, 0, 0, 1}, in: make(chan Packet, 16)}
	f.serve = func(m *Message, _ net.HardwareAddr) []*Message {
		other := reply(m, Offer, "10.9.0.99")
		other.XID++ // another transaction: must be ignored
		switch m.Type() {
		case Discover:
			return []*Message{other, reply(m, Offer, "10.9.0.50")}
		case Request:
			if naks > 0 {
				naks--
				return []*Message{reply(m, Nak, "0.0.0.0", Option{OptMessage, []byte("wrong network")})}
			}
			ip := "10.9.0.50"
			return []*Message{reply(m, Ack, ip,
				Option{OptLeaseTime, []byte{0, 0, 0, 120}}, Option{OptRenewalTime, []byte{0, 0, 0, 10}}, Option{OptRebindingTime, []byte{0, 0, 0, 15}})}
		}
		return nil
	}
	c := &Client{T: f, ClientID: []byte{0, 'i', 'd'}, Params: []uint8{1, 3, 121}, Extra: Options{{OptHostName, []byte("pod")}}, FirstResend: 50 * time.Millisecond}
	ctx := context.Background()
	l, err := c.Acquire(ctx, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if l.Address.String() != "10.9.0.50" || l.Duration != 120*time.Second || l.T1 != 10*time.Second || l.T2 != 15*time.Second {
		t.Errorf("lease %+v", l)
	}
	if !bytes.Equal(l.ServerMAC, serverMAC) || l.Server.String() != "10.9.0.1" {
		t.Errorf("server %s %s", l.Server, l.ServerMAC)
	}
	// DISCOVER, REQUEST (NAK), DISCOVER, REQUEST (ACK).
	var types []string
	for _, m := range f.sent {
		types = append(types, m.Type().String())
	}
	if diff := cmp.Diff([]string{"DHCPDISCOVER", "DHCPREQUEST", "DHCPDISCOVER", "DHCPREQUEST"}, types); diff != "" {
		t.Errorf("messages sent:\n%s", diff)
	}
	req := f.sent[3]
	if a, _ := req.Options.Addr(OptRequestedIP); a.String() != "10.9.0.50" || req.ServerID().String() != "10.9.0.1" {
		t.Errorf("selecting REQUEST options %v", req.Options)
	}
	if string(req.Options.Get(OptHostName)) != "pod" || !bytes.Equal(req.Options.Get(OptClientID), []byte{0, 'i', 'd'}) {
		t.Errorf("REQUEST lacks host name or client id: %v", req.Options)
	}

	n, err := c.Renew(ctx, l, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	renew := f.sent[len(f.sent)-1]
	if renew.CIAddr != l.Address || renew.Options.Has(OptRequestedIP) || renew.Options.Has(OptServerID) || !bytes.Equal(f.dstMACs[len(f.dstMACs)-1], serverMAC) {
		t.Errorf("renewal REQUEST: ciaddr %s options %v to %s", renew.CIAddr, renew.Options, f.dstMACs[len(f.dstMACs)-1])
	}
	if !n.Start.After(l.Start) {
		t.Error("renewal did not move the lease start")
	}
	if err := c.Release(n); err != nil {
		t.Fatal(err)
	}
	rel := f.sent[len(f.sent)-1]
	if rel.Type() != Release || rel.CIAddr != l.Address || rel.ServerID() != l.Server {
		t.Errorf("release %v ciaddr %s", rel.Options, rel.CIAddr)
	}
}

func TestClientTimesOutAndNaksOnRenew(t *testing.T) {
	f := &fakeNet{mac: net.HardwareAddr{2, 0, 0, 0, 0, 2}, in: make(chan Packet, 4)}
	f.serve = func(*Message, net.HardwareAddr) []*Message { return nil }
	c := &Client{T: f, FirstResend: 40 * time.Millisecond}
	start := time.Now()
	_, err := c.Acquire(context.Background(), time.Now().Add(300*time.Millisecond))
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("silent network: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("deadline not kept: %s", d)
	}
	if len(f.sent) < 2 {
		t.Errorf("no retransmission: %d messages", len(f.sent))
	}
	f.serve = func(m *Message, _ net.HardwareAddr) []*Message { return []*Message{reply(m, Nak, "0.0.0.0")} }
	l := &Lease{Address: netip.MustParseAddr("10.9.0.7"), Server: netip.MustParseAddr("10.9.0.1"), Duration: time.Minute}
	var nak *NakError
	if _, err := c.Rebind(context.Background(), l, time.Now().Add(time.Second)); !errors.As(err, &nak) {
		t.Errorf("NAK on rebind: %v", err)
	}
}
