package nft

import (
	"fmt"
	"net"
	"strings"
)

// SpoofEntry asks the bridge to drop frames that enter from HostIf (the
// host side of a pod's veth) with a source MAC other than MAC.
type SpoofEntry struct {
	Network     string
	ContainerID string
	IfName      string
	HostIf      string
	MAC         net.HardwareAddr
}

func ifnameBytes(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

func spoofElems(tag string, e SpoofEntry) ([]elem, error) {
	if e.HostIf == "" || len(e.HostIf) > 15 {
		return nil, fmt.Errorf("spoof check: host interface name %q must have 1 to 15 bytes", e.HostIf)
	}
	if len(e.MAC) != 6 {
		return nil, fmt.Errorf("spoof check: %q is not an Ethernet address", e.MAC)
	}
	ifs, ok := bridgeTable.set("spoofifs"), bridgeTable.set("spoofok")
	return []elem{
		{set: ifs, Key: ifnameBytes(e.HostIf), Tag: tag},
		{set: ok, Key: key(ok.key, ifnameBytes(e.HostIf), e.MAC), Tag: tag},
	}, nil
}

func isSpoofSet(s *setDef) bool { return strings.HasPrefix(s.name, "spoof") }

// AddSpoofCheck turns the MAC spoof check on for e.HostIf, in one transaction.
func AddSpoofCheck(c *Conn, e SpoofEntry) error {
	es, err := spoofElems(Owner{e.Network, e.ContainerID, e.IfName}.Tag(), e)
	if err != nil {
		return err
	}
	return c.add(bridgeTable, "add spoof check", es)
}

// DelSpoofCheck removes the attachment's spoof check in one transaction;
// nothing to remove is success. known (the entry ADD was given) makes it
// direct lookups; without it the spoof check sets are listed and filtered.
func DelSpoofCheck(c *Conn, network, containerID, ifName string, known *SpoofEntry) error {
	tag := Owner{network, containerID, ifName}.Tag()
	var ks []elem
	if known != nil {
		if es, err := spoofElems(tag, *known); err == nil {
			ks = es
		}
	}
	return c.remove(bridgeTable, "delete spoof check", tag, ks, isSpoofSet)
}

// CheckSpoofCheck verifies that e's spoof check is in place.
func CheckSpoofCheck(c *Conn, e SpoofEntry) error {
	es, err := spoofElems(Owner{e.Network, e.ContainerID, e.IfName}.Tag(), e)
	if err != nil {
		return err
	}
	return c.check(bridgeTable, es)
}

// GCSpoofCheck removes spoof checks of network's attachments not in valid.
func GCSpoofCheck(c *Conn, network string, valid []Attachment) error {
	return c.gc(bridgeTable, "garbage-collect spoof check", network, valid, isSpoofSet)
}
