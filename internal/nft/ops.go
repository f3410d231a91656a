package nft

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Per-attachment operations on tagged elements. Each changes the kernel in
// one transaction; the reads around them are targeted element gets (cost
// independent of how many elements the sets hold), except where nothing
// identifies the elements (DEL without configuration, GC), which list the
// sets concerned.

// setConflict reports an exclusive key (a host port) owned by another
// attachment.
type setConflict struct {
	Set       string // set or map name
	Key       string // the key in nft syntax, e.g. "tcp . 8080"
	Value     string // what the key maps to now, e.g. "10.0.0.7 . 80"
	Owner     string // the element's tag
	Network   string // decoded from the tag when possible
	Container string
	IfName    string
}

func (e *setConflict) Error() string {
	return fmt.Sprintf("%s %s is already taken by container %q (interface %q, network %q)", e.Set, e.Key, e.Container, e.IfName, e.Network)
}

func conflict(got elem) *setConflict {
	ce := &setConflict{Set: got.set.name, Key: got.keyText(), Owner: got.Tag}
	if got.set.isMap() {
		ce.Value = got.dataText()
	}
	if p, ok := parseTag(got.Tag); ok {
		ce.Network, ce.Container, ce.IfName = p.net, p.id, p.ifname
	} else {
		ce.Container = got.Tag
	}
	return ce
}

// add adds elems, all tagged tag, in one transaction. Elements that are
// already there with the same tag and value are left alone; stale elements
// (a non-exclusive key held by another tag) are replaced; an exclusive key
// held by another tag is a *setConflict and nothing changes.
func (c *Conn) add(t *tableDef, op string, elems []elem) error {
	if len(elems) == 0 {
		return nil
	}
	if err := c.ensure(t); err != nil {
		return err
	}
	err := c.transact(op, elemMsgs(t.id(), unix.NFT_MSG_NEWSETELEM, exclusiveAdd, elems, true))
	if errors.Is(err, unix.ENOENT) {
		// A set is missing: the first pod with a new prefix length, or
		// an administrator deleted something. Create what is missing and
		// try once more.
		if berr := c.prepare(t, elems); berr != nil {
			return errors.Join(err, berr)
		}
		err = c.transact(op, elemMsgs(t.id(), unix.NFT_MSG_NEWSETELEM, exclusiveAdd, elems, true))
	}
	return c.settleExisting(t.id(), op, elems, err)
}

// exclusiveAdd are the flags of an element add that fails (EEXIST) on a
// key that is there already, instead of silently keeping the old element.
const exclusiveAdd = netlink.Create | netlink.Excl

// settleExisting finishes an exclusive add of elems to tb that failed with
// err. Unless err is EEXIST it is returned as it is. Otherwise each key is
// looked up: keys already held with the same tag and value stay; keys held
// by another tag are replaced, in one transaction, unless their set is
// exclusive (a *setConflict, nothing changes).
func (c *Conn) settleExisting(tb tableID, op string, elems []elem, err error) error {
	if err == nil || !errors.Is(err, unix.EEXIST) {
		return err
	}
	cur, gerr := c.get(tb, elems)
	if gerr != nil {
		return errors.Join(err, gerr)
	}
	var dels, adds []elem
	for i, e := range elems {
		g := cur[i]
		switch {
		case g == nil:
			adds = append(adds, e)
		case g.Tag == e.Tag && g.same(e):
			// Already ours (an ADD repeated after a lost reply).
		case g.Tag != e.Tag && e.set.exclusive:
			return conflict(*g)
		default:
			dels = append(dels, *g)
			adds = append(adds, e)
		}
	}
	msgs := elemMsgs(tb, unix.NFT_MSG_DELSETELEM, 0, dels, false)
	msgs = append(msgs, elemMsgs(tb, unix.NFT_MSG_NEWSETELEM, exclusiveAdd, adds, true)...)
	return c.transact(op, msgs)
}

