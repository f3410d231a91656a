package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (UPDATE_GOLDEN=1 creates it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-golden +got):\n%s", path, diff)
	}
}

func TestRulesetGolden(t *testing.T) {
	golden(t, "ruleset.nft", Ruleset())
	golden(t, "ruleset-dynamic.nft", inetTable.text(exampleDyn...))
}

// exampleDyn are the dynamic sets of a dual-stack node with /24 and /64
// pod subnets, snat and masqAll, in the order the example pods create them.
var exampleDyn = []*setDef{
	dynSet(dynHpsnat4, 24), dynSet(dynHpsnat4, 8), dynSet(dynHpsnat6, 64), dynSet(dynHpsnat4, 0),
	dynSet(dynMasqskip4, 24), dynSet(dynMasqskip6, 64),
}

// The ruleset quoted in doc.go must be the one the code builds.
func TestRulesetInDoc(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var doc []string
	in := false
	for _, l := range strings.Split(string(src), "\n") {
		switch {
		case strings.HasPrefix(l, "//\ttable "):
			in = true
		case in && !strings.HasPrefix(l, "//\t"):
			in = false
		}
		if in {
			doc = append(doc, strings.TrimPrefix(l, "//\t"))
		}
	}
	var code []string
	for _, l := range strings.Split(Ruleset(), "\n") {
		if strings.TrimSpace(l) != "" {
			code = append(code, l)
		}
	}
	if diff := cmp.Diff(code, doc); diff != "" {
		t.Errorf("doc.go ruleset is out of date (-code +doc):\n%s", diff)
	}
}

// elemCase is one per-attachment request and the elements it yields.
type elemCase struct {
	name  string
	table *tableDef
	elems func() ([]elem, error)
}

var elemCases = []elemCase{
	{
		name: "portmap dual stack with snat", table: inetTable,
		elems: func() ([]elem, error) {
			e := PortMapEntry{Network: "kube", ContainerID: "c0ffee", IfName: "eth0",
				IPv4: mustPrefix("10.22.0.5/24"), IPv6: mustPrefix("fd22::5/64"), SNAT: true,
				Mappings: []PortMapping{
					{Protocol: TCP, HostPort: 8080, ContainerPort: 80},
					{Protocol: UDP, HostPort: 53, ContainerPort: 5353, HostIP: mustAddr("192.0.2.1")},
					{Protocol: SCTP, HostPort: 9999, ContainerPort: 99, HostIP: mustAddr("2001:db8::1")},
					{Protocol: TCP, HostPort: 8443, ContainerPort: 443, HostIP: mustAddr("0.0.0.0")},
					{Protocol: TCP, HostPort: 8081, ContainerPort: 80}, // shares masquerade elements
				}}
			es, _, err := portMapElems(e, e.owner().Tag(), false)
			return es, err
		},
	},
	{
		name: "portmap masqAll IPv4", table: inetTable,
		elems: func() ([]elem, error) {
			e := PortMapEntry{Network: "kube", ContainerID: "c1", IfName: "eth0",
				IPv4: mustPrefix("10.22.0.6/24"), SNAT: true, MasqAll: true,
				Mappings: []PortMapping{{Protocol: TCP, HostPort: 80, ContainerPort: 8080}}}
			es, _, err := portMapElems(e, e.owner().Tag(), false)
			return es, err
		},
	},
	{
		name: "portmap IPv6 without snat", table: inetTable,
		elems: func() ([]elem, error) {
			e := PortMapEntry{Network: "kube", ContainerID: "c2", IfName: "net1",
				IPv6:     mustPrefix("fd22::7/64"),
				Mappings: []PortMapping{{Protocol: UDP, HostPort: 5000, ContainerPort: 5000}}}
			es, _, err := portMapElems(e, e.owner().Tag(), false)
			return es, err
		},
	},
	{
		name: "masquerade dual stack", table: inetTable,
		elems: func() ([]elem, error) {
			return masqElems(ownTag, []MasqEntry{
				{Network: "kube", ContainerID: "c0ffee", IfName: "eth0", IP: mustAddr("10.22.0.5"), Subnet: mustPrefix("10.22.0.0/24")},
				{Network: "kube", ContainerID: "c0ffee", IfName: "eth0", IP: mustAddr("fd22::5"), Subnet: mustPrefix("fd22::5/64")},
			})
		},
	},
	{
		name: "spoof check", table: bridgeTable,
		elems: func() ([]elem, error) {
			mac, _ := net.ParseMAC("02:42:ac:11:00:02")
			return spoofElems(Owner{"kube", "c0ffee", "eth0"}.Tag(), SpoofEntry{HostIf: "veth1a2b3c4d", MAC: mac})
		},
	},
}

