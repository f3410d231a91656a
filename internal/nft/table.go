package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// SchemaError reports a linen table whose layout this binary does not know.
type SchemaError struct {
	Table   string // "inet linen"
	Comment string // what the table says about itself
	Want    string
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("nftables table %s has comment %q, this binary manages %q: refusing to change it", e.Table, e.Comment, e.Want)
}

// tableID is a table as netlink messages name it (family and name) and as
// nft prints it ("inet linen").
type tableID struct {
	family     byte
	familyName string
	name       string
}

func (tb tableID) String() string { return tb.familyName + " " + tb.name }

func (t *tableDef) id() tableID { return tableID{byte(t.family), t.familyName, TableName} }

func (t *tableDef) name() string { return t.id().String() }

// getTableRequest asks for one table by name.
func getTableRequest(tb tableID) netlink.Message {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_TABLE_NAME, tb.name)
	b, _ := ae.Encode()
	return netlink.Message{
		Header: netlink.Header{Type: nftType(unix.NFT_MSG_GETTABLE)},
		Data:   append(nfgen(tb.family, 0), b...),
	}
}

// decodeTable returns the use count (chains, sets and objects) and the
// comment of the table that NEWTABLE messages (nfgenmsg included) describe.
func decodeTable(data [][]byte) (use uint32, comment string, err error) {
	for _, d := range data {
		if len(d) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(d[4:])
		if err != nil {
			return 0, "", err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_TABLE_USE:
				use = ad.Uint32()
			case nftaTableUserdata:
				comment = udataComment(ad.Bytes())
			}
		}
	}
	return use, comment, nil
}

// newTableMsg creates tb with comment. Unless repair allows the table to
// exist already, two creators racing without the lock make the second one
// fail cleanly instead of duplicating rules.
func newTableMsg(tb tableID, comment string, repair bool) (netlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_TABLE_NAME, tb.name)
	ae.Uint32(unix.NFTA_TABLE_FLAGS, 0)
	ae.Bytes(nftaTableUserdata, userdata.AppendString(nil, 0 /* NFTNL_UDATA_TABLE_COMMENT */, comment))
	b, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, err
	}
	flags := netlink.Create
	if !repair {
		flags |= netlink.Excl
	}
	return netlink.Message{
		Header: netlink.Header{Type: nftType(unix.NFT_MSG_NEWTABLE), Flags: flags},
		Data:   append(nfgen(tb.family, 0), b...),
	}, nil
}

type tableState struct {
	exists  bool
	use     uint32 // chains, sets and objects in the table
	comment string
	sets    []string // names of its sets
}

// complete reports whether the table has every static set and chain: its
// use count covers its sets and our chains, and no static set is missing.
func (st tableState) complete(t *tableDef) bool {
	if !st.exists || st.use < uint32(len(st.sets)+len(t.chains)) {
		return false
	}
	have := map[string]bool{}
	for _, n := range st.sets {
		have[n] = true
	}
	for _, s := range t.sets {
		if !have[s.name] {
			return false
		}
	}
	return true
}

// state looks the table up by name and lists its sets' names: two small
// requests in one round trip, whatever the number of elements.
func (c *Conn) state(t *tableDef) (tableState, error) {
	for attempt := 0; ; attempt++ {
		res, err := c.query("get table", []netlink.Message{getTableRequest(t.id()), setsDumpRequest(t.id())})
		if err != nil {
			return tableState{}, err
		}
		if err := res[0].err; err != nil {
			if errors.Is(err, unix.ENOENT) {
				return tableState{}, nil
			}
			return tableState{}, err
		}
		if errors.Is(res[1].err, errDumpInterrupted) && attempt < 5 {
			continue
		}
		if res[1].err != nil && !errors.Is(res[1].err, unix.ENOENT) {
			return tableState{}, res[1].err
		}
		st := tableState{exists: true}
		if st.use, st.comment, err = decodeTable(res[0].data); err != nil {
			return st, err
		}
		if st.sets, err = setNamesOf(t.id(), res[1].data); err != nil {
			return st, err
		}
		return st, nil
	}
}

