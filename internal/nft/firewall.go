package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The firewall plugin's rules: forwarded traffic of pods is accepted (also
// on a node whose forward policy drops), and a pod's ingress is limited by
// its ingress policy. Like the rest of this package the rules are static
// and a pod is only set elements, tagged with its owner; the table is a
// separate one, `inet linen_fw`, so that its layout evolves on its own:
//
//	table inet linen_fw {
//		comment "linen schema=1"
//		set pods4 {
//			type ipv4_addr
//		}
//		set pods6 {
//			type ipv6_addr
//		}
//		set samebr4 {
//			type ipv4_addr . ifname
//		}
//		set samebr6 {
//			type ipv6_addr . ifname
//		}
//		set isolated4 {
//			type ipv4_addr . ifname
//		}
//		set isolated6 {
//			type ipv6_addr . ifname
//		}
//		chain forward {
//			type filter hook forward priority filter - 10; policy accept;
//			jump CNI-ADMIN
//			ct state established,related ip daddr @pods4 meta mark set meta mark | 0x00400000 accept
//			ct state established,related ip6 daddr @pods6 meta mark set meta mark | 0x00400000 accept
//			ct state new meta iifkind "bridge" ip daddr . oifname @samebr4 ip daddr . iifname != @samebr4 drop
//			ct state new meta iifkind "bridge" ip6 daddr . oifname @samebr6 ip6 daddr . iifname != @samebr6 drop
//			ct state new ip daddr . iifname @isolated4 ip daddr . oifname @isolated4 drop
//			ct state new ip6 daddr . iifname @isolated6 ip6 daddr . oifname @isolated6 drop
//			ip saddr @pods4 meta mark set meta mark | 0x00400000 accept
//			ip6 saddr @pods6 meta mark set meta mark | 0x00400000 accept
//			ip daddr @pods4 meta mark set meta mark | 0x00400000 accept
//			ip6 daddr @pods6 meta mark set meta mark | 0x00400000 accept
//		}
//		chain CNI-ADMIN {
//		}
//	}
//
// and, in every other forward base chain of the node whose policy is drop
// (iptables' FORWARD with `-P FORWARD DROP`, which iptables-nft keeps in
// `table ip filter`; an inet filter table of /etc/nftables.conf), once, first:
//
//	meta mark & 0x00400000 == 0x00400000 accept comment "linen firewall: accept pod traffic"
//
// (iptables-nft shows it as `-m mark --mark 0x400000/0x400000 -m comment
// --comment ... -j ACCEPT`).
//
// Why a mark: in nftables every base chain of a hook sees the packet, and
// an accept ends only its own chain; a drop in another table is final. A
// pod's packets are therefore marked by our chain, which runs before the
// usual filter priority, and accepted by that one static rule in the
// chains that would drop them. The mark bit stays set on the packet.
//
// Per pod: its addresses in pods4/6; with ingress policy same-bridge or
// isolated, (address . bridge) in samebr4/6: connections entering from
// another bridge are dropped; with isolated, also (address . bridge) in
// isolated4/6: connections from its own bridge (seen here when the kernel
// passes bridged traffic to the IP hooks, br_netfilter's
// bridge-nf-call-iptables) are dropped. Only packets that open a connection
// are dropped: replies to the pod's own connections are accepted before,
// and untracked packets (IPv6 neighbour discovery) pass.
//
// The admin chain (CNI-ADMIN unless configured) is the administrator's: it
// is created empty when first needed, jumped to first, and never flushed;
// a drop there overrides everything the plugin accepts. An accept there
// ends the chain before the mark is set: such traffic is left to the
// node's own forward rules (return lets the plugin's rules decide).

// FirewallTable is the name of the firewall's table (family inet).
const FirewallTable = "linen_fw"

// FirewallMark is the packet mark bit set on the forwarded traffic of pods
// that the firewall accepts.
const FirewallMark uint32 = 0x00400000

// DefaultAdminChain is the admin chain of configurations that name none
// (the reference plugin's iptablesAdminChainName default).
const DefaultAdminChain = "CNI-ADMIN"

// fwPriority runs the forward chain after mangle (-150) and before the
// usual filter chains (0), whose drop policy the mark lets pods through.
const fwPriority = -10

// hostRuleComment marks the accept rule in other tables' forward chains.
const hostRuleComment = "linen firewall: accept pod traffic"

// nftMetaIIFKIND is NFT_META_IIFKIND (the kind of the input interface,
// Linux 5.1), which x/sys/unix does not name.
const nftMetaIIFKIND = 26

// IngressPolicy limits which connections may reach a pod.
type IngressPolicy uint8

