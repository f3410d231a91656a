package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Netlink plumbing of the firewall table: its state in one round trip, its
// creation and repair, and the accept rule in other tables' forward chains.
// Its elements go through the operations of ops.go, as linen's other
// tables' do.

// fwTable is the firewall's table.
var fwTable = tableID{byte(nftables.TableFamilyINet), "inet", FirewallTable}

// fwAllSets lists the firewall's sets, which are all static.
func fwAllSets() ([]*setDef, error) { return fwSets, nil }

// fwAdd adds es in one transaction. Keys held already with the same tag
// are left alone; keys held by another tag are stale (a reused pod
// address, a missed DEL) and are replaced in the same transaction.
func (c *Conn) fwAdd(op string, es []elem) error {
	err := c.transact(op, elemMsgs(fwTable, unix.NFT_MSG_NEWSETELEM, exclusiveAdd, es, true))
	return c.settleExisting(fwTable, op, es, err)
}

// fwTableState is what the firewall table holds, without elements.
type fwTableState struct {
	exists  bool
	comment string
	sets    map[string]bool
	chain   bool            // chain forward exists
	static  int             // rules of chain forward other than admin jumps
	jumps   map[string]bool // admin chains chain forward jumps to
	order   []string        // the same, oldest first
}

func (st fwTableState) complete() bool {
	if !st.exists || !st.chain || st.static != len(fwForward.rules) {
		return false
	}
	for _, s := range fwSets {
		if !st.sets[s.name] {
			return false
		}
	}
	return true
}

func fwRulesDumpRequest(family byte, table, chain string) netlink.Message {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_RULE_TABLE, table)
	ae.String(unix.NFTA_RULE_CHAIN, chain)
	b, _ := ae.Encode()
	return netlink.Message{
		Header: netlink.Header{Type: nftType(unix.NFT_MSG_GETRULE), Flags: netlink.Dump},
		Data:   append(nfgen(family, 0), b...),
	}
}

// fwState reads the table, its sets and the rules of its forward chain in
// one round trip: gets of the table and of each set, and one dump (a
// socket runs one dump at a time).
func (c *Conn) fwState() (fwTableState, error) {
	reqs := []netlink.Message{getTableRequest(fwTable)}
	for _, s := range fwSets {
		ae := netlink.NewAttributeEncoder()
		ae.String(unix.NFTA_SET_TABLE, FirewallTable)
		ae.String(unix.NFTA_SET_NAME, s.name)
		b, _ := ae.Encode()
		reqs = append(reqs, netlink.Message{Header: netlink.Header{Type: nftType(unix.NFT_MSG_GETSET)}, Data: append(nfgen(fwTable.family, 0), b...)})
	}
	reqs = append(reqs, fwRulesDumpRequest(fwTable.family, FirewallTable, fwForward.name))
	for attempt := 0; ; attempt++ {
		res, err := c.query("get nftables table "+fwTable.String(), append([]netlink.Message(nil), reqs...))
		if err != nil {
			return fwTableState{}, err
		}
		if err := res[0].err; err != nil {
			if errors.Is(err, unix.ENOENT) {
				return fwTableState{}, nil
			}
			return fwTableState{}, err
		}
		rules := res[len(res)-1]
		if errors.Is(rules.err, errDumpInterrupted) && attempt < 5 {
			continue
		}
		st := fwTableState{exists: true, sets: map[string]bool{}, jumps: map[string]bool{}}
		if _, st.comment, err = decodeTable(res[0].data); err != nil {
			return st, err
		}
		for i, s := range fwSets {
			switch r := res[1+i]; {
			case r.err == nil:
				names, err := setNamesOf(fwTable, r.data)
				if err != nil {
					return st, err
				}
				for _, n := range names {
					st.sets[n] = n == s.name
				}
			case errors.Is(r.err, unix.ENOENT):
			default:
				return st, r.err
			}
		}
		switch {
		case rules.err == nil:
			st.chain = true
		case errors.Is(rules.err, unix.ENOENT):
		default:
			return st, rules.err
		}
		for _, d := range rules.data {
			ri, err := decodeRule(d)
			if err != nil {
				return st, fmt.Errorf("decode rule of chain forward: %w", err)
			}
			if ri.chain != fwForward.name {
				continue
			}
			if ri.exprs == 1 && ri.jump != "" {
				if !st.jumps[ri.jump] {
					st.jumps[ri.jump] = true
					st.order = append([]string{ri.jump}, st.order...)
				}
				continue
			}
			st.static++
		}
		return st, nil
	}
}