// get looks up each element of tb by key (and range), returning nil for
// the absent ones; a missing set or table counts as absent.
func (c *Conn) get(tb tableID, elems []elem) ([]*elem, error) {
	reqs := make([]netlink.Message, len(elems))
	for i, e := range elems {
		reqs[i] = elemMsg(tb, e.set, unix.NFT_MSG_GETSETELEM, 0, []elem{e}, false)
	}
	res, err := c.query("get set element", reqs)
	if err != nil {
		return nil, err
	}
	out := make([]*elem, len(elems))
	for i, r := range res {
		if r.err != nil {
			if errors.Is(r.err, unix.ENOENT) {
				continue
			}
			return nil, r.err
		}
		for _, d := range r.data {
			es, err := decodeElems(elems[i].set, d)
			if err != nil {
				return nil, fmt.Errorf("decode set element: %w", err)
			}
			if len(es) > 0 {
				e := es[0]
				out[i] = &e
			}
		}
	}
	return out, nil
}

// setLister returns the sets an operation that finds elements by their
// tag lists.
type setLister func() ([]*setDef, error)

// sets returns the table's sets (static and dynamic) that want selects;
// none when the table does not exist.
func (c *Conn) sets(t *tableDef, want func(*setDef) bool) ([]*setDef, error) {
	names, err := c.setNames(t)
	if err != nil {
		return nil, err
	}
	var out []*setDef
	for _, n := range names {
		if s := t.findSet(n); s != nil && want(s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// setNames lists the names of the table's sets.
func (c *Conn) setNames(t *tableDef) ([]string, error) {
	data, err := c.dump("list sets", setsDumpRequest(t.id()))
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, err
	}
	return setNamesOf(t.id(), data)
}

func setsDumpRequest(tb tableID) netlink.Message {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_TABLE, tb.name)
	b, _ := ae.Encode()
	return netlink.Message{
		Header: netlink.Header{Type: nftType(unix.NFT_MSG_GETSET), Flags: netlink.Dump},
		Data:   append(nfgen(tb.family, 0), b...),
	}
}

// setNamesOf returns the names of tb's sets among NEWSET messages
// (nfgenmsg included).
func setNamesOf(tb tableID, data [][]byte) ([]string, error) {
	var out []string
	for _, d := range data {
		if len(d) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(d[4:])
		if err != nil {
			return nil, err
		}
		var table, name string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_SET_TABLE:
				table = ad.String()
			case unix.NFTA_SET_NAME:
				name = ad.String()
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		if table == tb.name && name != "" {
			out = append(out, name)
		}
	}
	return out, nil
}

// list returns every element of s in tb; a missing set or table is empty.
func (c *Conn) list(tb tableID, s *setDef) ([]elem, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, tb.name)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, s.name)
	b, _ := ae.Encode()
	data, err := c.dump("list set "+s.name, netlink.Message{
		Header: netlink.Header{Type: nftType(unix.NFT_MSG_GETSETELEM)},
		Data:   append(nfgen(tb.family, 0), b...),
	})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, err
	}
	var out []elem
	for _, d := range data {
		es, err := decodeElems(s, d)
		if err != nil {
			return nil, fmt.Errorf("decode set %s: %w", s.name, err)
		}
		out = append(out, es...)
	}
	return out, nil
}

// remove deletes what tag owns in one transaction: among known (looked up
// by key) when given, else among every element of the table's sets that
// want selects. Nothing found means no transaction at all, so a repeated
// DEL costs one lookup.
func (c *Conn) remove(t *tableDef, op, tag string, known []elem, want func(*setDef) bool) error {
	return c.removeTagged(t.id(), op, tag, known, func() ([]*setDef, error) { return c.sets(t, want) })
}

