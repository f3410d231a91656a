package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// PortMapping forwards HostPort on the host to ContainerPort in the pod.
type PortMapping struct {
	Protocol      Protocol
	HostPort      uint16
	ContainerPort uint16
	// HostIP limits the mapping to traffic addressed to this host address.
	// The zero Addr means every local address of both families; an
	// unspecified address (0.0.0.0, ::) means every local address of that
	// family.
	HostIP netip.Addr
}

func (m PortMapping) String() string {
	s := fmt.Sprintf("%d/%s", m.HostPort, m.Protocol)
	if m.HostIP.IsValid() && !m.HostIP.IsUnspecified() {
		s = netip.AddrPortFrom(m.HostIP, m.HostPort).String() + "/" + m.Protocol.String()
	}
	return s
}

// PortMapEntry is the port mappings of one attachment.
type PortMapEntry struct {
	Network     string
	ContainerID string
	IfName      string
	// IPv4 and IPv6 are the pod's addresses with the length of their
	// subnet (10.22.0.5/24); the zero Prefix means none of that family.
	IPv4, IPv6 netip.Prefix
	Mappings   []PortMapping
	// SNAT masquerades connections from the pod's own subnet (hairpin: a
	// pod reaching its own or a neighbour's host port through the host)
	// and, for IPv4, from 127.0.0.0/8 (host ports on localhost).
	SNAT bool
	// MasqAll masquerades every connection to the mapped ports.
	MasqAll bool
}

func (e PortMapEntry) owner() Owner { return Owner{e.Network, e.ContainerID, e.IfName} }