// fwEnsure makes sure the table is complete and jumps to admin; changes
// happen under the creation lock, in one transaction.
func (c *Conn) fwEnsure(admin string) error {
	st, err := c.fwState()
	if err != nil {
		return err
	}
	if st.exists && st.comment != fwComment() {
		return &SchemaError{Table: "inet " + FirewallTable, Comment: st.comment, Want: fwComment()}
	}
	if st.complete() && st.jumps[admin] {
		return nil
	}
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if st, err = c.fwState(); err != nil {
		return err
	}
	var msgs []netlink.Message
	op := "add admin chain to nftables table inet " + FirewallTable
	switch {
	case st.exists && st.comment != fwComment():
		return &SchemaError{Table: "inet " + FirewallTable, Comment: st.comment, Want: fwComment()}
	case !st.exists:
		op = "create nftables table inet " + FirewallTable
		msgs, err = fwStructure(false, []string{admin})
	case !st.complete():
		op = "repair nftables table inet " + FirewallTable
		admins := st.order
		if !st.jumps[admin] {
			admins = append(admins, admin)
		}
		msgs, err = fwStructure(true, admins)
	case !st.jumps[admin]:
		msgs, err = fwAdminJump(admin)
	default:
		return nil
	}
	if err != nil {
		return err
	}
	return c.transact(op, msgs)
}

