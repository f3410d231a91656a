package nft

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Owner is the attachment an element belongs to. Every element linen adds
// carries its owner in the element comment, so that DEL can find what an
// attachment added without any other state, and GC can find elements of
// attachments that no longer exist.
type Owner struct {
	Network     string
	ContainerID string
	IfName      string
}

// Attachment is one (container ID, interface) pair of cni.dev/valid-attachments.
type Attachment struct {
	ContainerID string
	IfName      string
}

// Tag is the comment that marks o's elements:
// `net=<network> id=<container ID> if=<ifname>`. A value that is longer
// than 64 bytes or holds characters that do not belong in a comment is
// replaced by `#` and 32 hex digits of its SHA-256, so a tag always fits
// the kernel's 256-byte user data and always parses.
func (o Owner) Tag() string {
	return "net=" + tagValue(o.Network) + " id=" + tagValue(o.ContainerID) + " if=" + tagValue(o.IfName)
}

func tagValue(v string) string {
	ok := len(v) > 0 && len(v) <= 64 && v[0] != '#'
	for i := 0; ok && i < len(v); i++ {
		c := v[i]
		ok = c > ' ' && c < 0x7f && c != '"' && c != '\\' && c != '='
	}
	if ok {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "#" + hex.EncodeToString(sum[:16])
}

// parsedTag is a tag split into its (encoded) values.
type parsedTag struct{ net, id, ifname string }

func parseTag(s string) (parsedTag, bool) {
	var p parsedTag
	parts := strings.Split(s, " ")
	if len(parts) != 3 {
		return p, false
	}
	for i, want := range []string{"net", "id", "if"} {
		k, v, ok := strings.Cut(parts[i], "=")
		if !ok || k != want || v == "" {
			return p, false
		}
		switch i {
		case 0:
			p.net = v
		case 1:
			p.id = v
		case 2:
			p.ifname = v
		}
	}
	return p, true
}

// elem is one element of one of linen's sets or maps, as plain data.
type elem struct {
	set  *setDef
	Key  []byte
	Data []byte // value, for maps
	Tag  string // owner tag (element comment)
}

// keyText renders the key as nft does.
func (e elem) keyText() string {
	ks := split(e.set.key, e.Key)
	if ks == nil {
		return fmt.Sprintf("0x%x", e.Key)
	}
	var p []string
	for i, f := range e.set.key {
		p = append(p, formatField(f, ks[i]))
	}
	return strings.Join(p, " . ")
}

func (e elem) dataText() string {
	ds := split(e.set.data, e.Data)
	if ds == nil {
		return fmt.Sprintf("0x%x", e.Data)
	}
	var p []string
	for i, f := range e.set.data {
		p = append(p, formatField(f, ds[i]))
	}
	return strings.Join(p, " . ")
}

// String renders the element as nft lists it: `key comment "tag" : data`.
func (e elem) String() string {
	s := e.keyText()
	if e.Tag != "" {
		s += fmt.Sprintf(" comment %q", e.Tag)
	}
	if e.set.isMap() {
		s += " : " + e.dataText()
	}
	return s
}

// command renders the element as an nft command that adds it.
func (e elem) command(t *tableDef) string {
	return fmt.Sprintf("add element %s %s %s { %s }", t.familyName, TableName, e.set.name, e)
}

// same reports whether two elements have equal key and value.
func (e elem) same(o elem) bool {
	return e.set == o.set && string(e.Key) == string(o.Key) && string(e.Data) == string(o.Data)
}

func (e elem) id() string { return e.set.name + "\x00" + string(e.Key) }

// dedup drops repeated elements (same set and key).
func dedup(es []elem) []elem {
	seen := map[string]bool{}
	out := es[:0:0]
	for _, e := range es {
		if seen[e.id()] {
			continue
		}
		seen[e.id()] = true
		out = append(out, e)
	}
	return out
}

// Netlink encoding of elements.

const nftaTableUserdata = 6 // NFTA_TABLE_USERDATA

// elemMsg builds one NEWSETELEM/DELSETELEM/GETSETELEM message for elements
// of one set of table tb. full includes values and comments (for adds).
func elemMsg(tb tableID, s *setDef, typ int, flags netlink.HeaderFlags, es []elem, full bool) netlink.Message {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, tb.name)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, s.name)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(ae *netlink.AttributeEncoder) error {
		for _, e := range es {
			ae.Nested(unix.NFTA_LIST_ELEM, func(ae *netlink.AttributeEncoder) error {
				ae.Nested(unix.NFTA_SET_ELEM_KEY, func(ae *netlink.AttributeEncoder) error {
					ae.Bytes(unix.NFTA_DATA_VALUE, e.Key)
					return nil
				})
				if full && len(e.Data) > 0 {
					ae.Nested(unix.NFTA_SET_ELEM_DATA, func(ae *netlink.AttributeEncoder) error {
						ae.Bytes(unix.NFTA_DATA_VALUE, e.Data)
						return nil
					})
				}
				if full && e.Tag != "" {
					ae.Bytes(unix.NFTA_SET_ELEM_USERDATA,
						userdata.AppendString(nil, userdata.NFTNL_UDATA_SET_ELEM_COMMENT, e.Tag))
				}
				return nil
			})
		}
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		// Only oversized attributes fail, and ours are bounded.
		panic(fmt.Sprintf("nft: encode elements: %v", err))
	}
	return netlink.Message{
		Header: netlink.Header{Type: nftType(typ), Flags: flags},
		Data:   append(nfgen(tb.family, 0), b...),
	}
}

