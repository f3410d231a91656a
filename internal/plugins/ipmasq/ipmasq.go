// Package ipmasq is the ipMasq option of the bridge and ptp plugins on top
// of internal/nft: which masquerade entries an attachment owns, and the
// socket handling that keeps DEL's netfilter release off the critical path
// (which the other plugins on internal/nft, portmap and firewall, share).
package ipmasq

import (
	"net"
	"os"

	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/ipcfg"
	"linen.dev/linen/internal/nft"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/reaper"
)

// Entries turns pod addresses (with their prefix) into masquerade entries.
func Entries(network string, a *pluginmain.Args, addrs []net.IPNet) []nft.MasqEntry {
	var out []nft.MasqEntry
	for _, n := range addrs {
		p := ipcfg.Prefix(n)
		if !p.IsValid() || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		out = append(out, nft.MasqEntry{Network: network, ContainerID: a.ContainerID, IfName: a.IfName,
			IP: p.Addr(), Subnet: p.Masked()})
	}
	return out
}

// ResultAddrs returns the addresses of res assigned to ifName.
func ResultAddrs(res *current.Result, ifName string) []net.IPNet {
	if res == nil {
		return nil
	}
	var out []net.IPNet
	for _, ip := range ipcfg.IPsFor(res, ifName) {
		out = append(out, ip.Address)
	}
	return out
}

// Conn is an open netfilter connection plus the duplicate of its socket a
// detached helper may hold.
type Conn struct {
	*nft.Conn
	Sock *os.File
}

// Dial opens a connection in the calling thread's namespace.
func Dial() (*Conn, error) {
	c, sock, err := nft.Dial(-1)
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, Sock: sock}, nil
}

// Close releases the connection (nil-safe).
func (c *Conn) Close() {
	if c == nil {
		return
	}
	c.Conn.Close()
	c.Sock.Close()
}

// Release closes the connection. After a transaction that deleted
// something the socket's last release waits for the kernel's destroy work
// (~15 ms), so a plugin process (env.Detach) first hands the socket to a
// detached reaper process (internal/reaper) that holds it until this
// process has exited.
func (c *Conn) Release(env *pluginmain.Env) {
	if env.Detach && c.Deleted() {
		if _, err := reaper.Start(reaper.Job{Hold: c.Hold()}); err != nil {
			env.Log.Debug("no reaper process for the netfilter socket release", "error", err)
		}
	}
	c.Close()
}

// Do runs fn on a new connection in the calling thread's namespace and
// releases it afterwards.
func Do(env *pluginmain.Env, fn func(*Conn) error) error {
	c, err := Dial()
	if err != nil {
		return err
	}
	defer c.Release(env)
	return fn(c)
}

// Status answers a STATUS: nftables must be reachable and probe must find
// what the plugin needs usable; otherwise the error has code 50.
func Status(env *pluginmain.Env, probe func(*Conn) error) error {
	err := Do(env, probe)
	if err != nil {
		return pluginmain.Errorf(pluginmain.CodeNotAvailable, "nftables: %v", err)
	}
	return nil
}

// Hold is what a detached DEL helper keeps open (nil-safe).
func (c *Conn) Hold() []*os.File {
	if c == nil {
		return nil
	}
	return []*os.File{c.Sock}
}

// Valid converts GC's valid attachments for nft.
func Valid(v pluginmain.Attachments) []nft.Attachment {
	out := make([]nft.Attachment, 0, len(v))
	for k := range v {
		out = append(out, nft.Attachment{ContainerID: k[0], IfName: k[1]})
	}
	return out
}
