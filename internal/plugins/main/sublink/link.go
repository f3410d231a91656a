package sublink

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// Spec is one request's plan: the shared configuration plus what the kind
// of link contributes.
type Spec struct {
	Common
	// Kind is the link kind ("macvlan"); Module the kernel module that
	// provides it, named in errors when the kernel lacks it.
	Kind, Module string
	// MAC is the requested address of the interface, nil for the kernel's
	// choice.
	MAC net.HardwareAddr
	// Build returns the link to create from its generic attributes (name,
	// parent, MTU, MAC, target namespace).
	Build func(la netlink.LinkAttrs) netlink.Link
	// Verify reports how an existing link of the kind differs from the
	// configuration (mode, VLAN id); nil when it matches.
	Verify func(l netlink.Link) error
	// Explain may turn a creation error into a clearer one (a mode's
	// constraint, a VLAN id in use); nil keeps the generic explanation.
	Explain func(err error, master string) error
	// Chained lets prevResult stand in for a missing master (its single
	// interface) and a missing ipam (its addresses), as ipvlan allows.
	Chained bool
}

// Desired is the link ADD creates: named name, stacked on the master with
// index masterIndex, with the configured MTU and MAC, created in namespace
// ns (nil: the namespace the request is sent in).
func (s *Spec) Desired(name string, masterIndex int, ns any) netlink.Link {
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.ParentIndex = masterIndex
	la.MTU = s.MTU
	la.HardwareAddr = s.MAC
	la.Namespace = ns
	return s.Build(la)
}

// masterNS names where the master lives, for messages.
func (s *Spec) masterNS() string {
	if s.LinkInContainer {
		return "the pod's network namespace"
	}
	return "the node's network namespace"
}

// MasterName is the name of the configured master or, for a chained
// plugin without one, of the single interface prevResult lists besides the
// pod interface ifName itself (CHECK sees a result that includes it); ""
// when the default route decides.
func (s *Spec) MasterName(ifName string) (string, error) {
	if s.Master != "" || !s.Chained || s.PrevResult == nil {
		return s.Master, nil
	}
	var names []string
	for _, in := range s.PrevResult.Interfaces {
		if in.Name == "" || (in.Sandbox != "" && in.Name == ifName) {
			continue
		}
		names = append(names, in.Name)
	}
	if len(names) != 1 {
		return "", pluginmain.Errorf(pluginmain.CodeInvalidConfig,
			"master: not set, and prevResult does not name exactly one interface to stack on (it names %d)", len(names))
	}
	return names[0], nil
}

// FindMaster returns the master device of the pod interface ifName, looked
// up through h (a handle in the node's namespace, or the pod's with
// linkInContainer).
func (s *Spec) FindMaster(h *netlink.Handle, ifName string) (netlink.Link, error) {
	name, err := s.MasterName(ifName)
	if err != nil {
		return nil, err
	}
	if name == "" {
		l, err := DefaultRouteLink(h)
		if errors.Is(err, ErrNoDefaultRoute) {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "master: not set, and %s has no default route to take it from", s.masterNS())
		}
		if err != nil {
			return nil, fmt.Errorf("find the default route's interface: %w", err)
		}
		return l, nil
	}
	l, err := h.LinkByName(name)
	if err != nil {
		if nl.IsNotFound(err) {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "master: interface %q not found in %s", name, s.masterNS())
		}
		return nil, fmt.Errorf("find master %q: %w", name, err)
	}
	return l, nil
}

// ErrNoDefaultRoute is returned by DefaultRouteLink when the namespace has
// no default route with an output interface.
var ErrNoDefaultRoute = errors.New("no default route")

