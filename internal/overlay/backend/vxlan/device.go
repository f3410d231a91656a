package vxlan

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/atomicfile"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/sysctl"
)

// chooseMAC fixes the device's VtepMAC: the MAC of an existing VXLAN
// device of that name, else the one saved in the state directory, else a
// random locally administered unicast address; it is saved for next time.
func (b *Backend) chooseMAC(v *vtep) error {
	if l, err := b.h.LinkByName(v.name); err == nil {
		if _, ok := l.(*netlink.Vxlan); ok && validMAC(l.Attrs().HardwareAddr) {
			v.mac = bytes.Clone(l.Attrs().HardwareAddr)
		}
	} else if !nl.IsNotFound(err) {
		return fmt.Errorf("look up %s: %w", v.name, err)
	}
	if v.mac == nil {
		mac, err := b.loadMAC(v.name)
		if err != nil {
			b.log.Warn("ignoring saved VtepMAC", "device", v.name, "err", err)
		}
		v.mac = mac
	}
	if v.mac == nil {
		v.mac = randomMAC()
	}
	return b.saveMAC(v.name, v.mac)
}

func validMAC(m net.HardwareAddr) bool {
	return len(m) == 6 && m[0]&1 == 0 && !bytes.Equal(m, make([]byte, 6))
}

func randomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	_, _ = rand.Read(m)
	m[0] = m[0]&0xfe | 0x02 // unicast, locally administered
	return m
}

// statePath is where a device's VtepMAC is kept ("" = not kept).
func (b *Backend) statePath(dev string) string {
	if b.opts.StateDir == "" {
		return ""
	}
	return filepath.Join(b.opts.StateDir, "vxlan-"+dev+".mac")
}

func (b *Backend) loadMAC(dev string) (net.HardwareAddr, error) {
	p := b.statePath(dev)
	if p == "" {
		return nil, nil
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	mac, err := net.ParseMAC(strings.TrimSpace(string(data)))
	if err != nil || !validMAC(mac) {
		return nil, fmt.Errorf("%s: %q is not a unicast Ethernet address", p, strings.TrimSpace(string(data)))
	}
	return mac, nil
}

// saveMAC writes the file atomically (temporary file, rename, directory sync).
func (b *Backend) saveMAC(dev string, mac net.HardwareAddr) error {
	p := b.statePath(dev)
	if p == "" {
		return nil
	}
	if cur, err := b.loadMAC(dev); err == nil && bytes.Equal(cur, mac) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("save VtepMAC: %w", err)
	}
	if err := atomicfile.Write(p, []byte(mac.String()+"\n"), 0o600); err != nil {
		return fmt.Errorf("save VtepMAC: %w", err)
	}
	return nil
}

// incompatible says why an existing link cannot serve as the device ("" =
// it can; MTU, MAC and up/down are fixed in place).
func (b *Backend) incompatible(v *vtep, l netlink.Link) string {
	x, ok := l.(*netlink.Vxlan)
	if !ok {
		return fmt.Sprintf("it is a %s device, not vxlan", l.Type())
	}
	src, _ := netip.AddrFromSlice(x.SrcAddr)
	var why []string
	if x.VxlanId != b.cfg.VNI {
		why = append(why, fmt.Sprintf("VNI %d", x.VxlanId))
	}
	if x.Port != b.cfg.port() {
		why = append(why, fmt.Sprintf("port %d", x.Port))
	}
	if x.VtepDevIndex != b.ext.Index {
		why = append(why, fmt.Sprintf("lower device index %d", x.VtepDevIndex))
	}
	if src.Unmap() != v.src {
		why = append(why, fmt.Sprintf("local address %s", src))
	}
	if x.Learning != b.cfg.Learning {
		why = append(why, fmt.Sprintf("learning %t", x.Learning))
	}
	if x.GBP != b.cfg.GBP {
		why = append(why, fmt.Sprintf("gbp %t", x.GBP))
	}
	if x.L2miss || x.L3miss {
		why = append(why, "l2miss/l3miss on")
	}
	if x.FlowBased {
		why = append(why, "external (collect metadata)")
	}
	if len(x.Group) > 0 && !x.Group.IsUnspecified() {
		why = append(why, fmt.Sprintf("group %s", x.Group))
	}
	if len(why) > 0 {
		return "it has " + strings.Join(why, ", ")
	}
	return ""
}