// Ingress policies (the reference plugin's ingressPolicy values).
const (
	// IngressOpen accepts every connection to the pod.
	IngressOpen IngressPolicy = iota
	// IngressSameBridge drops connections that enter the node from
	// another bridge than the pod's.
	IngressSameBridge
	// IngressIsolated also drops connections from the pod's own bridge.
	IngressIsolated
)

func (p IngressPolicy) String() string {
	switch p {
	case IngressOpen:
		return "open"
	case IngressSameBridge:
		return "same-bridge"
	case IngressIsolated:
		return "isolated"
	}
	return fmt.Sprintf("IngressPolicy(%d)", uint8(p))
}

// FirewallEntry is the firewall state of one attachment.
type FirewallEntry struct {
	Network     string
	ContainerID string
	IfName      string
	// IPs are the pod's addresses.
	IPs    []netip.Addr
	Policy IngressPolicy
	// Bridge is the host bridge of the pod's interface; required unless
	// Policy is IngressOpen.
	Bridge string
	// AdminChain is the admin chain to jump to first; "" means
	// DefaultAdminChain.
	AdminChain string
}

func (e FirewallEntry) owner() Owner { return Owner{e.Network, e.ContainerID, e.IfName} }

func (e FirewallEntry) admin() string {
	if e.AdminChain == "" {
		return DefaultAdminChain
	}
	return e.AdminChain
}

var (
	fwPods4     = &setDef{name: "pods4", key: []field{fIPv4}}
	fwPods6     = &setDef{name: "pods6", key: []field{fIPv6}}
	fwSameBr4   = &setDef{name: "samebr4", key: []field{fIPv4, fIfname}}
	fwSameBr6   = &setDef{name: "samebr6", key: []field{fIPv6, fIfname}}
	fwIsolated4 = &setDef{name: "isolated4", key: []field{fIPv4, fIfname}}
	fwIsolated6 = &setDef{name: "isolated6", key: []field{fIPv6, fIfname}}
	fwSets      = []*setDef{fwPods4, fwPods6, fwSameBr4, fwSameBr6, fwIsolated4, fwIsolated6}
)

// ValidAdminChain reports why name cannot be an admin chain, or nil. The
// name must suit both nft and iptables (at most 28 characters) and must not
// be one of the table's own chains.
func ValidAdminChain(name string) error {
	if name == "" || len(name) > 28 {
		return fmt.Errorf("%q must have 1 to 28 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || (i > 0 && c == '.')
		if !ok {
			return fmt.Errorf("%q may hold only letters, digits, '-', '_' and '.'", name)
		}
	}
	if name == fwForward.name {
		return fmt.Errorf("%q is the firewall's own chain", name)
	}
	return nil
}

// validIfName checks an interface name as the kernel does.
func validIfName(name string) bool {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	return !strings.ContainsAny(name, "/: \t\n\x00")
}

// firewallElems returns the entry's elements.
func firewallElems(e FirewallEntry) ([]elem, error) {
	if len(e.IPs) == 0 {
		return nil, errors.New("firewall: the pod has no IP address")
	}
	if e.Policy > IngressIsolated {
		return nil, fmt.Errorf("firewall: unknown ingress policy %d", e.Policy)
	}
	if e.Policy != IngressOpen && !validIfName(e.Bridge) {
		return nil, fmt.Errorf("firewall: ingress policy %s needs the pod's bridge, got interface name %q", e.Policy, e.Bridge)
	}
	tag := e.owner().Tag()
	var out []elem
	for _, a := range e.IPs {
		a = a.Unmap()
		if !a.IsValid() {
			return nil, errors.New("firewall: invalid IP address")
		}
		pods, same, iso := fwPods4, fwSameBr4, fwIsolated4
		if a.Is6() {
			pods, same, iso = fwPods6, fwSameBr6, fwIsolated6
		}
		out = append(out, elem{set: pods, Key: a.AsSlice(), Tag: tag})
		if e.Policy == IngressOpen {
			continue
		}
		k := key(same.key, a.AsSlice(), ifnameBytes(e.Bridge))
		out = append(out, elem{set: same, Key: k, Tag: tag})
		if e.Policy == IngressIsolated {
			out = append(out, elem{set: iso, Key: k, Tag: tag})
		}
	}
	return dedup(out), nil
}

// The forward chain's static rules, in nft's expression order.

func ctState(bits uint32, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: u32(bits), Xor: u32(0)},
		&expr.Cmp{Op: op, Register: reg1, Data: u32(0)},
	}
}

func fwMark() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: u32(^FirewallMark), Xor: u32(FirewallMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
}

type fwFamily struct {
	ip           string // "ip" or "ip6"
	proto        byte
	saddr, daddr uint32
	alen         uint32
	ifReg        uint32 // register of the ifname after an address
	pods, same   string
	iso          string
}