func port(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

var (
	loopback4 = netip.MustParsePrefix("127.0.0.0/8")
	any4      = netip.MustParsePrefix("0.0.0.0/0")
	any6      = netip.MustParsePrefix("::/0")
)

// podFamily is the pod's address of one family and the sets it uses.
type podFamily struct {
	pod      netip.Prefix
	hp, hpip *setDef
	snatKind int
	loopback bool
	all      netip.Prefix
}

func (e PortMapEntry) families() (v4, v6 *podFamily) {
	if p := e.IPv4; p.IsValid() {
		v4 = &podFamily{pod: p, hp: inetTable.set("hp4"), hpip: inetTable.set("hp4ip"),
			snatKind: dynHpsnat4, loopback: true, all: any4}
	}
	if p := e.IPv6; p.IsValid() {
		v6 = &podFamily{pod: p, hp: inetTable.set("hp6"), hpip: inetTable.set("hp6ip"),
			snatKind: dynHpsnat6, all: any6}
	}
	return v4, v6
}

// (source network . pod address . container port) in hpsnat4/6_<source
// prefix length>: connections from src to the pod's port are masqueraded.
func snatElem(f *podFamily, src netip.Prefix, cport uint16, tag string) elem {
	s := dynSet(f.snatKind, src.Bits())
	return elem{set: s, Key: key(s.key, src.Masked().Addr().AsSlice(), f.pod.Addr().AsSlice(), port(cport)), Tag: tag}
}

// portMapElems returns the elements of e and, for each, the index of the
// mapping it comes from (-1 for shared masquerade elements). With
// allVariants the masquerade elements of both the SNAT and the MasqAll
// settings are included (for lookups that must not depend on them).
func portMapElems(e PortMapEntry, tag string, allVariants bool) ([]elem, []int, error) {
	if v4, v6 := e.IPv4, e.IPv6; (v4.IsValid() && !v4.Addr().Is4()) || (v6.IsValid() && !v6.Addr().Is6()) {
		return nil, nil, fmt.Errorf("port mappings of %s: IPv4 %s / IPv6 %s: wrong family", e.ContainerID, v4, v6)
	}
	v4, v6 := e.families()
	if v4 == nil && v6 == nil {
		return nil, nil, errors.New("port mappings: the pod has no IP address")
	}
	var out []elem
	var from []int
	for i, m := range e.Mappings {
		if m.HostPort == 0 || m.ContainerPort == 0 {
			return nil, nil, fmt.Errorf("port mapping %d: port 0", i)
		}
		if m.Protocol != TCP && m.Protocol != UDP && m.Protocol != SCTP {
			return nil, nil, fmt.Errorf("port mapping %d: protocol %s not supported", i, m.Protocol)
		}
		hip := m.HostIP.Unmap()
		fams := []*podFamily{v4, v6}
		specific := hip.IsValid() && !hip.IsUnspecified()
		if hip.IsValid() {
			if hip.Is4() {
				fams = []*podFamily{v4}
			} else {
				fams = []*podFamily{v6}
			}
			if fams[0] == nil {
				fam := "IPv4"
				if hip.Is6() {
					fam = "IPv6"
				}
				return nil, nil, fmt.Errorf("port mapping %d: host address %s but the pod has no %s address", i, hip, fam)
			}
		}
		for _, f := range fams {
			if f == nil {
				continue
			}
			data := key(f.hp.data, f.pod.Addr().AsSlice(), port(m.ContainerPort))
			if specific {
				out = append(out, elem{set: f.hpip, Key: key(f.hpip.key, hip.AsSlice(), []byte{byte(m.Protocol)}, port(m.HostPort)), Data: data, Tag: tag})
			} else {
				out = append(out, elem{set: f.hp, Key: key(f.hp.key, []byte{byte(m.Protocol)}, port(m.HostPort)), Data: data, Tag: tag})
			}
			from = append(from, i)
			if e.MasqAll || allVariants {
				out = append(out, snatElem(f, f.all, m.ContainerPort, tag))
				from = append(from, -1)
			}
			if (e.SNAT && !e.MasqAll) || allVariants {
				out = append(out, snatElem(f, f.pod, m.ContainerPort, tag))
				from = append(from, -1)
				if f.loopback {
					out = append(out, snatElem(f, loopback4, m.ContainerPort, tag))
					from = append(from, -1)
				}
			}
		}
	}
	// Several mappings to one container port share masquerade elements.
	seen := map[string]bool{}
	var es []elem
	var idx []int
	for i, el := range out {
		if seen[el.id()] {
			if from[i] >= 0 {
				return nil, nil, fmt.Errorf("port mapping %d: %s duplicates an earlier mapping", from[i], e.Mappings[from[i]])
			}
			continue
		}
		seen[el.id()] = true
		es = append(es, el)
		idx = append(idx, from[i])
	}
	return es, idx, nil
}

func isPortMapSet(s *setDef) bool { return strings.HasPrefix(s.name, "hp") }

// PortConflictError reports a host port that another attachment holds.
type PortConflictError struct {
	Mapping int // index in PortMapEntry.Mappings
	PortMapping
	Target    string // where the port goes now, e.g. "10.22.0.7:80"
	Network   string
	Container string
	IfName    string
}

func (e *PortConflictError) Error() string {
	return fmt.Sprintf("host port %s is already mapped to %s by container %q (interface %q, network %q)",
		e.PortMapping, e.Target, e.Container, e.IfName, e.Network)
}

// addrPortText turns a map value "10.22.0.7 . 80" into "10.22.0.7:80".
func addrPortText(v string) string {
	a, p, ok := strings.Cut(v, " . ")
	if !ok {
		return v
	}
	addr, err1 := netip.ParseAddr(a)
	n, err2 := strconv.ParseUint(p, 10, 16)
	if err1 != nil || err2 != nil {
		return v
	}
	return netip.AddrPortFrom(addr, uint16(n)).String()
}

// AddPortMaps installs e's port mappings in one transaction. A host port
// that another attachment holds fails the whole call with a
// *PortConflictError and changes nothing.
func AddPortMaps(c *Conn, e PortMapEntry) error {
	tag := e.owner().Tag()
	es, idx, err := portMapElems(e, tag, false)
	if err != nil {
		return err
	}
	err = c.add(inetTable, "add port mappings", es)
	var ce *setConflict
	if errors.As(err, &ce) {
		for i, el := range es {
			if idx[i] >= 0 && el.set.name == ce.Set && el.keyText() == ce.Key {
				return &PortConflictError{Mapping: idx[i], PortMapping: e.Mappings[idx[i]],
					Target: addrPortText(ce.Value), Network: ce.Network, Container: ce.Container, IfName: ce.IfName}
			}
		}
	}
	return err
}

// DelPortMaps removes the attachment's port mappings in one transaction;
// nothing to remove is success. known (what ADD was given, when the caller
// still has it) makes it a handful of direct lookups; without it the host
// port sets are listed and filtered by tag.
func DelPortMaps(c *Conn, network, containerID, ifName string, known *PortMapEntry) error {
	tag := Owner{network, containerID, ifName}.Tag()
	var ks []elem
	if known != nil && len(known.Mappings) > 0 {
		es, _, err := portMapElems(*known, tag, true)
		if err == nil {
			ks = es
		}
	}
	return c.remove(inetTable, "delete port mappings", tag, ks, isPortMapSet)
}

// CheckPortMaps verifies that e's port mappings are installed.
func CheckPortMaps(c *Conn, e PortMapEntry) error {
	es, _, err := portMapElems(e, e.owner().Tag(), false)
	if err != nil {
		return err
	}
	return c.check(inetTable, es)
}

// GCPortMaps removes port mappings of network's attachments not in valid.
func GCPortMaps(c *Conn, network string, valid []Attachment) error {
	return c.gc(inetTable, "garbage-collect port mappings", network, valid, isPortMapSet)
}
