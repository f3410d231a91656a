package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Conntrack entries are removed over the same socket (ctnetlink is another
// nfnetlink subsystem), so this costs no socket of its own — whose release
// could wait on nf_tables' destroy work like any netfilter socket.

const (
	ctMsgNew    = 0 // IPCTNL_MSG_CT_NEW
	ctMsgGet    = 1 // IPCTNL_MSG_CT_GET
	ctMsgDelete = 2 // IPCTNL_MSG_CT_DELETE

	ctaTupleOrig = 1  // CTA_TUPLE_ORIG
	ctaZone      = 18 // CTA_ZONE
	ctaFilter    = 25 // CTA_FILTER

	ctaTupleIP    = 1 // CTA_TUPLE_IP
	ctaTupleProto = 2 // CTA_TUPLE_PROTO
	ctaIPv4Dst    = 2 // CTA_IP_V4_DST
	ctaIPv6Dst    = 4 // CTA_IP_V6_DST
	ctaProtoNum   = 1 // CTA_PROTO_NUM
	ctaProtoDport = 3 // CTA_PROTO_DST_PORT

	ctaFilterOrigFlags  = 1 // CTA_FILTER_ORIG_FLAGS
	ctaFilterReplyFlags = 2 // CTA_FILTER_REPLY_FLAGS

	ctFilterIPDst      = 1 << 1 // CTA_FILTER_FLAG(CTA_IP_DST)
	ctFilterProtoNum   = 1 << 3 // CTA_FILTER_FLAG(CTA_PROTO_NUM)
	ctFilterProtoDport = 1 << 5 // CTA_FILTER_FLAG(CTA_PROTO_DST_PORT)
)

func ctType(msg int) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | msg)
}

// ctMatch selects conntrack entries by their original direction.
type ctMatch struct {
	family byte // AF_INET or AF_INET6
	proto  Protocol
	dport  uint16
	daddr  netip.Addr // zero: any
}

func (m ctMatch) tuple(ae *netlink.AttributeEncoder) error {
	if m.daddr.IsValid() {
		ae.Nested(ctaTupleIP, func(ae *netlink.AttributeEncoder) error {
			if m.daddr.Is4() {
				ae.Bytes(ctaIPv4Dst, m.daddr.AsSlice())
			} else {
				ae.Bytes(ctaIPv6Dst, m.daddr.AsSlice())
			}
			return nil
		})
	}
	ae.Nested(ctaTupleProto, func(ae *netlink.AttributeEncoder) error {
		ae.Uint8(ctaProtoNum, uint8(m.proto))
		ae.Bytes(ctaProtoDport, port(m.dport))
		return nil
	})
	return nil
}

// matches reports whether an entry's original tuple (the attributes
// nested in CTA_TUPLE_ORIG) goes to m's protocol, port and address.
func (m ctMatch) matches(orig []byte) bool {
	ad, err := netlink.NewAttributeDecoder(orig)
	if err != nil {
		return false
	}
	var proto, portOK, addrOK bool
	addrOK = !m.daddr.IsValid()
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleIP:
			ad.Nested(func(nd *netlink.AttributeDecoder) error {
				for nd.Next() {
					if t := nd.Type(); (t == ctaIPv4Dst || t == ctaIPv6Dst) && m.daddr.IsValid() {
						a, ok := netip.AddrFromSlice(nd.Bytes())
						addrOK = ok && a.Unmap() == m.daddr
					}
				}
				return nil
			})
		case ctaTupleProto:
			ad.Nested(func(nd *netlink.AttributeDecoder) error {
				for nd.Next() {
					switch nd.Type() {
					case ctaProtoNum:
						b := nd.Bytes()
						proto = len(b) == 1 && Protocol(b[0]) == m.proto
					case ctaProtoDport:
						b := nd.Bytes()
						portOK = len(b) == 2 && binary.BigEndian.Uint16(b) == m.dport
					}
				}
				return nil
			})
		}
	}
	return ad.Err() == nil && proto && portOK && addrOK
}

