package hostdevice

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	vnl "github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nl"
)

// setNS moves the interface with index idx from the namespace of the
// calling thread into the namespace open as fd, naming it name there: one
// RTM_NEWLINK carrying IFLA_NET_NS_FD and IFLA_IFNAME. The kernel moves the
// device under its current name when that is free in the target namespace
// and renames it right after; when the current name is taken there, it
// moves it under name directly. Either way the device is never visible
// under a name that clashes, and no temporary namespace is needed.
func setNS(idx, fd int, name string) error {
	req := vnl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := vnl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(idx)
	req.AddData(msg)
	req.AddData(vnl.NewRtAttr(unix.IFLA_NET_NS_FD, vnl.Uint32Attr(uint32(fd))))
	req.AddData(vnl.NewRtAttr(unix.IFLA_IFNAME, vnl.ZeroTerminated(name)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// explainMove turns the kernel's answer to a move into a message.
func explainMove(err error, dev, to, where string) error {
	switch {
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("move %q into %s as %q: an interface of that name exists there: %w", dev, where, to, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("move %q into %s as %q: the kernel keeps this device in its namespace (bridges, loopback, VRFs and some tunnels cannot move): %w", dev, where, to, err)
	}
	return fmt.Errorf("move %q into %s as %q: %w", dev, where, to, err)
}

// giveBack moves the pod's interface link (in podNS, reached through pod)
// back to the node under name and restores what st recorded (st may be
// nil: a device moved by a plugin that keeps only the alias).
func giveBack(host *netlink.Handle, podNS *netns.NS, link netlink.Link, name string, st *state) error {
	cur, err := netns.Current()
	if err != nil {
		return fmt.Errorf("open the node's network namespace: %w", err)
	}
	defer cur.Close()
	merr := podNS.Do(func() error { return setNS(link.Attrs().Index, cur.Fd(), name) })
	if merr != nil {
		// The kernel may have moved the device and failed the rename.
		if l, lerr := host.LinkByName(link.Attrs().Name); lerr == nil && sameMAC(l.Attrs().HardwareAddr, link.Attrs().HardwareAddr) {
			return fmt.Errorf("return %q to the node: it is there as %q, but not as %q: %w", link.Attrs().Name, l.Attrs().Name, name, merr)
		}
		return explainMove(merr, link.Attrs().Name, name, "the node's network namespace")
	}
	l, err := host.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %q on the node after returning it: %w", name, err)
	}
	return restore(host, l, name, st)
}

// restore brings a device back on the node to what st recorded: name,
// MAC, MTU, alias, up. Without a record it only clears the alias ADD set.
func restore(h *netlink.Handle, l netlink.Link, name string, st *state) error {
	var errs []error
	at := l.Attrs()
	if at.Name != name {
		if err := h.LinkSetDown(l); err != nil {
			errs = append(errs, fmt.Errorf("set %q down: %w", at.Name, err))
		}
		if err := h.LinkSetName(l, name); err != nil {
			return errors.Join(append(errs, fmt.Errorf("rename %q back to %q: %w", at.Name, name, err))...)
		}
	}
	alias := ""
	if st != nil {
		alias = st.Alias
		if hw, err := net.ParseMAC(st.MAC); err == nil && st.MAC != "" && !sameMAC(hw, at.HardwareAddr) {
			if err := h.LinkSetHardwareAddr(l, hw); err != nil {
				errs = append(errs, fmt.Errorf("restore MAC %s of %q: %w", hw, name, err))
			}
		}
		if st.MTU > 0 && at.MTU != st.MTU {
			if err := h.LinkSetMTU(l, st.MTU); err != nil {
				errs = append(errs, fmt.Errorf("restore MTU %d of %q: %w", st.MTU, name, err))
			}
		}
	}
	if at.Alias != alias {
		if err := h.LinkSetAlias(l, alias); err != nil {
			errs = append(errs, fmt.Errorf("restore the alias of %q: %w", name, err))
		}
	}
	if st != nil && st.Up {
		if err := h.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("set %q up: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// findOnNode looks for the recorded device among the node's interfaces:
// under its own name (already back), or by the alias ADD gave it (the
// kernel returns a physical device to the initial namespace when the
// pod's namespace goes away, keeping the pod's name for it, or calling it
// "dev<N>" when that name is taken on the node). The MAC, when recorded,
// must match too, unless a single device carries the alias.
func findOnNode(h *netlink.Handle, st *state) (netlink.Link, error) {
	links, err := nl.Retry(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list the node's interfaces: %w", err)
	}
	hw, _ := net.ParseMAC(st.MAC)
	match := func(l netlink.Link) bool { return hw == nil || sameMAC(hw, l.Attrs().HardwareAddr) }
	for _, l := range links {
		if l.Attrs().Name == st.Name && match(l) {
			return l, nil
		}
	}
	var byAlias []netlink.Link
	for _, l := range links {
		if l.Attrs().Alias == st.Name {
			if match(l) {
				return l, nil
			}
			byAlias = append(byAlias, l)
		}
	}
	// The pod may have changed the MAC: one device with the alias will do.
	if len(byAlias) == 1 {
		return byAlias[0], nil
	}
	return nil, nil
}

func sameMAC(a, b net.HardwareAddr) bool {
	return strings.EqualFold(a.String(), b.String())
}