// ensure makes sure t exists with this binary's schema. The common case is
// one table lookup per Conn; creation happens once per network namespace.
func (c *Conn) ensure(t *tableDef) error {
	if c.ready[t] {
		return nil
	}
	st, err := c.state(t)
	if err != nil {
		return fmt.Errorf("look up nftables table %s: %w", t.name(), err)
	}
	if st.exists {
		if st.comment != t.comment() {
			return &SchemaError{Table: t.name(), Comment: st.comment, Want: t.comment()}
		}
		if st.complete(t) {
			c.ready[t] = true
			return nil
		}
	}
	return c.prepare(t, nil)
}

// prepare creates, under the creation lock, whatever of t is missing: the
// whole table, its static part (when incomplete: rebuilt in place, rules
// replaced, elements kept) and the dynamic sets that elems use.
func (c *Conn) prepare(t *tableDef, elems []elem) error {
	unlock, err := c.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := c.state(t)
	if err != nil {
		return fmt.Errorf("look up nftables table %s: %w", t.name(), err)
	}
	if st.exists && st.comment != t.comment() {
		return &SchemaError{Table: t.name(), Comment: st.comment, Want: t.comment()}
	}
	have := map[string]bool{}
	var dyn []*setDef // dynamic sets that exist
	for _, n := range st.sets {
		have[n] = true
		if s := t.findSet(n); s != nil && s.dynamic() {
			dyn = append(dyn, s)
		}
	}
	var need []*setDef // dynamic sets to add
	for _, e := range elems {
		if e.set.dynamic() && !have[e.set.name] {
			have[e.set.name] = true
			need = append(need, e.set)
		}
	}
	complete := st.complete(t)
	var msgs []netlink.Message
	op := "add sets to nftables table " + t.name()
	switch {
	case !st.exists:
		op = "create nftables table " + t.name()
		msgs, err = structure(t, false, need)
	case !complete:
		op = "repair nftables table " + t.name()
		msgs, err = structure(t, true, append(dyn, need...))
	default:
		msgs, err = dynamicSets(t, need)
	}
	if err != nil {
		return err
	}
	if err := c.transact(op, msgs); err != nil {
		return err
	}
	c.ready[t] = true
	return nil
}