// fwStructure returns the messages that create the table (repair: that
// re-create whatever is missing, keeping sets with their elements and the
// admin chains with their rules, and replace the forward chain's rules)
// with jumps to admins (oldest first).
func fwStructure(repair bool, admins []string) ([]netlink.Message, error) {
	table, err := newTableMsg(fwTable, fwComment(), repair)
	if err != nil {
		return nil, err
	}
	rest, err := record(func(cc *nftables.Conn) error {
		lt := &nftables.Table{Name: FirewallTable, Family: nftables.TableFamilyINet}
		sets := map[string]*nftables.Set{}
		for i, s := range fwSets {
			ls := s.lib(lt, uint32(i+1))
			if err := cc.AddSet(ls, nil); err != nil {
				return fmt.Errorf("set %s: %w", s.name, err)
			}
			sets[s.name] = ls
		}
		accept := nftables.ChainPolicyAccept
		fwd := cc.AddChain(&nftables.Chain{Name: fwForward.name, Table: lt, Type: fwForward.typ,
			Hooknum: fwForward.hook, Priority: nftables.ChainPriorityRef(nftables.ChainPriority(fwForward.prio)), Policy: &accept})
		if repair {
			cc.FlushChain(fwd)
		}
		ref := setRef(sets)
		for _, r := range fwForward.rules {
			cc.AddRule(&nftables.Rule{Table: lt, Chain: fwd, Exprs: r.exprs(ref)})
		}
		for _, a := range admins {
			cc.AddChain(&nftables.Chain{Name: a, Table: lt})
			cc.InsertRule(&nftables.Rule{Table: lt, Chain: fwd, Exprs: jumpRule(a).exprs(ref)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return append([]netlink.Message{table}, rest...), nil
}

// fwAdminJump adds the admin chain (kept as it is when it exists) and the
// jump to it, first in chain forward.
func fwAdminJump(admin string) ([]netlink.Message, error) {
	return record(func(cc *nftables.Conn) error {
		lt := &nftables.Table{Name: FirewallTable, Family: nftables.TableFamilyINet}
		cc.AddChain(&nftables.Chain{Name: admin, Table: lt})
		cc.InsertRule(&nftables.Rule{Table: lt, Chain: &nftables.Chain{Name: fwForward.name, Table: lt}, Exprs: jump(admin)})
		return nil
	})
}

// chainInfo is a chain as a GETCHAIN dump describes it.
type chainInfo struct {
	family   byte
	table    string
	name     string
	base     bool
	hook     uint32
	priority int32
	policy   uint32
	hasPol   bool
}

func (ci chainInfo) String() string {
	fam := map[byte]string{unix.NFPROTO_IPV4: "ip", unix.NFPROTO_IPV6: "ip6", unix.NFPROTO_INET: "inet"}[ci.family]
	if fam == "" {
		fam = fmt.Sprintf("family %d", ci.family)
	}
	return fmt.Sprintf("%s %s %s (priority %d)", fam, ci.table, ci.name, ci.priority)
}

// decodeChain parses one NEWCHAIN message (nfgenmsg included).
func decodeChain(d []byte) (chainInfo, error) {
	var ci chainInfo
	if len(d) < 4 {
		return ci, errors.New("short chain message")
	}
	ci.family = d[0]
	ad, err := netlink.NewAttributeDecoder(d[4:])
	if err != nil {
		return ci, err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_CHAIN_TABLE:
			ci.table = ad.String()
		case unix.NFTA_CHAIN_NAME:
			ci.name = ad.String()
		case unix.NFTA_CHAIN_POLICY:
			ci.policy, ci.hasPol = ad.Uint32(), true
		case unix.NFTA_CHAIN_HOOK:
			ci.base = true
			ad.Nested(func(h *netlink.AttributeDecoder) error {
				h.ByteOrder = binary.BigEndian
				for h.Next() {
					switch h.Type() {
					case unix.NFTA_HOOK_HOOKNUM:
						ci.hook = h.Uint32()
					case unix.NFTA_HOOK_PRIORITY:
						ci.priority = int32(h.Uint32())
					}
				}
				return h.Err()
			})
		}
	}
	return ci, ad.Err()
}

// ruleInfo is what the firewall reads of a rule.
type ruleInfo struct {
	table, chain string
	handle       uint64
	comment      string
	exprs        int    // number of expressions
	jump         string // target of an immediate jump, if any
}

// decodeRule parses one NEWRULE message (nfgenmsg included): names,
// handle, comment, the number of expressions and the target of an
// immediate jump. Other expressions are counted, not decoded, so rules of
// any origin (iptables-nft's compat matches included) parse.
func decodeRule(d []byte) (ruleInfo, error) {
	var ri ruleInfo
	if len(d) < 4 {
		return ri, errors.New("short rule message")
	}
	ad, err := netlink.NewAttributeDecoder(d[4:])
	if err != nil {
		return ri, err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_RULE_TABLE:
			ri.table = ad.String()
		case unix.NFTA_RULE_CHAIN:
			ri.chain = ad.String()
		case unix.NFTA_RULE_HANDLE:
			ri.handle = ad.Uint64()
		case unix.NFTA_RULE_USERDATA:
			ri.comment = udataComment(ad.Bytes())
		case unix.NFTA_RULE_EXPRESSIONS:
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					if list.Type() != unix.NFTA_LIST_ELEM {
						continue
					}
					ri.exprs++
					list.Nested(func(e *netlink.AttributeDecoder) error {
						e.ByteOrder = binary.BigEndian
						var name string
						var data []byte
						for e.Next() {
							switch e.Type() {
							case unix.NFTA_EXPR_NAME:
								name = e.String()
							case unix.NFTA_EXPR_DATA:
								data = e.Bytes()
							}
						}
						if name == "immediate" && data != nil {
							if j := immediateJump(data); j != "" {
								ri.jump = j
							}
						}
						return e.Err()
					})
				}
				return list.Err()
			})
		}
	}
	return ri, ad.Err()
}

