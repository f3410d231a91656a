package nft

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The static part of linen's ruleset, as data. doc.go shows it in nft
// syntax; TestRulesetGolden keeps the two in step, and TestRulesetKernel
// checks that the kernel prints our expressions back as exactly that text.

// TableName is the name of linen's tables (one per family it uses).
const TableName = "linen"

// Schema is the layout version written into each table's comment. A binary
// finding a table with another schema refuses to touch it (a later version
// migrates older layouts).
const Schema = 1

var nativeEndian = binary.NativeEndian

// field is one component of a set key or map value.
type field struct {
	name string // nft datatype name
	size int    // bytes, before padding to a 4-byte register
	lib  nftables.SetDatatype
}

var (
	fIPv4   = field{"ipv4_addr", 4, nftables.TypeIPAddr}
	fIPv6   = field{"ipv6_addr", 16, nftables.TypeIP6Addr}
	fProto  = field{"inet_proto", 1, nftables.TypeInetProto}
	fPort   = field{"inet_service", 2, nftables.TypeInetService}
	fIfname = field{"ifname", 16, nftables.TypeIFName}
	fEther  = field{"ether_addr", 6, nftables.TypeEtherAddr}
)

func padded(n int) int { return (n + 3) &^ 3 }

func fieldsLen(fs []field) int {
	if len(fs) == 1 {
		return fs[0].size
	}
	n := 0
	for _, f := range fs {
		n += padded(f.size)
	}
	return n
}

// setDef is one named set or map.
type setDef struct {
	name string
	key  []field
	data []field // nil for a set
	// exclusive: a key belongs to one attachment at a time, and finding
	// it owned by another is a conflict to report (host ports). For other
	// sets a key owned by another attachment is stale (its pod IP or
	// interface name was reused after a missed DEL) and is replaced.
	exclusive bool

	// Dynamic sets (one per prefix length in use) come with one rule in
	// chain, added with the set, first in the chain when prepend.
	chain   string
	prepend bool
	rule    ruleDef
}

func (s *setDef) isMap() bool { return s.data != nil }

func (s *setDef) dynamic() bool { return s.chain != "" }

func (s *setDef) typeText() string {
	names := func(fs []field) string {
		var p []string
		for _, f := range fs {
			p = append(p, f.name)
		}
		return strings.Join(p, " . ")
	}
	if s.isMap() {
		return names(s.key) + " : " + names(s.data)
	}
	return names(s.key)
}

func concatType(fs []field) nftables.SetDatatype {
	if len(fs) == 1 {
		return fs[0].lib
	}
	var ts []nftables.SetDatatype
	for _, f := range fs {
		ts = append(ts, f.lib)
	}
	return nftables.MustConcatSetType(ts...)
}

// lib describes s to google/nftables. id must be unique within the
// transaction (and non-zero, or the library takes one from an unguarded
// global counter, a data race between concurrent Conns).
func (s *setDef) lib(t *nftables.Table, id uint32) *nftables.Set {
	set := &nftables.Set{
		Table:         t,
		ID:            id,
		Name:          s.name,
		KeyType:       concatType(s.key),
		Concatenation: len(s.key) > 1,
	}
	if len(s.key) == 1 && s.key[0].name == "ifname" {
		// Strings are in host byte order; nft needs to be told so to
		// print them.
		set.KeyByteOrder = binaryutil.NativeEndian
	}
	if s.isMap() {
		set.IsMap = true
		set.DataType = concatType(s.data)
	}
	return set
}

// ruleDef is one rule: its expressions and the text nft prints for them.
type ruleDef struct {
	text  string
	exprs func(set func(name string) *nftables.Set) []expr.Any
}

// chainDef is one chain; hook nil means a regular chain.
type chainDef struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	hookName string
	prio     int32
	prioText string
	rules    []ruleDef
}

// tableDef is one of linen's tables.
type tableDef struct {
	family     nftables.TableFamily
	familyName string
	sets       []*setDef
	chains     []*chainDef
}

func (t *tableDef) comment() string { return "linen schema=" + strconv.Itoa(Schema) }

func (t *tableDef) lib() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: t.family}
}

func (t *tableDef) set(name string) *setDef {
	for _, s := range t.sets {
		if s.name == name {
			return s
		}
	}
	panic("nft: no set " + name)
}

