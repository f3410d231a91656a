// Package nl holds the few netlink helpers linen's plugins share on top of
// vishvananda/netlink: veth creation straight into the pod namespace,
// not-found detection, and retries of dumps the kernel interrupted.
package nl

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/sysctl"
)

// IsNotFound reports whether err means the link does not exist.
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// Retry runs a dump up to five times while the kernel reports that the dump
// was interrupted by a concurrent change (NLM_F_DUMP_INTR).
func Retry[T any](fn func() (T, error)) (T, error) {
	var v T
	var err error
	for i := 0; i < 5; i++ {
		v, err = fn()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// RandomVethName returns "veth" followed by 8 random hex digits.
func RandomVethName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "veth" + hex.EncodeToString(b[:])
}

// Veth describes a pair whose host end lives in the namespace of the handle
// and whose pod end is created directly inside the pod namespace: one
// RTM_NEWLINK, no move between namespaces, no rename.
type Veth struct {
	PodNS   *netns.NS
	PodIf   string
	PodMAC  net.HardwareAddr // nil = kernel random
	MTU     int
	HostMAC net.HardwareAddr
	Master  int  // host-side master (bridge) index, 0 for none
	HostUp  bool // create the host end administratively up
	// HostNoIPv6 disables IPv6 on the host end before it comes up: a
	// bridge port forwards frames and needs no addresses of its own.
	// Left on, each port gets a link-local address, multicast and
	// link-local routes in the host's table and DAD, MLD and router
	// solicitations into the pod, and every later port event walks the
	// host's IPv6 routes: the cost of attaching a pod grows with the
	// number of ports.
	HostNoIPv6 bool
	HostAlias  string
}

// ErrPodIfExists is returned when the pod interface name is taken.
var ErrPodIfExists = errors.New("already exists in the pod network namespace")

// CreateVeth creates the pair and returns the host end. A host-name clash
// (random names) is retried; a clash in the pod namespace is ErrPodIfExists.
func CreateVeth(host, pod *netlink.Handle, v Veth) (netlink.Link, error) {
	for attempt := 0; attempt < 4; attempt++ {
		la := netlink.NewLinkAttrs()
		la.Name = RandomVethName()
		la.MTU = v.MTU
		la.MasterIndex = v.Master
		la.HardwareAddr = v.HostMAC
		if v.HostUp && !v.HostNoIPv6 {
			la.Flags = net.FlagUp
		}
		veth := &netlink.Veth{LinkAttrs: la, PeerName: v.PodIf, PeerNamespace: netlink.NsFd(v.PodNS.Fd()), PeerHardwareAddr: v.PodMAC}
		if v.MTU > 0 {
			veth.PeerMTU = uint32(v.MTU)
		}
		err := host.LinkAdd(veth)
		if err == nil {
			l, lerr := host.LinkByName(la.Name)
			if lerr != nil {
				// Not found by name (renamed by someone else at once,
				// or a failed request): deleting the pod end takes the
				// pair away all the same.
				if pl, perr := pod.LinkByName(v.PodIf); perr == nil {
					_ = pod.LinkDel(pl)
				}
				return nil, fmt.Errorf("find new veth %q: %w", la.Name, lerr)
			}
			if v.HostNoIPv6 {
				if err := hostNoIPv6(host, l, v.HostUp); err != nil {
					_ = host.LinkDel(l)
					return nil, err
				}
			}
			return l, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create veth pair %q/%q: %w", la.Name, v.PodIf, err)
		}
		if _, perr := pod.LinkByName(v.PodIf); perr == nil {
			return nil, fmt.Errorf("create interface %q: %w", v.PodIf, ErrPodIfExists)
		}
	}
	return nil, errors.New("create veth pair: no free host-side name after 4 attempts")
}

// hostNoIPv6 turns IPv6 off on the new host end l, then brings it up if up.
// The write goes through /proc/sys (the kernel takes disable_ipv6 through no
// other interface) and resolves in the calling thread's namespace, which is
// the host's: the one h is bound to. A kernel without IPv6 has no such file,
// which is fine.
func hostNoIPv6(h *netlink.Handle, l netlink.Link, up bool) error {
	name := l.Attrs().Name
	if err := sysctl.Set(sysctl.Link("ipv6", name, "disable_ipv6"), "1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if !up {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %q up: %w", name, err)
	}
	l.Attrs().Flags |= net.FlagUp
	return nil
}

// VethPeerIndex returns the peer ifindex of a veth (IFLA_LINK).
func VethPeerIndex(l netlink.Link) int {
	return l.Attrs().ParentIndex
}

// Handles opens a netlink handle in the calling thread's namespace (the
// host, for a plugin) and one bound to pod. close releases both.
func Handles(pod *netns.NS) (host, podH *netlink.Handle, close func(), err error) {
	host, err = netlink.NewHandle()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open netlink: %w", err)
	}
	podH, err = netlink.NewHandleAt(pod.Handle())
	if err != nil {
		host.Close()
		return nil, nil, nil, fmt.Errorf("open netlink in %q: %w", pod.Path(), err)
	}
	return host, podH, func() { host.Close(); podH.Close() }, nil
}