// immediateJump returns the chain an immediate expression jumps to, or "".
func immediateJump(data []byte) string {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return ""
	}
	ad.ByteOrder = binary.BigEndian
	var target string
	for ad.Next() {
		if ad.Type() != unix.NFTA_IMMEDIATE_DATA {
			continue
		}
		ad.Nested(func(dd *netlink.AttributeDecoder) error {
			for dd.Next() {
				if dd.Type() != unix.NFTA_DATA_VERDICT {
					continue
				}
				dd.Nested(func(v *netlink.AttributeDecoder) error {
					v.ByteOrder = binary.BigEndian
					var code uint32
					var chain string
					for v.Next() {
						switch v.Type() {
						case unix.NFTA_VERDICT_CODE:
							code = v.Uint32()
						case unix.NFTA_VERDICT_CHAIN:
							chain = v.String()
						}
					}
					if int32(code) == unix.NFT_JUMP {
						target = chain
					}
					return v.Err()
				})
			}
			return dd.Err()
		})
	}
	if ad.Err() != nil {
		return ""
	}
	return target
}

// hostDropChains lists the forward base chains of other tables (families
// ip, ip6, inet) whose policy is drop.
func (c *Conn) hostDropChains() ([]chainInfo, error) {
	data, err := c.dump("list nftables chains", netlink.Message{
		Header: netlink.Header{Type: nftType(unix.NFT_MSG_GETCHAIN)},
		Data:   nfgen(unix.NFPROTO_UNSPEC, 0),
	})
	if err != nil {
		return nil, err
	}
	var out []chainInfo
	for _, d := range data {
		ci, err := decodeChain(d)
		if err != nil {
			return nil, fmt.Errorf("decode chain: %w", err)
		}
		switch {
		case !ci.base || ci.hook != unix.NF_INET_FORWARD || !ci.hasPol || ci.policy != uint32(nftables.ChainPolicyDrop):
		case ci.family != unix.NFPROTO_IPV4 && ci.family != unix.NFPROTO_IPV6 && ci.family != unix.NFPROTO_INET:
		case ci.family == fwTable.family && ci.table == fwTable.name:
		default:
			out = append(out, ci)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// hostRulePresent reports whether ci holds the accept rule.
func (c *Conn) hostRulePresent(ci chainInfo) (bool, error) {
	data, err := c.dump("list rules of "+ci.String(), fwRulesDumpRequest(ci.family, ci.table, ci.name))
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	for _, d := range data {
		ri, err := decodeRule(d)
		if err != nil {
			return false, fmt.Errorf("decode rule of %s: %w", ci, err)
		}
		if ri.chain == ci.name && ri.comment == hostRuleComment {
			return true, nil
		}
	}
	return false, nil
}

// fwOpenHost puts the accept rule first in every forward chain of another
// table whose policy is drop and that runs after ours. It returns such
// chains that run before ours (no mark yet: they cannot be opened). With
// checkOnly a missing rule is an error and nothing changes.
func (c *Conn) fwOpenHost(checkOnly bool) ([]string, error) {
	missing := func() ([]chainInfo, []string, error) {
		chains, err := c.hostDropChains()
		if err != nil {
			return nil, nil, err
		}
		var need []chainInfo
		var early []string
		for _, ci := range chains {
			if ci.priority <= fwPriority {
				early = append(early, ci.String())
				continue
			}
			ok, err := c.hostRulePresent(ci)
			if err != nil {
				return nil, nil, err
			}
			if !ok {
				need = append(need, ci)
			}
		}
		return need, early, nil
	}
	need, early, err := missing()
	if err != nil || len(need) == 0 {
		return early, err
	}
	if checkOnly {
		var names []string
		for _, ci := range need {
			names = append(names, ci.String())
		}
		return early, fmt.Errorf("forward chains with a drop policy lack the firewall's accept rule: %s", strings.Join(names, ", "))
	}
	unlock, err := c.lock()
	if err != nil {
		return early, err
	}
	defer unlock()
	if need, early, err = missing(); err != nil || len(need) == 0 {
		return early, err
	}
	msgs, err := record(func(cc *nftables.Conn) error {
		for _, ci := range need {
			t := &nftables.Table{Name: ci.table, Family: nftables.TableFamily(ci.family)}
			cc.InsertRule(&nftables.Rule{Table: t, Chain: &nftables.Chain{Name: ci.name, Table: t}, Exprs: hostRuleExprs(),
				UserData: userdata.AppendString(nil, userdata.TypeComment, hostRuleComment)})
		}
		return nil
	})
	if err != nil {
		return early, err
	}
	return early, c.transact("open forward chains with a drop policy", msgs)
}