// objects is how many chains and sets the table holds (the kernel's "use"
// count of a complete table).
func (t *tableDef) objects() uint32 { return uint32(len(t.sets) + len(t.chains)) }

// Registers, as nft allocates them: NFT_REG_1/2 are 16 bytes wide,
// NFT_REG32_xx are 4 bytes; reg32(4) is the first word of NFT_REG_2.
const (
	regVerdict = 0
	reg1       = 1
	reg2       = 2
)

func reg32(i uint32) uint32 { return 8 + i }

func u32(v uint32) []byte { return nativeEndian.AppendUint32(nil, v) }

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}
}

func load(base expr.PayloadBase, off, n, reg uint32) *expr.Payload {
	return &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: base, Offset: off, Len: n}
}

func nh(off, n, reg uint32) *expr.Payload {
	return load(expr.PayloadBaseNetworkHeader, off, n, reg)
}

func thDport(reg uint32) *expr.Payload {
	return load(expr.PayloadBaseTransportHeader, 2, 2, reg)
}

func lookup(s *nftables.Set, invert bool) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID, Invert: invert}
}

func lookupMap(s *nftables.Set) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: s.Name, SetID: s.ID}
}

func dnat(family, portReg uint32) *expr.NAT {
	return &expr.NAT{Type: expr.NATTypeDestNAT, Family: family,
		RegAddrMin: reg1, RegAddrMax: reg1, RegProtoMin: portReg, RegProtoMax: portReg}
}

// ctDNAT matches connections whose destination was rewritten.
func ctDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: u32(0x20 /* IPS_DST_NAT */), Xor: u32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: u32(0)},
	}
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// inetTable holds masquerading and host ports, for IPv4 and IPv6. Its
// per-prefix-length sets (dynSet) are added when first needed.
var inetTable = &tableDef{
	family:     nftables.TableFamilyINet,
	familyName: "inet",
	sets: []*setDef{
		{name: "hp4", key: []field{fProto, fPort}, data: []field{fIPv4, fPort}, exclusive: true},
		{name: "hp4ip", key: []field{fIPv4, fProto, fPort}, data: []field{fIPv4, fPort}, exclusive: true},
		{name: "hp6", key: []field{fProto, fPort}, data: []field{fIPv6, fPort}, exclusive: true},
		{name: "hp6ip", key: []field{fIPv6, fProto, fPort}, data: []field{fIPv6, fPort}, exclusive: true},
		{name: "masq4", key: []field{fIPv4}},
		{name: "masq6", key: []field{fIPv6}},
	},
	chains: []*chainDef{
		{
			name: "prerouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPrerouting,
			hookName: "prerouting", prio: -100, prioText: "dstnat",
			rules: []ruleDef{jumpHostports},
		},
		{
			name: "output", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookOutput,
			hookName: "output", prio: -100, prioText: "-100",
			rules: []ruleDef{jumpHostports},
		},
		{
			name: "hostports",
			rules: []ruleDef{
				{
					text: "dnat ip to ip daddr . meta l4proto . th dport map @hp4ip",
					exprs: func(set func(string) *nftables.Set) []expr.Any {
						return cat(nfproto(unix.NFPROTO_IPV4), []expr.Any{
							nh(16, 4, reg1),
							&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32(1)},
							thDport(reg32(2)),
							lookupMap(set("hp4ip")),
							dnat(unix.NFPROTO_IPV4, reg32(1)),
						})
					},
				},
				{
					text: "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @hp4",
					exprs: func(set func(string) *nftables.Set) []expr.Any {
						return cat(nfproto(unix.NFPROTO_IPV4), []expr.Any{
							&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
							thDport(reg32(1)),
							lookupMap(set("hp4")),
							dnat(unix.NFPROTO_IPV4, reg32(1)),
						})
					},
				},
				{
					text: "dnat ip6 to ip6 daddr . meta l4proto . th dport map @hp6ip",
					exprs: func(set func(string) *nftables.Set) []expr.Any {
						return cat(nfproto(unix.NFPROTO_IPV6), []expr.Any{
							nh(24, 16, reg1),
							&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg2},
							thDport(reg32(5)),
							lookupMap(set("hp6ip")),
							dnat(unix.NFPROTO_IPV6, reg2),
						})
					},
				},
				{
					text: "meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @hp6",
					exprs: func(set func(string) *nftables.Set) []expr.Any {
						return cat(nfproto(unix.NFPROTO_IPV6), []expr.Any{
							&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
							thDport(reg32(1)),
							lookupMap(set("hp6")),
							dnat(unix.NFPROTO_IPV6, reg2),
						})
					},
				},
			},
		},
		{
			name: "postrouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting,
			hookName: "postrouting", prio: 100, prioText: "srcnat",
			rules: []ruleDef{
				{
					text: "ct status dnat meta nfproto ipv4 jump hpsnat4",
					exprs: func(func(string) *nftables.Set) []expr.Any {
						return cat(ctDNAT(), nfproto(unix.NFPROTO_IPV4), jump("hpsnat4"))
					},
				},
				{
					text: "ct status dnat meta nfproto ipv6 jump hpsnat6",
					exprs: func(func(string) *nftables.Set) []expr.Any {
						return cat(ctDNAT(), nfproto(unix.NFPROTO_IPV6), jump("hpsnat6"))
					},
				},
				{
					text: "ip saddr @masq4 ip daddr != 224.0.0.0/4 jump masq4",
					exprs: func(set func(string) *nftables.Set) []expr.Any {
						return cat(nfproto(unix.NFPROTO_IPV4), []expr.Any{
							nh(12, 4, reg1),
							lookup(set("masq4"), false),
							nh(16, 4, reg1),
							&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
								Mask: []byte{0xf0, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
							&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0xe0, 0, 0, 0}},
						}, jump("masq4"))
					},
				},
				{
					text: "ip6 saddr @masq6 ip6 daddr != ff00::/8 jump masq6",
					exprs: func(set func(string) *nftables.Set) []expr.Any {
						return cat(nfproto(unix.NFPROTO_IPV6), []expr.Any{
							nh(8, 16, reg1),
							lookup(set("masq6"), false),
							nh(24, 1, reg1),
							&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0xff}},
						}, jump("masq6"))
					},
				},
			},
		},
		// One rule per source prefix length: hpsnat4_24 holds (pod
		// subnet . pod . port) of hairpin connections, hpsnat4_8 the
		// loopback ones, hpsnat4_0 those of masqAll.
		{name: "hpsnat4"},
		{name: "hpsnat6"},
		// One rule per subnet prefix length skips destinations inside the
		// pod's subnet; everything else is masqueraded.
		{name: "masq4", rules: []ruleDef{masquerade}},
		{name: "masq6", rules: []ruleDef{masquerade}},
	},
}

