package tuning

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/sysctl"
)

// Kernel steps: the pod interface's attributes through a netlink handle
// bound to the pod's namespace, the sysctls through /proc/sys from a
// thread inside it.

// linkValues are the attributes tuning manages.
type linkValues struct {
	MAC      net.HardwareAddr
	MTU      int
	Promisc  bool // IFF_PROMISC as set by an administrator
	Allmulti bool
	TxQLen   int
}

func valuesOf(l netlink.Link) linkValues {
	a := l.Attrs()
	return linkValues{
		MAC: a.HardwareAddr, MTU: a.MTU, TxQLen: a.TxQLen,
		Promisc: a.RawFlags&unix.IFF_PROMISC != 0, Allmulti: a.RawFlags&unix.IFF_ALLMULTI != 0,
	}
}

func setMAC(h *netlink.Handle, l netlink.Link, mac net.HardwareAddr) error {
	if bytes.Equal(l.Attrs().HardwareAddr, mac) {
		return nil
	}
	if err := h.LinkSetHardwareAddr(l, mac); err != nil {
		return fmt.Errorf("set MAC address of %q to %s: %w", l.Attrs().Name, mac, err)
	}
	return nil
}

func setMTU(h *netlink.Handle, l netlink.Link, mtu int) error {
	if l.Attrs().MTU == mtu {
		return nil
	}
	if err := h.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("set MTU of %q to %d: %w", l.Attrs().Name, mtu, err)
	}
	return nil
}

func setPromisc(h *netlink.Handle, l netlink.Link, on bool) error {
	if valuesOf(l).Promisc == on {
		return nil
	}
	var err error
	if on {
		err = h.SetPromiscOn(l)
	} else {
		err = h.SetPromiscOff(l)
	}
	if err != nil {
		return fmt.Errorf("set promiscuous mode of %q %s: %w", l.Attrs().Name, onOff(on), err)
	}
	return nil
}

func setAllmulti(h *netlink.Handle, l netlink.Link, on bool) error {
	if valuesOf(l).Allmulti == on {
		return nil
	}
	var err error
	if on {
		err = h.LinkSetAllmulticastOn(l)
	} else {
		err = h.LinkSetAllmulticastOff(l)
	}
	if err != nil {
		return fmt.Errorf("set all-multicast mode of %q %s: %w", l.Attrs().Name, onOff(on), err)
	}
	return nil
}

func setTxQLen(h *netlink.Handle, l netlink.Link, n int) error {
	if l.Attrs().TxQLen == n {
		return nil
	}
	if err := h.LinkSetTxQLen(l, n); err != nil {
		return fmt.Errorf("set transmit queue length of %q to %d: %w", l.Attrs().Name, n, err)
	}
	return nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// readSysctls reads the current values in ns. A key that does not exist
// there is a configuration error naming it.
func readSysctls(ns *netns.NS, rs []resolved) ([]savedSysctl, error) {
	out := make([]savedSysctl, 0, len(rs))
	var ferr error
	err := ns.Do(func() error {
		fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
		for _, r := range rs {
			v, err := sysctl.Get(r.Path)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				fe.Add(r.Field, "/proc/sys/%s does not exist in the pod's network namespace", r.Path)
			case err != nil:
				return err
			default:
				out = append(out, savedSysctl{Path: r.Path, Value: v})
			}
		}
		ferr = fe.Err()
		return nil
	})
	if err == nil {
		err = ferr
	}
	return out, err
}

// writeSysctls writes rs in ns, in order, and returns how many it wrote;
// a value the kernel refuses is a configuration error naming the key.
func writeSysctls(ns *netns.NS, rs []resolved) (int, error) {
	n := 0
	err := ns.Do(func() error {
		for _, r := range rs {
			if err := sysctl.Set(r.Path, r.Value); err != nil {
				if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ERANGE) {
					return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "%s: the kernel refused %q: %v", r.Field, r.Value, err)
				}
				return fmt.Errorf("%s: %w", r.Field, err)
			}
			n++
		}
		return nil
	})
	return n, err
}

// restoreSysctls writes saved values back in ns, newest first. Keys that
// are gone (the interface was deleted) are skipped.
func restoreSysctls(ns *netns.NS, saved []savedSysctl) error {
	return ns.Do(func() error {
		var errs []error
		for i := len(saved) - 1; i >= 0; i-- {
			s := saved[i]
			if !validPath(s.Path) {
				continue
			}
			if err := sysctl.Set(s.Path, s.Value); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("restore %s: %w", s.Path, err))
			}
		}
		return errors.Join(errs...)
	})
}

// restoreLink puts saved attributes back on l (MTU before MAC, as ADD set
// them the other way round).
func restoreLink(h *netlink.Handle, l netlink.Link, st *state) error {
	var errs []error
	if st.TxQLen != nil {
		errs = append(errs, setTxQLen(h, l, *st.TxQLen))
	}
	if st.Allmulti != nil {
		errs = append(errs, setAllmulti(h, l, *st.Allmulti))
	}
	if st.Promisc != nil {
		errs = append(errs, setPromisc(h, l, *st.Promisc))
	}
	if st.Mac != "" {
		if mac, err := net.ParseMAC(st.Mac); err == nil {
			errs = append(errs, setMAC(h, l, mac))
		}
	}
	if st.Mtu != 0 {
		errs = append(errs, setMTU(h, l, st.Mtu))
	}
	return errors.Join(errs...)
}
