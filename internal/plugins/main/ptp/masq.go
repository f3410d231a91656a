package ptp

import (
	"fmt"
	"net"
	"os"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/nft"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/ipmasq"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// masqSet is the ipMasq side of a ptp attachment.
type masqSet struct{ c *ipmasq.Conn }

func openMasq(conf *Config) (*masqSet, error) {
	if !conf.IPMasq {
		return &masqSet{}, nil
	}
	c, err := ipmasq.Dial()
	if err != nil {
		return nil, err
	}
	return &masqSet{c: c}, nil
}

func (m *masqSet) close()           { m.c.Close() }
func (m *masqSet) hold() []*os.File { return m.c.Hold() }

func addMasq(a *pluginmain.Args, conf *Config, res *current.Result) (func(), error) {
	m, err := openMasq(conf)
	if err != nil {
		return nil, err
	}
	defer m.close()
	entries := ipmasq.Entries(conf.Network, a, ipmasq.ResultAddrs(res, a.IfName))
	if err := nft.AddMasq(m.c.Conn, entries); err != nil {
		return nil, fmt.Errorf("ipMasq: %w", err)
	}
	return func() {
		if u, err := openMasq(conf); err == nil {
			_ = nft.DelMasq(u.c.Conn, conf.Network, a.ContainerID, a.IfName, entries)
			u.close()
		}
	}, nil
}

// del removes the masquerade entries: those of the cached result, else of
// the interface's addresses, else whatever carries the attachment's tag.
func (m *masqSet) del(a *pluginmain.Args, conf *Config, link netlink.Link, pod *netlink.Handle) error {
	if m.c == nil {
		return nil
	}
	addrs := ipmasq.ResultAddrs(conf.PrevResult, a.IfName)
	if len(addrs) == 0 && link != nil {
		got, _ := nl.Retry(func() ([]netlink.Addr, error) { return pod.AddrList(link, netlink.FAMILY_ALL) })
		for _, ad := range got {
			addrs = append(addrs, net.IPNet{IP: ad.IP, Mask: ad.Mask})
		}
	}
	if err := nft.DelMasq(m.c.Conn, conf.Network, a.ContainerID, a.IfName, ipmasq.Entries(conf.Network, a, addrs)); err != nil {
		return fmt.Errorf("ipMasq: %w", err)
	}
	return nil
}

func (m *masqSet) check(a *pluginmain.Args, conf *Config, res *current.Result) error {
	if m.c == nil {
		return nil
	}
	if err := nft.CheckMasq(m.c.Conn, ipmasq.Entries(conf.Network, a, ipmasq.ResultAddrs(res, a.IfName))); err != nil {
		return fmt.Errorf("ipMasq: %w", err)
	}
	return nil
}

func gcMasq(conf *Config, valid pluginmain.Attachments) error {
	c, err := ipmasq.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	return nft.GCMasq(c.Conn, conf.Network, ipmasq.Valid(valid))
}