var masquerade = ruleDef{
	text:  "masquerade",
	exprs: func(func(string) *nftables.Set) []expr.Any { return []expr.Any{&expr.Masq{}} },
}

func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}

// Dynamic sets: exact-match (hash) sets, one per prefix length in use,
// because a set of address ranges (pipapo) costs O(elements) per deleted
// element — measured ~1.7 ms per delete at 600 elements — while a hash set
// costs the same at any size. A prefix length is a masked lookup:
// `ip saddr & 255.255.255.0 . ip daddr . th dport @hpsnat4_24`.

const (
	dynHpsnat4 = iota
	dynHpsnat6
	dynMasqskip4
	dynMasqskip6
)

// dynSets caches the definitions built so far: a plugin process needs one
// or two of the 324 possible sets, so they are built on first use rather
// than at start-up (building all of them cost ~0.4 ms of every exec).
var dynSets struct {
	sync.Mutex
	m [4][129]*setDef
}

func dynBits(kind int) int {
	if kind == dynHpsnat6 || kind == dynMasqskip6 {
		return 128
	}
	return 32
}

// dynSet returns the set of the given kind for prefix length l.
func dynSet(kind, l int) *setDef {
	dynSets.Lock()
	defer dynSets.Unlock()
	if dynSets.m[kind][l] == nil {
		dynSets.m[kind][l] = newDynSet(kind, l)
	}
	return dynSets.m[kind][l]
}

func maskText(v6 bool, l int) (text string, mask []byte) {
	bits := 32
	if v6 {
		bits = 128
	}
	a, _ := netip.AddrFromSlice(make([]byte, bits/8))
	m := lastAddr(netip.PrefixFrom(a, 0)).AsSlice() // all ones
	for i := l; i < bits; i++ {
		m[i/8] &^= 0x80 >> (i % 8)
	}
	ma, _ := netip.AddrFromSlice(m)
	return ma.String(), m
}