// removeTagged deletes what tag owns in tb in one transaction: among known
// (looked up by key) when given, else among every element of the sets that
// all returns. Nothing found means no transaction.
func (c *Conn) removeTagged(tb tableID, op, tag string, known []elem, all setLister) error {
	for attempt := 0; ; attempt++ {
		var found []elem
		if known != nil {
			cur, err := c.get(tb, known)
			if err != nil {
				return err
			}
			for _, g := range cur {
				if g != nil && g.Tag == tag {
					found = append(found, *g)
				}
			}
		} else {
			sets, err := all()
			if err != nil {
				return err
			}
			for _, s := range sets {
				es, err := c.list(tb, s)
				if err != nil {
					return err
				}
				for _, e := range es {
					if e.Tag == tag {
						found = append(found, e)
					}
				}
			}
		}
		found = dedup(found)
		if len(found) == 0 {
			return nil
		}
		err := c.transact(op, elemMsgs(tb, unix.NFT_MSG_DELSETELEM, 0, found, false))
		if errors.Is(err, unix.ENOENT) && attempt == 0 {
			continue // something else removed one meanwhile: look again
		}
		return err
	}
}

// check verifies that every element of want is present with its tag and
// value.
func (c *Conn) check(t *tableDef, want []elem) error {
	if len(want) == 0 {
		return nil
	}
	st, err := c.state(t)
	if err != nil {
		return fmt.Errorf("look up nftables table %s: %w", t.name(), err)
	}
	if !st.exists {
		return fmt.Errorf("nftables table %s does not exist", t.name())
	}
	if st.comment != t.comment() {
		return &SchemaError{Table: t.name(), Comment: st.comment, Want: t.comment()}
	}
	if !st.complete(t) {
		return fmt.Errorf("nftables table %s is incomplete (a chain or set was deleted)", t.name())
	}
	return c.checkElems(t.id(), want)
}

// checkElems verifies that every element of want is in tb with its tag and
// value, naming each one that is not.
func (c *Conn) checkElems(tb tableID, want []elem) error {
	cur, err := c.get(tb, want)
	if err != nil {
		return err
	}
	var bad []string
	for i, w := range want {
		g := cur[i]
		switch {
		case g == nil:
			bad = append(bad, fmt.Sprintf("%s: missing %s", w.set.name, w))
		case g.Tag != w.Tag:
			bad = append(bad, fmt.Sprintf("%s: %s belongs to %q", w.set.name, w.keyText(), g.Tag))
		case !g.same(w):
			bad = append(bad, fmt.Sprintf("%s: have %s, want %s", w.set.name, g, w))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("nftables table %s: %s", tb, strings.Join(bad, "; "))
	}
	return nil
}

// gc removes, in one transaction, the elements of sets that belong to
// network but to none of the valid attachments. Elements of other networks
// and elements without a linen tag are left alone.
func (c *Conn) gc(t *tableDef, op, network string, valid []Attachment, want func(*setDef) bool) error {
	return c.gcTagged(t.id(), op, network, valid, func() ([]*setDef, error) { return c.sets(t, want) })
}

// gcTagged removes, in one transaction, the elements of the sets all
// returns (in tb) that belong to network but to none of the valid
// attachments.
func (c *Conn) gcTagged(tb tableID, op, network string, valid []Attachment, all setLister) error {
	keep := map[string]bool{}
	for _, a := range valid {
		keep[Owner{Network: network, ContainerID: a.ContainerID, IfName: a.IfName}.Tag()] = true
	}
	net := tagValue(network)
	for attempt := 0; ; attempt++ {
		sets, err := all()
		if err != nil {
			return err
		}
		var stale []elem
		for _, s := range sets {
			es, err := c.list(tb, s)
			if err != nil {
				return err
			}
			for _, e := range es {
				p, ok := parseTag(e.Tag)
				if !ok || p.net != net || keep[e.Tag] {
					continue
				}
				stale = append(stale, e)
			}
		}
		if len(stale) == 0 {
			return nil
		}
		err = c.transact(op, elemMsgs(tb, unix.NFT_MSG_DELSETELEM, 0, stale, false))
		if errors.Is(err, unix.ENOENT) && attempt < 2 {
			continue // a DEL removed one meanwhile: look again
		}
		return err
	}
}