var (
	fw4 = fwFamily{"ip", unix.NFPROTO_IPV4, 12, 16, 4, reg32(1), "pods4", "samebr4", "isolated4"}
	fw6 = fwFamily{"ip6", unix.NFPROTO_IPV6, 8, 24, 16, reg2, "pods6", "samebr6", "isolated6"}
)

func (f fwFamily) established() ruleDef {
	return ruleDef{
		text: fmt.Sprintf("ct state established,related %s daddr @%s meta mark set meta mark | 0x%08x accept", f.ip, f.pods, FirewallMark),
		exprs: func(set func(string) *nftables.Set) []expr.Any {
			return cat(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, expr.CmpOpNeq), nfproto(f.proto), []expr.Any{
				nh(f.daddr, f.alen, reg1),
				lookup(set(f.pods), false),
			}, fwMark())
		},
	}
}

// addrIf loads (address . interface name) for a concatenated lookup.
func (f fwFamily) addrIf(off uint32, ifKey expr.MetaKey) []expr.Any {
	return []expr.Any{nh(off, f.alen, reg1), &expr.Meta{Key: ifKey, Register: f.ifReg}}
}

func (f fwFamily) sameBridge() ruleDef {
	return ruleDef{
		text: fmt.Sprintf(`ct state new meta iifkind "bridge" %[1]s daddr . oifname @%[2]s %[1]s daddr . iifname != @%[2]s drop`, f.ip, f.same),
		exprs: func(set func(string) *nftables.Set) []expr.Any {
			return cat(ctState(expr.CtStateBitNEW, expr.CmpOpNeq), []expr.Any{
				&expr.Meta{Key: nftMetaIIFKIND, Register: reg1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifnameBytes("bridge")},
			}, nfproto(f.proto),
				f.addrIf(f.daddr, expr.MetaKeyOIFNAME), []expr.Any{lookup(set(f.same), false)},
				f.addrIf(f.daddr, expr.MetaKeyIIFNAME), []expr.Any{lookup(set(f.same), true)},
				[]expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}})
		},
	}
}

func (f fwFamily) isolated() ruleDef {
	return ruleDef{
		text: fmt.Sprintf(`ct state new %[1]s daddr . iifname @%[2]s %[1]s daddr . oifname @%[2]s drop`, f.ip, f.iso),
		exprs: func(set func(string) *nftables.Set) []expr.Any {
			return cat(ctState(expr.CtStateBitNEW, expr.CmpOpNeq), nfproto(f.proto),
				f.addrIf(f.daddr, expr.MetaKeyIIFNAME), []expr.Any{lookup(set(f.iso), false)},
				f.addrIf(f.daddr, expr.MetaKeyOIFNAME), []expr.Any{lookup(set(f.iso), false)},
				[]expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}})
		},
	}
}

func (f fwFamily) accept(dir string, off uint32) ruleDef {
	return ruleDef{
		text: fmt.Sprintf("%s %s @%s meta mark set meta mark | 0x%08x accept", f.ip, dir, f.pods, FirewallMark),
		exprs: func(set func(string) *nftables.Set) []expr.Any {
			return cat(nfproto(f.proto), []expr.Any{nh(off, f.alen, reg1), lookup(set(f.pods), false)}, fwMark())
		},
	}
}

// fwForward is the forward chain without its admin jumps (which come
// first, one per admin chain in use).
var fwForward = &chainDef{
	name: "forward", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookForward,
	hookName: "forward", prio: fwPriority, prioText: "filter - 10",
	rules: []ruleDef{
		fw4.established(), fw6.established(),
		fw4.sameBridge(), fw6.sameBridge(),
		fw4.isolated(), fw6.isolated(),
		fw4.accept("saddr", fw4.saddr), fw6.accept("saddr", fw6.saddr),
		fw4.accept("daddr", fw4.daddr), fw6.accept("daddr", fw6.daddr),
	},
}

func jumpRule(chain string) ruleDef {
	return ruleDef{
		text:  "jump " + chain,
		exprs: func(func(string) *nftables.Set) []expr.Any { return jump(chain) },
	}
}

// hostRule is the accept rule in other tables' forward chains.
func hostRuleExprs() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: u32(FirewallMark), Xor: u32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: u32(FirewallMark)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
}

// HostRuleText is the accept rule as nft lists it in another table's chain.
func HostRuleText() string {
	return fmt.Sprintf("meta mark & 0x%08x == 0x%08x accept comment %q", FirewallMark, FirewallMark, hostRuleComment)
}