func newDynSet(kind, l int) *setDef {
	v6 := kind == dynHpsnat6 || kind == dynMasqskip6
	addr, fam, ipt, saddr, daddr, alen := fIPv4, byte(unix.NFPROTO_IPV4), "ip", uint32(12), uint32(16), uint32(4)
	if v6 {
		addr, fam, ipt, saddr, daddr, alen = fIPv6, unix.NFPROTO_IPV6, "ip6", 8, 24, 16
	}
	full := (!v6 && l == 32) || (v6 && l == 128)
	mtext, mask := maskText(v6, l)
	masked := func(reg uint32) []expr.Any {
		if full {
			return nil
		}
		return []expr.Any{&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: alen, Mask: mask, Xor: make([]byte, alen)}}
	}
	and := ""
	if !full {
		and = " & " + mtext
	}
	regB, regC := reg32(1), reg32(2) // registers of the 2nd and 3rd field
	if v6 {
		regB, regC = reg2, 3
	}
	s := &setDef{key: []field{addr, addr}}
	switch kind {
	case dynHpsnat4, dynHpsnat6:
		s.name, s.chain = fmt.Sprintf("hpsnat4_%d", l), "hpsnat4"
		if v6 {
			s.name, s.chain = fmt.Sprintf("hpsnat6_%d", l), "hpsnat6"
		}
		s.key = append(s.key, fPort)
		s.rule = ruleDef{
			text: fmt.Sprintf("%s saddr%s . %s daddr . th dport @%s masquerade", ipt, and, ipt, s.name),
			exprs: func(set func(string) *nftables.Set) []expr.Any {
				return cat(nfproto(fam), []expr.Any{nh(saddr, alen, reg1)}, masked(reg1), []expr.Any{
					nh(daddr, alen, regB),
					thDport(regC),
					lookup(set(s.name), false),
					&expr.Masq{},
				})
			},
		}
	default:
		s.name, s.chain = fmt.Sprintf("masqskip4_%d", l), "masq4"
		if v6 {
			s.name, s.chain = fmt.Sprintf("masqskip6_%d", l), "masq6"
		}
		s.prepend = true
		s.rule = ruleDef{
			text: fmt.Sprintf("%s saddr . %s daddr%s @%s return", ipt, ipt, and, s.name),
			exprs: func(set func(string) *nftables.Set) []expr.Any {
				return cat(nfproto(fam), []expr.Any{nh(saddr, alen, reg1), nh(daddr, alen, regB)}, masked(regB), []expr.Any{
					lookup(set(s.name), false),
					&expr.Verdict{Kind: expr.VerdictReturn},
				})
			},
		}
	}
	return s
}

// set finds a static or dynamic set by name (nil if it is not ours).
func (t *tableDef) findSet(name string) *setDef {
	for _, s := range t.sets {
		if s.name == name {
			return s
		}
	}
	if t != inetTable {
		return nil
	}
	for kind, pfx := range [4]string{"hpsnat4_", "hpsnat6_", "masqskip4_", "masqskip6_"} {
		rest, ok := strings.CutPrefix(name, pfx)
		if !ok {
			continue
		}
		l, err := strconv.Atoi(rest)
		if err != nil || l < 0 || l > dynBits(kind) || strconv.Itoa(l) != rest {
			return nil
		}
		return dynSet(kind, l)
	}
	return nil
}

var jumpHostports = ruleDef{
	text: "fib daddr type local jump hostports",
	exprs: func(func(string) *nftables.Set) []expr.Any {
		return []expr.Any{
			&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: u32(unix.RTN_LOCAL)},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: "hostports"},
		}
	},
}

// bridgeTable holds the MAC spoof check of bridge ports.
var bridgeTable = &tableDef{
	family:     nftables.TableFamilyBridge,
	familyName: "bridge",
	sets: []*setDef{
		{name: "spoofifs", key: []field{fIfname}},
		{name: "spoofok", key: []field{fIfname, fEther}},
	},
	chains: []*chainDef{
		{
			name: "prerouting", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookPrerouting,
			hookName: "prerouting", prio: -300, prioText: "dstnat",
			rules: []ruleDef{
				{
					text: "iifname @spoofifs iifname . ether saddr != @spoofok drop",
					exprs: func(set func(string) *nftables.Set) []expr.Any {
						return []expr.Any{
							&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
							lookup(set("spoofifs"), false),
							&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
							load(expr.PayloadBaseLLHeader, 6, 6, reg2),
							lookup(set("spoofok"), true),
							&expr.Verdict{Kind: expr.VerdictDrop},
						}
					},
				},
			},
		},
	},
}