// ensureDevice makes the device exist, compatible, with the VtepMAC and
// MTU, and up. It costs one link lookup when all is well.
func (b *Backend) ensureDevice(v *vtep, first bool) error {
	l, err := b.h.LinkByName(v.name)
	if err != nil && !nl.IsNotFound(err) {
		return fmt.Errorf("look up %s: %w", v.name, err)
	}
	if err != nil {
		l = nil
		if !first {
			b.log.Warn("VXLAN device is gone; creating it again", "device", v.name)
		}
	}
	if l != nil {
		if why := b.incompatible(v, l); why != "" {
			b.log.Warn("recreating incompatible VXLAN device", "device", v.name, "reason", why)
			b.devWrites.Add(1)
			if err := b.h.LinkDel(l); err != nil && !nl.IsNotFound(err) {
				return fmt.Errorf("delete incompatible %s: %w", v.name, err)
			}
			l = nil
		}
	}
	if l == nil {
		if l, err = b.createDevice(v); err != nil {
			return err
		}
	}
	v.index = l.Attrs().Index
	v.watchIndex.Store(int64(v.index))
	a := l.Attrs()
	if a.MTU != v.mtu {
		b.devWrites.Add(1)
		if err := b.h.LinkSetMTU(l, v.mtu); err != nil {
			return fmt.Errorf("set %s mtu %d: %w", v.name, v.mtu, err)
		}
	}
	if !bytes.Equal(a.HardwareAddr, v.mac) {
		// Something (udev's MACAddressPolicy, a person) changed it: peers
		// know the VtepMAC from the lease.
		b.log.Warn("restoring VtepMAC", "device", v.name, "found", a.HardwareAddr.String(), "mac", v.mac.String())
		b.devWrites.Add(1)
		if err := b.h.LinkSetHardwareAddr(l, v.mac); err != nil {
			return fmt.Errorf("set %s address %s: %w", v.name, v.mac, err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		b.devWrites.Add(1)
		if err := b.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", v.name, err)
		}
	}
	return nil
}

func (b *Backend) createDevice(v *vtep) (netlink.Link, error) {
	la := netlink.NewLinkAttrs()
	la.Name = v.name
	la.MTU = v.mtu
	la.HardwareAddr = v.mac
	dev := &netlink.Vxlan{
		LinkAttrs:    la,
		VxlanId:      b.cfg.VNI,
		VtepDevIndex: b.ext.Index,
		SrcAddr:      net.IP(v.src.AsSlice()),
		Port:         b.cfg.port(),
		Learning:     b.cfg.Learning,
		GBP:          b.cfg.GBP,
	}
	b.devWrites.Add(1)
	if err := b.h.LinkAdd(dev); err != nil {
		return nil, fmt.Errorf("create %s: %w", v.name, err)
	}
	b.created.Add(1)
	l, err := b.h.LinkByName(v.name)
	if err != nil {
		return nil, fmt.Errorf("look up new %s: %w", v.name, err)
	}
	// No router advertisements on the overlay device. The sysctl resolves
	// against the calling thread's namespace: write it from the host's.
	key := sysctl.Link("ipv6", v.name, "accept_ra")
	if err := b.ns.Do(func() error { return sysctl.Ensure(key, "0") }); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	b.log.Info("created VXLAN device", "device", v.name, "vni", b.cfg.VNI, "port", b.cfg.port(), "mtu", v.mtu,
		"mac", v.mac.String(), "local", v.src, "dev", b.ext.Name)
	return l, nil
}

// ensureAddr gives the device the own subnet's network address as a host
// address (/32, /128) and removes every other global address of the family.
func (b *Backend) ensureAddr(v *vtep) error {
	var want netip.Prefix
	if v.family == netlink.FAMILY_V4 && b.own.Subnet.IsValid() {
		want = netip.PrefixFrom(b.own.Subnet.Masked().Addr(), 32)
	}
	if v.family == netlink.FAMILY_V6 && b.own.IPv6Subnet.IsValid() {
		want = netip.PrefixFrom(b.own.IPv6Subnet.Masked().Addr(), 128)
	}
	link := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: v.index, Name: v.name}}
	addrs, err := nl.Retry(func() ([]netlink.Addr, error) { return b.h.AddrList(link, v.family) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", v.name, err)
	}
	have := false
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		p := netip.PrefixFrom(ip.Unmap(), ones)
		if p == want {
			have = true
			continue
		}
		if ip.IsLinkLocalUnicast() {
			continue
		}
		b.devWrites.Add(1)
		if err := b.h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s from %s: %w", p, v.name, err)
		}
		b.log.Info("removed address from VXLAN device", "device", v.name, "addr", p)
	}
	if have || !want.IsValid() {
		return nil
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(want.Addr().AsSlice()), Mask: net.CIDRMask(want.Bits(), want.Addr().BitLen())}}
	if v.family == netlink.FAMILY_V6 {
		a.Flags = unix.IFA_F_NODAD
	}
	b.devWrites.Add(1)
	if err := b.h.AddrReplace(link, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", want, v.name, err)
	}
	return nil
}
