package nft

import (
	"fmt"
	"net/netip"
	"strings"
)

// MasqEntry asks for masquerading of traffic from IP (a pod address) to
// anything outside Subnet (the pod's own network) except multicast.
type MasqEntry struct {
	Network     string
	ContainerID string
	IfName      string
	IP          netip.Addr
	Subnet      netip.Prefix
}

func (e MasqEntry) owner() Owner { return Owner{e.Network, e.ContainerID, e.IfName} }

// masqElems returns the two elements of each entry: the pod address in
// masq4/6 and (pod address . subnet address) in masqskip4/6_<prefix length>.
func masqElems(tag func(MasqEntry) string, entries []MasqEntry) ([]elem, error) {
	var out []elem
	for i, e := range entries {
		ip := e.IP.Unmap()
		sub := e.Subnet
		if sub.IsValid() && sub.Addr().Is4In6() && sub.Bits() >= 96 {
			sub = netip.PrefixFrom(sub.Addr().Unmap(), sub.Bits()-96)
		}
		switch {
		case !ip.IsValid():
			return nil, fmt.Errorf("masquerade entry %d: no IP address", i)
		case !sub.IsValid():
			return nil, fmt.Errorf("masquerade entry %d: no subnet for %s", i, ip)
		case sub.Addr().Is4() != ip.Is4():
			return nil, fmt.Errorf("masquerade entry %d: subnet %s and address %s differ in family", i, sub, ip)
		}
		sub = sub.Masked()
		masq, kind := inetTable.set("masq4"), dynMasqskip4
		if ip.Is6() {
			masq, kind = inetTable.set("masq6"), dynMasqskip6
		}
		skip := dynSet(kind, sub.Bits())
		tg := tag(e)
		out = append(out,
			elem{set: masq, Key: ip.AsSlice(), Tag: tg},
			elem{set: skip, Key: key(skip.key, ip.AsSlice(), sub.Addr().AsSlice()), Tag: tg})
	}
	return dedup(out), nil
}

func isMasqSet(s *setDef) bool { return strings.HasPrefix(s.name, "masq") }

func ownTag(e MasqEntry) string { return e.owner().Tag() }

// AddMasq starts masquerading for entries, in one transaction.
func AddMasq(c *Conn, entries []MasqEntry) error {
	es, err := masqElems(ownTag, entries)
	if err != nil {
		return err
	}
	return c.add(inetTable, "add masquerade", es)
}

// DelMasq stops masquerading for the attachment, in one transaction, and
// succeeds when there is nothing to remove. known (the entries ADD was
// given, if the caller still knows them) turns the search into direct
// lookups; without it the masquerade sets are listed and filtered by tag.
func DelMasq(c *Conn, network, containerID, ifName string, known []MasqEntry) error {
	tag := Owner{network, containerID, ifName}.Tag()
	var ks []elem
	if len(known) > 0 {
		var err error
		if ks, err = masqElems(func(MasqEntry) string { return tag }, known); err != nil {
			ks = nil // unusable hints: search by tag instead
		}
	}
	return c.remove(inetTable, "delete masquerade", tag, ks, isMasqSet)
}

// CheckMasq verifies that masquerading for entries is in place.
func CheckMasq(c *Conn, entries []MasqEntry) error {
	es, err := masqElems(ownTag, entries)
	if err != nil {
		return err
	}
	return c.check(inetTable, es)
}

// GCMasq removes masquerading of network's attachments that are not in valid.
func GCMasq(c *Conn, network string, valid []Attachment) error {
	return c.gc(inetTable, "garbage-collect masquerade", network, valid, isMasqSet)
}