func TestElementsGolden(t *testing.T) {
	var b strings.Builder
	for _, tc := range elemCases {
		es, err := tc.elems()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		fmt.Fprintf(&b, "# %s\n", tc.name)
		for _, e := range es {
			b.WriteString(e.command(tc.table) + "\n")
		}
	}
	golden(t, "elements.nft", b.String())
}

// Elements survive encoding as the kernel would send them back.
func TestElemCodecRoundTrip(t *testing.T) {
	for _, tc := range elemCases {
		t.Run(tc.name, func(t *testing.T) {
			es, err := tc.elems()
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				m := elemMsg(tc.table.id(), e.set, unix.NFT_MSG_NEWSETELEM, 0, []elem{e}, true)
				got, err := decodeElems(e.set, m.Data)
				if err != nil {
					t.Fatalf("decode %s: %v", e, err)
				}
				if len(got) != 1 || !got[0].same(e) || got[0].Tag != e.Tag {
					t.Errorf("round trip of %s gave %v", e, got)
				}
			}
		})
	}
}

func TestPortMapElemsErrors(t *testing.T) {
	base := PortMapEntry{Network: "n", ContainerID: "c", IfName: "eth0", IPv4: mustPrefix("10.0.0.2/24")}
	tests := []struct {
		name string
		edit func(e *PortMapEntry)
		want string
	}{
		{"no pod address", func(e *PortMapEntry) { e.IPv4 = mustPrefix("0.0.0.0/0"); e.IPv4 = e.IPv6 }, "no IP address"},
		{"v6 host address, v4 pod", func(e *PortMapEntry) {
			e.Mappings = []PortMapping{{Protocol: TCP, HostPort: 1, ContainerPort: 1, HostIP: mustAddr("2001:db8::1")}}
		}, "host address 2001:db8::1 but the pod has no IPv6 address"},
		{"port zero", func(e *PortMapEntry) { e.Mappings = []PortMapping{{Protocol: TCP, ContainerPort: 1}} }, "port 0"},
		{"bad protocol", func(e *PortMapEntry) { e.Mappings = []PortMapping{{Protocol: 1, HostPort: 1, ContainerPort: 1}} }, "protocol 1 not supported"},
		{"duplicate", func(e *PortMapEntry) {
			e.Mappings = []PortMapping{{Protocol: TCP, HostPort: 80, ContainerPort: 1}, {Protocol: TCP, HostPort: 80, ContainerPort: 2}}
		}, "port mapping 1: 80/tcp duplicates an earlier mapping"},
		{"wrong family", func(e *PortMapEntry) { e.IPv6 = mustPrefix("10.0.0.3/24") }, "wrong family"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base
			tt.edit(&e)
			_, _, err := portMapElems(e, "x", false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestTag(t *testing.T) {
	long := strings.Repeat("a", 65)
	tests := []struct {
		name  string
		owner Owner
		want  string
	}{
		{"plain", Owner{"kube", "0123abcd", "eth0"}, "net=kube id=0123abcd if=eth0"},
		{"64 bytes kept", Owner{"n", strings.Repeat("f", 64), "eth0"}, "net=n id=" + strings.Repeat("f", 64) + " if=eth0"},
		{"long hashed", Owner{"n", long, "eth0"}, "net=n id=" + tagValue(long) + " if=eth0"},
		{"quote hashed", Owner{"n", "c", `e"th`}, "net=n id=c if=" + tagValue(`e"th`)},
		{"space hashed", Owner{"n", "c", "a b"}, "net=n id=c if=" + tagValue("a b")},
		{"empty hashed", Owner{"", "c", "eth0"}, "net=" + tagValue("") + " id=c if=eth0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.owner.Tag()
			if got != tt.want {
				t.Errorf("Tag() = %q, want %q", got, tt.want)
			}
			if len(got) > 254 {
				t.Errorf("tag of %d bytes does not fit a comment", len(got))
			}
			p, ok := parseTag(got)
			if !ok {
				t.Fatalf("parseTag(%q) failed", got)
			}
			want := parsedTag{tagValue(tt.owner.Network), tagValue(tt.owner.ContainerID), tagValue(tt.owner.IfName)}
			if p != want {
				t.Errorf("parseTag = %+v, want %+v", p, want)
			}
		})
	}
	if v := tagValue(long); !regexp.MustCompile(`^#[0-9a-f]{32}$`).MatchString(v) {
		t.Errorf("hashed value %q", v)
	}
	for _, bad := range []string{"", "net=a id=b", "net=a id=b if=", "id=b net=a if=c", "net=a id=b if=c d=e", "x"} {
		if _, ok := parseTag(bad); ok {
			t.Errorf("parseTag(%q) accepted", bad)
		}
	}
}

// The creation transaction: our table message (with its comment) first,
// exclusive; a repair keeps the table and replaces every chain's rules.
func TestStructureMessages(t *testing.T) {
	for _, repair := range []bool{false, true} {
		msgs, err := structure(inetTable, repair, nil)
		if err != nil {
			t.Fatal(err)
		}
		count := map[int]int{}
		for _, m := range msgs {
			count[int(m.Header.Type)&0xff]++
		}
		rules := 0
		for _, ch := range inetTable.chains {
			rules += len(ch.rules)
		}
		want := map[int]int{unix.NFT_MSG_NEWTABLE: 1, unix.NFT_MSG_NEWSET: len(inetTable.sets),
			unix.NFT_MSG_NEWCHAIN: len(inetTable.chains), unix.NFT_MSG_NEWRULE: rules}
		if repair {
			want[unix.NFT_MSG_DELRULE] = len(inetTable.chains)
		}
		if diff := cmp.Diff(want, count); diff != "" {
			t.Errorf("repair=%v: message counts (-want +got):\n%s", repair, diff)
		}
		excl := msgs[0].Header.Flags&netlink.Excl != 0
		if int(msgs[0].Header.Type)&0xff != unix.NFT_MSG_NEWTABLE || excl == repair {
			t.Errorf("repair=%v: first message %v flags %v", repair, msgs[0].Header.Type, msgs[0].Header.Flags)
		}
		if !bytes.Contains(msgs[0].Data, []byte("linen schema=1\x00")) {
			t.Errorf("table message has no schema comment")
		}
	}
}

func TestUdataComment(t *testing.T) {
	tests := []struct {
		in   []byte
		want string
	}{
		{append([]byte{0, 4}, "abc\x00"...), "abc"},
		{append([]byte{1, 4, 0, 0, 0, 2, 0, 3}, "ab\x00"...), "ab"},
		{[]byte{0, 9, 'a'}, ""},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := udataComment(tt.in); got != tt.want {
			t.Errorf("udataComment(%x) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAckErrno(t *testing.T) {
	// An error for a request, capped, with an extended ack message.
	code := -int32(unix.EEXIST)
	data := binary.NativeEndian.AppendUint32(nil, uint32(code))
	data = append(data, make([]byte, unix.SizeofNlMsghdr)...)
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NLMSGERR_ATTR_MSG, "Element exists")
	b, _ := ae.Encode()
	data = append(data, b...)
	m := syscallMsg(unix.NLMSG_ERROR, unix.NLM_F_CAPPED|unix.NLM_F_ACK_TLVS, data)
	errno, msg := ackErrno(m)
	if errno != unix.EEXIST || msg != "Element exists" {
		t.Errorf("ackErrno = %v %q", errno, msg)
	}
	ok := syscallMsg(unix.NLMSG_ERROR, 0, make([]byte, 4+unix.SizeofNlMsghdr))
	if errno, _ := ackErrno(ok); errno != 0 {
		t.Errorf("ack decoded as %v", errno)
	}
}

func FuzzDecodeElems(f *testing.F) {
	for _, tc := range elemCases {
		es, _ := tc.elems()
		for _, e := range es {
			f.Add(elemMsg(tc.table.id(), e.set, unix.NFT_MSG_NEWSETELEM, 0, []elem{e}, true).Data)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, s := range inetTable.sets {
			es, _ := decodeElems(s, b)
			for _, e := range es {
				_ = e.String() // renders whatever the bytes are, never panics
			}
		}
	})
}

func FuzzTag(f *testing.F) {
	f.Add("kube", "c0ffee", "eth0")
	f.Add("", "x y", `"`)
	f.Fuzz(func(t *testing.T, n, c, i string) {
		tag := Owner{n, c, i}.Tag()
		if len(tag) > 254 {
			t.Fatalf("tag too long: %d", len(tag))
		}
		p, ok := parseTag(tag)
		if !ok || p.net != tagValue(n) || p.id != tagValue(c) || p.ifname != tagValue(i) {
			t.Fatalf("parseTag(%q) = %+v, %v", tag, p, ok)
		}
	})
}

// TestConntrackMatch: an entry is deleted only when its original tuple
// goes to the protocol, port and (when given) address asked for, so that a
// kernel that ignores CTA_FILTER and dumps the whole table loses nothing
// else.
func TestConntrackMatch(t *testing.T) {
	tuple := func(proto Protocol, dport uint16, daddr string) []byte {
		ae := netlink.NewAttributeEncoder()
		ae.ByteOrder = binary.BigEndian
		a := netip.MustParseAddr(daddr)
		ae.Nested(ctaTupleIP, func(ae *netlink.AttributeEncoder) error {
			if a.Is4() {
				ae.Bytes(ctaIPv4Dst, a.AsSlice())
			} else {
				ae.Bytes(ctaIPv6Dst, a.AsSlice())
			}
			return nil
		})
		ae.Nested(ctaTupleProto, func(ae *netlink.AttributeEncoder) error {
			ae.Uint8(ctaProtoNum, uint8(proto))
			ae.Bytes(ctaProtoDport, port(dport))
			return nil
		})
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	udp := Protocol(unix.IPPROTO_UDP)
	tcp := Protocol(unix.IPPROTO_TCP)
	any4 := ctMatch{family: unix.AF_INET, proto: udp, dport: 5353}
	at := ctMatch{family: unix.AF_INET, proto: udp, dport: 5353, daddr: netip.MustParseAddr("192.0.2.1")}
	at6 := ctMatch{family: unix.AF_INET6, proto: udp, dport: 5353, daddr: netip.MustParseAddr("2001:db8::1")}
	cases := []struct {
		m    ctMatch
		orig []byte
		want bool
	}{
		{any4, tuple(udp, 5353, "198.51.100.7"), true},
		{any4, tuple(udp, 5354, "198.51.100.7"), false},
		{any4, tuple(tcp, 5353, "198.51.100.7"), false},
		{at, tuple(udp, 5353, "192.0.2.1"), true},
		{at, tuple(udp, 5353, "192.0.2.2"), false},
		{at6, tuple(udp, 5353, "2001:db8::1"), true},
		{at6, tuple(udp, 5353, "2001:db8::2"), false},
		{any4, nil, false},
		{any4, []byte{1, 2, 3}, false},
	}
	for i, tc := range cases {
		if got := tc.m.matches(tc.orig); got != tc.want {
			t.Errorf("case %d: matches = %v, want %v", i, got, tc.want)
		}
	}
}