// text renders the table as `nft list table` prints it, with the dynamic
// sets dyn (as structure creates them).
func (t *tableDef) text(dyn ...*setDef) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n\tcomment %q\n", t.familyName, TableName, t.comment())
	var blocks []string
	for _, s := range append(append([]*setDef(nil), t.sets...), dyn...) {
		kind := "set"
		if s.isMap() {
			kind = "map"
		}
		blocks = append(blocks, fmt.Sprintf("\t%s %s {\n\t\ttype %s\n\t}\n", kind, s.name, s.typeText()))
	}
	for _, c := range t.chains {
		blk := fmt.Sprintf("\tchain %s {\n", c.name)
		if c.hook != nil {
			blk += fmt.Sprintf("\t\ttype %s hook %s priority %s; policy accept;\n", c.typ, c.hookName, c.prioText)
		}
		for _, r := range c.rulesWith(dyn) {
			blk += "\t\t" + r.text + "\n"
		}
		blocks = append(blocks, blk+"\t}\n")
	}
	b.WriteString(strings.Join(blocks, "\n"))
	b.WriteString("}\n")
	return b.String()
}

// rulesWith is the chain's rules when the dynamic sets dyn exist: their
// prepended rules (the last one added first), the static rules, then their
// appended rules.
func (c *chainDef) rulesWith(dyn []*setDef) []ruleDef {
	var pre, post []ruleDef
	for _, s := range dyn {
		if s.chain != c.name {
			continue
		}
		if s.prepend {
			pre = append([]ruleDef{s.rule}, pre...)
		} else {
			post = append(post, s.rule)
		}
	}
	return append(append(pre, c.rules...), post...)
}

// Ruleset is linen's static ruleset in nft syntax (both tables, no
// elements), for documentation and diagnostics.
func Ruleset() string { return inetTable.text() + bridgeTable.text() }

// Element values: encoding and rendering. Concatenations pad every field
// to a 4-byte register; a single-field key is not padded.

func putField(b []byte, f field, v []byte) []byte {
	b = append(b, v...)
	return append(b, make([]byte, padded(f.size)-f.size)...)
}

// key builds a key or value from per-field bytes.
func key(fs []field, vals ...[]byte) []byte {
	if len(fs) == 1 {
		return append([]byte(nil), vals[0]...)
	}
	var b []byte
	for i, f := range fs {
		b = putField(b, f, vals[i])
	}
	return b
}

func split(fs []field, b []byte) [][]byte {
	if len(fs) == 1 {
		return [][]byte{b}
	}
	var out [][]byte
	for _, f := range fs {
		if len(b) < f.size {
			return nil
		}
		out = append(out, b[:f.size])
		if len(b) < padded(f.size) {
			b = nil
		} else {
			b = b[padded(f.size):]
		}
	}
	return out
}

func formatField(f field, v []byte) string {
	switch f.name {
	case "ipv4_addr", "ipv6_addr":
		a, _ := netip.AddrFromSlice(v)
		return a.String()
	case "inet_proto":
		return Protocol(v[0]).String()
	case "inet_service":
		return strconv.Itoa(int(binary.BigEndian.Uint16(v)))
	case "ifname":
		return strconv.Quote(strings.TrimRight(string(v), "\x00"))
	case "ether_addr":
		return net.HardwareAddr(v).String()
	}
	return fmt.Sprintf("%x", v)
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Protocol is an IP protocol number of a port mapping.
type Protocol uint8

// Protocols of port mappings.
const (
	TCP  Protocol = unix.IPPROTO_TCP
	UDP  Protocol = unix.IPPROTO_UDP
	SCTP Protocol = unix.IPPROTO_SCTP
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// ParseProtocol accepts tcp, udp and sctp in any case.
func ParseProtocol(s string) (Protocol, bool) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, true
	case "udp":
		return UDP, true
	case "sctp":
		return SCTP, true
	}
	return 0, false
}