// DefaultRouteLink returns the output interface of the main table's
// default route with the lowest metric, IPv4 before IPv6; for a multipath
// route, the interface of its first next hop.
func DefaultRouteLink(h *netlink.Handle) (netlink.Link, error) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := nl.Retry(func() ([]netlink.Route, error) {
			return h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		best, bestPrio := 0, 0
		for _, r := range routes {
			if !isDefault(r.Dst) {
				continue
			}
			idx := r.LinkIndex
			if idx == 0 && len(r.MultiPath) > 0 {
				idx = r.MultiPath[0].LinkIndex
			}
			if idx == 0 {
				continue
			}
			if best == 0 || r.Priority < bestPrio {
				best, bestPrio = idx, r.Priority
			}
		}
		if best != 0 {
			l, err := h.LinkByIndex(best)
			if err != nil {
				return nil, fmt.Errorf("find interface %d of the default route: %w", best, err)
			}
			return l, nil
		}
	}
	return nil, ErrNoDefaultRoute
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0 && dst.IP.IsUnspecified()
}

// TempName returns a random name for a link that is renamed right after
// its creation: "lnk" and 8 hex digits.
func TempName() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "lnk" + hex.EncodeToString(b[:])
}

// ErrPodIfExists is returned (wrapped) when CNI_IFNAME is taken in the pod.
var ErrPodIfExists = errors.New("already exists in the pod's network namespace")

// Create makes the pod interface ifName on master, inside the pod
// namespace podNS (reached through pod); host is a handle in the node's
// namespace. See the package documentation for the steps.
func (s *Spec) Create(host, pod *netlink.Handle, podNS *netns.NS, ifName string, master netlink.Link) (netlink.Link, error) {
	if s.LinkInContainer {
		// Master and interface share the pod's namespace: no detour.
		if err := pod.LinkAdd(s.Desired(ifName, master.Attrs().Index, nil)); err != nil {
			if errors.Is(err, unix.EEXIST) && taken(pod, ifName) {
				return nil, fmt.Errorf("create %q: %w", ifName, ErrPodIfExists)
			}
			return nil, s.explain(err, master.Attrs().Name)
		}
		l, err := pod.LinkByName(ifName)
		if err != nil {
			return nil, fmt.Errorf("find new %s %q: %w", s.Kind, ifName, err)
		}
		return l, nil
	}
	for attempt := 0; attempt < 4; attempt++ {
		tmp := TempName()
		err := host.LinkAdd(s.Desired(tmp, master.Attrs().Index, netlink.NsFd(podNS.Fd())))
		if errors.Is(err, unix.EEXIST) && (taken(host, tmp) || taken(pod, tmp)) {
			continue
		}
		if err != nil {
			return nil, s.explain(err, master.Attrs().Name)
		}
		l, err := pod.LinkByName(tmp)
		if err != nil {
			return nil, fmt.Errorf("find new %s %q in the pod: %w", s.Kind, tmp, err)
		}
		if err := pod.LinkSetName(l, ifName); err != nil {
			_ = pod.LinkDel(l)
			if errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("rename %q to %q: %w", tmp, ifName, ErrPodIfExists)
			}
			return nil, fmt.Errorf("rename %s %q to %q: %w", s.Kind, tmp, ifName, err)
		}
		l, err = pod.LinkByIndex(l.Attrs().Index)
		if err != nil {
			return nil, fmt.Errorf("find %q: %w", ifName, err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("create %s: no free temporary name after 4 attempts", s.Kind)
}

func taken(h *netlink.Handle, name string) bool {
	_, err := h.LinkByName(name)
	return err == nil
}

// explain turns the kernel's terse creation errors into messages that say
// what to change.
func (s *Spec) explain(err error, master string) error {
	if s.Explain != nil {
		if e := s.Explain(err, master); e != nil {
			return e
		}
	}
	switch {
	case errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("create %s on %q: kernel lacks %s (module %s): %w", s.Kind, master, s.Kind, s.Module, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("create %s on %q: the master is busy: it already carries links of another kind (macvlan and ipvlan cannot share a master) or is a port of a bridge or bond: %w", s.Kind, master, err)
	}
	return fmt.Errorf("create %s on %q: %w", s.Kind, master, err)
}

// IsKind reports whether l is a link of the spec's kind.
func (s *Spec) IsKind(l netlink.Link) bool { return l.Type() == s.Kind }
