package bridge

import (
	"errors"
	"fmt"
	"net"
	"os"

	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/ipcfg"
	"linen.dev/linen/internal/nft"
	"linen.dev/linen/internal/plugins/ipmasq"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// filterSet is the netfilter side of a bridge attachment: masquerade
// entries (ipMasq) and the MAC spoof check (macspoofchk).
type filterSet struct{ c *ipmasq.Conn }

// spoofOnly is conf for the netfilter side of a layer-2 attachment: the
// spoof check applies, there is no address to masquerade.
func (c *Config) spoofOnly() *Config {
	l2 := *c
	l2.IPMasq = false
	return &l2
}

// openFilters dials netfilter only when the network uses it.
func openFilters(conf *Config) (*filterSet, error) {
	if !conf.IPMasq && !conf.MacSpoofChk {
		return &filterSet{}, nil
	}
	c, err := ipmasq.Dial()
	if err != nil {
		return nil, err
	}
	return &filterSet{c: c}, nil
}

func (f *filterSet) close()           { f.c.Close() }
func (f *filterSet) hold() []*os.File { return f.c.Hold() }

// addFilters installs the attachment's elements and returns their undo.
func addFilters(a *pluginmain.Args, conf *Config, res *current.Result, hostIf string, mac net.HardwareAddr) (func(), error) {
	f, err := openFilters(conf)
	if err != nil {
		return nil, err
	}
	defer f.close()
	var undo []func(*ipmasq.Conn)
	fail := func(err error) (func(), error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i](f.c)
		}
		return nil, err
	}
	if conf.IPMasq {
		entries := ipmasq.Entries(conf.Network, a, ipmasq.ResultAddrs(res, a.IfName))
		if err := nft.AddMasq(f.c.Conn, entries); err != nil {
			return fail(fmt.Errorf("ipMasq: %w", err))
		}
		undo = append(undo, func(c *ipmasq.Conn) { _ = nft.DelMasq(c.Conn, conf.Network, a.ContainerID, a.IfName, entries) })
	}
	if conf.MacSpoofChk {
		e := nft.SpoofEntry{Network: conf.Network, ContainerID: a.ContainerID, IfName: a.IfName, HostIf: hostIf, MAC: mac}
		if err := nft.AddSpoofCheck(f.c.Conn, e); err != nil {
			return fail(fmt.Errorf("macspoofchk: %w", err))
		}
		undo = append(undo, func(c *ipmasq.Conn) { _ = nft.DelSpoofCheck(c.Conn, conf.Network, a.ContainerID, a.IfName, &e) })
	}
	return func() {
		g, err := openFilters(conf)
		if err != nil {
			return
		}
		defer g.close()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i](g.c)
		}
	}, nil
}

// del removes the attachment's elements; podIPs (read from the interface)
// stand in for a missing prevResult. Without either, elements are found by
// their owner tag.
func (f *filterSet) del(a *pluginmain.Args, conf *Config, podIPs []net.IPNet) error {
	if f.c == nil {
		return nil
	}
	var errs []error
	if conf.IPMasq {
		addrs := ipmasq.ResultAddrs(conf.PrevResult, a.IfName)
		if len(addrs) == 0 {
			addrs = podIPs
		}
		if err := nft.DelMasq(f.c.Conn, conf.Network, a.ContainerID, a.IfName, ipmasq.Entries(conf.Network, a, addrs)); err != nil {
			errs = append(errs, fmt.Errorf("ipMasq: %w", err))
		}
	}
	if conf.MacSpoofChk {
		if err := nft.DelSpoofCheck(f.c.Conn, conf.Network, a.ContainerID, a.IfName, nil); err != nil {
			errs = append(errs, fmt.Errorf("macspoofchk: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (f *filterSet) check(a *pluginmain.Args, conf *Config, res *current.Result, hostIf *current.Interface) error {
	if f.c == nil {
		return nil
	}
	if conf.IPMasq {
		if err := nft.CheckMasq(f.c.Conn, ipmasq.Entries(conf.Network, a, ipmasq.ResultAddrs(res, a.IfName))); err != nil {
			return fmt.Errorf("ipMasq: %w", err)
		}
	}
	if conf.MacSpoofChk && hostIf != nil {
		if podIf := ipcfg.SandboxInterface(res, a.IfName); podIf != nil {
			mac, err := net.ParseMAC(podIf.Mac)
			if err != nil {
				return fmt.Errorf("prevResult: interface %q MAC %q: %w", a.IfName, podIf.Mac, err)
			}
			e := nft.SpoofEntry{Network: conf.Network, ContainerID: a.ContainerID, IfName: a.IfName, HostIf: hostIf.Name, MAC: mac}
			if err := nft.CheckSpoofCheck(f.c.Conn, e); err != nil {
				return fmt.Errorf("macspoofchk: %w", err)
			}
		}
	}
	return nil
}

// gcFilters removes elements of this network's attachments that are no
// longer valid. It looks at both features whatever the configuration says:
// a network may have had them on earlier.
func gcFilters(conf *gcConfig) error {
	c, err := ipmasq.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	valid := ipmasq.Valid(conf.valid)
	return errors.Join(nft.GCMasq(c.Conn, conf.network, valid), nft.GCSpoofCheck(c.Conn, conf.network, valid))
}