// structure returns the messages that create t with the dynamic sets dyn.
// With repair, the table and sets may exist (they are kept with their
// elements) and every chain's rules are replaced, in the same transaction.
func structure(t *tableDef, repair bool, dyn []*setDef) ([]netlink.Message, error) {
	table, err := newTableMsg(t.id(), t.comment(), repair)
	if err != nil {
		return nil, err
	}
	rest, err := record(func(cc *nftables.Conn) error {
		lt := t.lib()
		sets := map[string]*nftables.Set{}
		for i, s := range append(append([]*setDef(nil), t.sets...), dyn...) {
			ls := s.lib(lt, uint32(i+1))
			if err := cc.AddSet(ls, nil); err != nil {
				return fmt.Errorf("set %s: %w", s.name, err)
			}
			sets[s.name] = ls
		}
		chains := map[string]*nftables.Chain{}
		for _, ch := range t.chains {
			lc := &nftables.Chain{Name: ch.name, Table: lt}
			if ch.hook != nil {
				accept := nftables.ChainPolicyAccept
				lc.Type, lc.Hooknum, lc.Priority, lc.Policy = ch.typ, ch.hook, nftables.ChainPriorityRef(nftables.ChainPriority(ch.prio)), &accept
			}
			chains[ch.name] = cc.AddChain(lc)
			if repair {
				cc.FlushChain(lc)
			}
		}
		ref := setRef(sets)
		for _, ch := range t.chains {
			for _, r := range ch.rulesWith(dyn) {
				cc.AddRule(&nftables.Rule{Table: lt, Chain: chains[ch.name], Exprs: r.exprs(ref)})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return append([]netlink.Message{table}, rest...), nil
}

// dynamicSets returns the messages that add the dynamic sets need, each
// with its rule, to an existing table.
func dynamicSets(t *tableDef, need []*setDef) ([]netlink.Message, error) {
	if len(need) == 0 {
		return nil, nil
	}
	return record(func(cc *nftables.Conn) error {
		lt := t.lib()
		sets := map[string]*nftables.Set{}
		for i, s := range need {
			ls := s.lib(lt, uint32(i+1))
			if err := cc.AddSet(ls, nil); err != nil {
				return fmt.Errorf("set %s: %w", s.name, err)
			}
			sets[s.name] = ls
			r := &nftables.Rule{Table: lt, Chain: &nftables.Chain{Name: s.chain, Table: lt}, Exprs: s.rule.exprs(setRef(sets))}
			if s.prepend {
				cc.InsertRule(r)
			} else {
				cc.AddRule(r)
			}
		}
		return nil
	})
}

func setRef(sets map[string]*nftables.Set) func(string) *nftables.Set {
	return func(name string) *nftables.Set {
		s, ok := sets[name]
		if !ok {
			panic("nft: rule refers to unknown set " + name)
		}
		return s
	}
}

// record returns the messages google/nftables builds for what fn adds to
// its Conn, without sending them (through the library's test dial hook),
// so that they can join messages the library cannot build (a table with a
// comment) in one transaction on our socket.
func record(fn func(cc *nftables.Conn) error) ([]netlink.Message, error) {
	var got []netlink.Message
	ack := []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4)}}
	cc, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req == nil {
			return ack, nil
		}
		got = append(got, req...)
		return nil, nil
	}))
	if err != nil {
		return nil, err
	}
	if err := fn(cc); err != nil {
		return nil, err
	}
	if err := cc.Flush(); err != nil {
		return nil, err
	}
	out := got[:0]
	for _, m := range got {
		if t := m.Header.Type; t == unix.NFNL_MSG_BATCH_BEGIN || t == unix.NFNL_MSG_BATCH_END {
			continue
		}
		m.Header.Flags &^= unix.NLM_F_ECHO // no copy of each new rule back
		out = append(out, m)
	}
	return out, nil
}

// lock takes the creation lock, an flock on a file under the lock
// directory, shared by every linen process on the host. It polls rather
// than blocks so that the wait is bounded.
func (c *Conn) lock() (func(), error) {
	if err := os.MkdirAll(c.lockDir, 0o755); err != nil {
		return nil, fmt.Errorf("create lock directory: %w", err)
	}
	path := filepath.Join(c.lockDir, "nftables.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	deadline := time.Now().Add(c.timeout)
	delay := 200 * time.Microsecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock %s: still held by another process after %v", path, c.timeout)
		}
		time.Sleep(delay)
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// usable checks that t can work here: it exists with our schema, or the
// kernel accepts its creation (checked without changing anything).
func (c *Conn) usable(t *tableDef) error {
	st, err := c.state(t)
	if err != nil {
		return fmt.Errorf("look up nftables table %s: %w", t.name(), err)
	}
	if st.exists {
		if st.comment != t.comment() {
			return &SchemaError{Table: t.name(), Comment: st.comment, Want: t.comment()}
		}
		return nil
	}
	msgs, err := structure(t, false, nil)
	if err != nil {
		return err
	}
	return c.checkTransaction("check nftables table "+t.name(), msgs)
}

// NATUsable reports whether masquerading and host ports can work in this
// namespace (nf_tables with nat, fib, masquerade and conntrack).
func (c *Conn) NATUsable() error { return c.usable(inetTable) }

// BridgeUsable reports whether the bridge MAC spoof check can work here.
func (c *Conn) BridgeUsable() error { return c.usable(bridgeTable) }