// DeleteConntrack removes the conntrack entries whose original direction
// goes to proto port dport (and to daddr, when valid) in the given family
// (AF_INET or AF_INET6), and returns how many it removed. The kernel does
// the filtering (a filtered dump, Linux 5.10 and later), so the cost does
// not include copying the whole table out; every entry is checked again
// before it is deleted, for kernels that ignore the filter.
func (c *Conn) DeleteConntrack(family byte, proto Protocol, dport uint16, daddr netip.Addr) (int, error) {
	m := ctMatch{family: family, proto: proto, dport: dport, daddr: daddr.Unmap()}
	if m.daddr.IsValid() && m.daddr.Is4() != (family == unix.AF_INET) {
		return 0, fmt.Errorf("delete conntrack: address %s is not of family %d", daddr, family)
	}
	entries, err := c.ctDump(m)
	if err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		return 0, nil
	}
	reqs := make([]netlink.Message, len(entries))
	for i, e := range entries {
		reqs[i] = netlink.Message{
			Header: netlink.Header{Type: ctType(ctMsgDelete)},
			Data:   append(nfgen(family, 0), e...),
		}
	}
	res, err := c.query("delete conntrack entry", reqs)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range res {
		switch {
		case r.err == nil:
			n++
		case errors.Is(r.err, unix.ENOENT):
			// Expired meanwhile.
		default:
			return n, r.err
		}
	}
	return n, nil
}

// ctDump returns, for each matching entry, the attributes that identify it
// for deletion (its original tuple, and its zone if any).
func (c *Conn) ctDump(m ctMatch) ([][]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Nested(ctaTupleOrig, m.tuple)
	flags := uint32(ctFilterProtoNum | ctFilterProtoDport)
	if m.daddr.IsValid() {
		flags |= ctFilterIPDst
	}
	ae.Nested(ctaFilter, func(ae *netlink.AttributeEncoder) error {
		ae.ByteOrder = binary.NativeEndian // NLA_U32 in host order
		ae.Uint32(ctaFilterOrigFlags, flags)
		ae.Uint32(ctaFilterReplyFlags, 0)
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	data, err := c.dump("list conntrack", netlink.Message{
		Header: netlink.Header{Type: ctType(ctMsgGet)},
		Data:   append(nfgen(m.family, 0), b...),
	})
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, d := range data {
		if len(d) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(d[4:])
		if err != nil {
			return nil, err
		}
		ident := netlink.NewAttributeEncoder()
		found := false
		for ad.Next() {
			switch ad.Type() {
			case ctaTupleOrig:
				// The kernel filters the dump, but one that does not
				// know CTA_FILTER ignores it and returns every entry:
				// only what matches is deleted, whatever came back.
				if !m.matches(ad.Bytes()) {
					continue
				}
				ident.Bytes(ctaTupleOrig|netlink.Nested, ad.Bytes())
				found = true
			case ctaZone:
				ident.Bytes(ctaZone, ad.Bytes())
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		b, err := ident.Encode()
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// DeleteStaleUDPConntrack removes conntrack entries of e's UDP host ports:
// datagrams sent before the mapping existed created entries without
// address translation, and later datagrams of the same flow would keep
// using them. It returns the number of entries removed.
func DeleteStaleUDPConntrack(c *Conn, e PortMapEntry) (int, error) {
	total := 0
	for _, m := range e.Mappings {
		if m.Protocol != UDP {
			continue
		}
		hip := m.HostIP.Unmap()
		var daddr netip.Addr
		if hip.IsValid() && !hip.IsUnspecified() {
			daddr = hip
		}
		for _, fam := range []struct {
			af  byte
			has bool
			v4  bool
		}{{unix.AF_INET, e.IPv4.IsValid(), true}, {unix.AF_INET6, e.IPv6.IsValid(), false}} {
			if !fam.has || (hip.IsValid() && hip.Is4() != fam.v4) {
				continue
			}
			n, err := c.DeleteConntrack(fam.af, UDP, m.HostPort, daddr)
			total += n
			if err != nil {
				return total, fmt.Errorf("delete stale conntrack entries of %s: %w", m, err)
			}
		}
	}
	return total, nil
}
