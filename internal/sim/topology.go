// Package sim builds a multi-host cluster out of network namespaces on one
// machine, so that the overlay can be exercised for real without touching
// the machine's own network:
//
//	netns <p>sw   bridge "sw0" = the underlay switch, 192.0.2.254/24; the cluster's etcd
//	netns <p>hN   "eth0" (veth to a port of sw0), 192.0.2.N/24; linen daemon; bridge cni0
//	netns <p>hN-* pods, created through the CNI chain (linen meta plugin + portmap)
//
// Nothing is linked to the machine's uplink; traffic stays inside these
// namespaces. Every name starts with the cluster's prefix; Down removes
// everything, and Sweep removes what a crashed run left.
package sim

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/sysctl"
)

// Underlay addressing (RFC 5737 documentation range).
const (
	underlayNet  = "192.0.2.0/24"
	switchAddr   = "192.0.2.254"
	etcdPort     = 2379
	hostAddrBase = 10 // host N gets 192.0.2.(10+N)
)

// HostAddr is the underlay address of host i (1-based).
func HostAddr(i int) string { return fmt.Sprintf("192.0.2.%d", hostAddrBase+i) }

// EtcdEndpoint is the etcd client URL of a cluster.
func EtcdEndpoint() string { return fmt.Sprintf("http://%s:%d", switchAddr, etcdPort) }

func nsPath(name string) string { return filepath.Join(netns.DefaultDir, name) }

// createSwitch makes the switch namespace with its bridge and address.
func createSwitch(name string) (*netns.NS, error) {
	ns, err := netns.NewNamed(netns.DefaultDir, name)
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		return nil, err
	}
	defer h.Close()
	la := netlink.NewLinkAttrs()
	la.Name = "sw0"
	la.Flags = net.FlagUp
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		return nil, fmt.Errorf("create switch bridge: %w", err)
	}
	br, err := h.LinkByName("sw0")
	if err != nil {
		return nil, err
	}
	if err := addAddr(h, br, switchAddr+"/24"); err != nil {
		return nil, err
	}
	lo, _ := h.LinkByName("lo")
	if lo != nil {
		_ = h.LinkSetUp(lo)
	}
	// The switch forwards frames only; keep netfilter out of bridged traffic.
	_ = ns.Do(func() error {
		if err := sysctl.Set("net/bridge/bridge-nf-call-iptables", "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	})
	return ns, nil
}

// createHost makes host i's namespace and wires its eth0 to the switch.
func createHost(sw *netns.NS, name string, i, mtu int) (*netns.NS, error) {
	ns, err := netns.NewNamed(netns.DefaultDir, name)
	if err != nil {
		return nil, err
	}
	hs, err := netlink.NewHandleAt(sw.Handle())
	if err != nil {
		return nil, err
	}
	defer hs.Close()
	hh, err := netlink.NewHandleAt(ns.Handle())
	if err != nil {
		return nil, err
	}
	defer hh.Close()
	br, err := hs.LinkByName("sw0")
	if err != nil {
		return nil, err
	}
	la := netlink.NewLinkAttrs()
	la.Name = fmt.Sprintf("port%d", i)
	la.MasterIndex = br.Attrs().Index
	la.Flags = net.FlagUp
	la.MTU = mtu
	veth := &netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns.Fd()), PeerMTU: uint32(mtu)}
	if err := hs.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("wire host %d to the switch: %w", i, err)
	}
	eth0, err := hh.LinkByName("eth0")
	if err != nil {
		return nil, err
	}
	if err := addAddr(hh, eth0, HostAddr(i)+"/24"); err != nil {
		return nil, err
	}
	if err := hh.LinkSetUp(eth0); err != nil {
		return nil, err
	}
	if lo, err := hh.LinkByName("lo"); err == nil {
		_ = hh.LinkSetUp(lo)
	}
	// A default route over the underlay, as a node has; the switch is the
	// "router" but routes nowhere: nothing leaves the simulated world.
	_, dflt, _ := net.ParseCIDR("0.0.0.0/0")
	if err := hh.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: dflt, Gw: net.ParseIP(switchAddr)}); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("default route of host %d: %w", i, err)
	}
	err = ns.Do(func() error { return sysctl.Set("net/ipv4/ip_forward", "1") })
	return ns, err
}

func addAddr(h *netlink.Handle, l netlink.Link, cidr string) error {
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := h.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add %s to %s: %w", cidr, l.Attrs().Name, err)
	}
	return nil
}

// Sweep removes every namespace whose name starts with prefix and the
// processes recorded in the state files under stateDir for that prefix.
func Sweep(prefix, stateDir string) {
	if st, err := LoadState(stateDir, prefix); err == nil {
		st.stopProcesses()
	}
	netns.SweepPrefix(netns.DefaultDir, prefix)
	os.RemoveAll(filepath.Join(stateDir, strings.TrimSuffix(prefix, "-")))
}