// FirewallRuleset renders the firewall table as `nft list table inet
// linen_fw` prints it with the given admin chains (and no elements).
func FirewallRuleset(adminChains ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n\tcomment %q\n", FirewallTable, fwComment())
	var blocks []string
	for _, s := range fwSets {
		blocks = append(blocks, fmt.Sprintf("\tset %s {\n\t\ttype %s\n\t}\n", s.name, s.typeText()))
	}
	blk := fmt.Sprintf("\tchain %s {\n\t\ttype %s hook %s priority %s; policy accept;\n", fwForward.name, fwForward.typ, fwForward.hookName, fwForward.prioText)
	// Each admin jump is inserted first, so the newest comes first.
	for i := len(adminChains) - 1; i >= 0; i-- {
		blk += "\t\t" + jumpRule(adminChains[i]).text + "\n"
	}
	for _, r := range fwForward.rules {
		blk += "\t\t" + r.text + "\n"
	}
	blocks = append(blocks, blk+"\t}\n")
	for _, a := range adminChains {
		blocks = append(blocks, fmt.Sprintf("\tchain %s {\n\t}\n", a))
	}
	b.WriteString(strings.Join(blocks, "\n"))
	b.WriteString("}\n")
	return b.String()
}

// FirewallSchema is the firewall table's layout version, written into its
// comment; it changes independently of Schema.
const FirewallSchema = 1

func fwComment() string { return fmt.Sprintf("linen schema=%d", FirewallSchema) }

// AddFirewall installs e: the table (once per node, under the creation
// lock), e's admin chain, the accept rule in forward chains of other tables
// whose policy drops, and e's elements in one transaction. It returns the
// forward chains with a drop policy that run before the firewall's chain,
// which it cannot open (the caller logs them).
func AddFirewall(c *Conn, e FirewallEntry) ([]string, error) {
	es, err := firewallElems(e)
	if err != nil {
		return nil, err
	}
	if err := ValidAdminChain(e.admin()); err != nil {
		return nil, fmt.Errorf("firewall: admin chain %w", err)
	}
	if err := c.fwEnsure(e.admin()); err != nil {
		return nil, err
	}
	early, err := c.fwOpenHost(false)
	if err != nil {
		return nil, err
	}
	return early, c.fwAdd("add firewall elements", es)
}

// DelFirewall removes the attachment's elements in one transaction; nothing
// to remove is success. known (what ADD was given) makes it direct
// lookups; without it the firewall's sets are listed and filtered by tag.
// The admin chains and the rules in other tables stay.
func DelFirewall(c *Conn, network, containerID, ifName string, known *FirewallEntry) error {
	tag := Owner{network, containerID, ifName}.Tag()
	var ks []elem
	if known != nil {
		k := *known
		k.Network, k.ContainerID, k.IfName = network, containerID, ifName
		// Look up every set the entry could have used, whatever its
		// policy was then.
		k.Policy = IngressIsolated
		if !validIfName(k.Bridge) {
			k.Policy = IngressOpen
		}
		if es, err := firewallElems(k); err == nil {
			ks = es
		}
	}
	return c.removeTagged(fwTable, "delete firewall elements", tag, ks, fwAllSets)
}

// CheckFirewall verifies that e is in place: the table and its chain, e's
// admin chain and its jump, e's elements with e's tag, and the accept rule
// in every forward chain of another table whose policy drops.
func CheckFirewall(c *Conn, e FirewallEntry) error {
	es, err := firewallElems(e)
	if err != nil {
		return err
	}
	st, err := c.fwState()
	if err != nil {
		return err
	}
	switch {
	case !st.exists:
		return fmt.Errorf("nftables table inet %s does not exist", FirewallTable)
	case st.comment != fwComment():
		return &SchemaError{Table: "inet " + FirewallTable, Comment: st.comment, Want: fwComment()}
	case !st.complete():
		return fmt.Errorf("nftables table inet %s is incomplete (a set, chain or rule was deleted)", FirewallTable)
	case !st.jumps[e.admin()]:
		return fmt.Errorf("nftables table inet %s: chain forward does not jump to admin chain %s", FirewallTable, e.admin())
	}
	if _, err := c.fwOpenHost(true); err != nil {
		return err
	}
	return c.checkElems(fwTable, es)
}

// GCFirewall removes, in one transaction, the elements of network whose
// attachment is not in valid.
func GCFirewall(c *Conn, network string, valid []Attachment) error {
	return c.gcTagged(fwTable, "garbage-collect firewall elements", network, valid, fwAllSets)
}

// FirewallUsable reports whether the firewall can work in this namespace:
// its table exists with this binary's layout, or the kernel accepts its
// creation (checked without changing anything).
func (c *Conn) FirewallUsable() error {
	st, err := c.fwState()
	if err != nil {
		return err
	}
	if st.exists {
		if st.comment != fwComment() {
			return &SchemaError{Table: "inet " + FirewallTable, Comment: st.comment, Want: fwComment()}
		}
		return nil
	}
	msgs, err := fwStructure(false, []string{DefaultAdminChain})
	if err != nil {
		return err
	}
	return c.checkTransaction("check nftables table inet "+FirewallTable, msgs)
}