// maxPerMsg bounds elements per message, keeping messages well below the
// netlink size limits even for a GC of thousands of elements.
const maxPerMsg = 128

// elemMsgs groups elements by set, in the order sets first appear.
func elemMsgs(tb tableID, typ int, flags netlink.HeaderFlags, es []elem, full bool) []netlink.Message {
	var order []*setDef
	by := map[*setDef][]elem{}
	for _, e := range es {
		if _, ok := by[e.set]; !ok {
			order = append(order, e.set)
		}
		by[e.set] = append(by[e.set], e)
	}
	var msgs []netlink.Message
	for _, s := range order {
		list := by[s]
		for len(list) > 0 {
			n := min(len(list), maxPerMsg)
			msgs = append(msgs, elemMsg(tb, s, typ, flags, list[:n], full))
			list = list[n:]
		}
	}
	return msgs
}

// decodeElems parses a NEWSETELEM message (nfgenmsg included) of set s.
func decodeElems(s *setDef, payload []byte) ([]elem, error) {
	if len(payload) < 4 {
		return nil, fmt.Errorf("short set element message")
	}
	ad, err := netlink.NewAttributeDecoder(payload[4:])
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	var out []elem
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				if list.Type() != unix.NFTA_LIST_ELEM {
					continue
				}
				e := elem{set: s}
				list.Nested(func(el *netlink.AttributeDecoder) error {
					for el.Next() {
						switch el.Type() {
						case unix.NFTA_SET_ELEM_KEY:
							e.Key = dataValue(el.Bytes())
						case unix.NFTA_SET_ELEM_DATA:
							e.Data = dataValue(el.Bytes())
						case unix.NFTA_SET_ELEM_USERDATA:
							e.Tag = udataComment(el.Bytes())
						}
					}
					return nil
				})
				out = append(out, e)
			}
			return nil
		})
	}
	return out, ad.Err()
}

// udataComment returns the comment (TLV type 0, NUL-terminated string) of
// nftables user data; it tolerates malformed input from other tools.
func udataComment(b []byte) string {
	for len(b) >= 2 {
		typ, n := b[0], int(b[1])
		if len(b) < 2+n {
			return ""
		}
		if typ == 0 {
			return strings.TrimRight(string(b[2:2+n]), "\x00")
		}
		b = b[2+n:]
	}
	return ""
}

// dataValue extracts NFTA_DATA_VALUE from a nested nft_data attribute.
func dataValue(b []byte) []byte {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_DATA_VALUE {
			return append([]byte(nil), ad.Bytes()...)
		}
	}
	return nil
}
