package udp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/overlay/backend/dataplane"
	"linen.dev/linen/internal/overlay/subnet"
	"linen.dev/linen/internal/tun"
)

// DeviceName is the TUN name template; the kernel picks the first free
// number, so the device is flannel0 unless that name is taken.
const DeviceName = "flannel%d"

// Backend is the udp backend. Create it with New.
type Backend struct {
	net subnet.Config
	cfg Config
	ext dataplane.ExternalInterface
	log *slog.Logger
	ns  *netns.NS
	h   *netlink.Handle
	ap  *dataplane.Applier

	loop *dataplane.Loop
	dev  *tun.Linux
	conn *sockConn
	dp   *dataPath
	off  Offload // in effect after Prepare
	st   counters
	wg   sync.WaitGroup
	once sync.Once

	// Guarded by the loop's lock.
	own    subnet.Lease
	hasOwn bool
	leases []subnet.Lease
	synced bool

	reconciles, reconcileErrs, leaseErrs atomic.Uint64
}

// New checks the configuration and returns the backend; it changes nothing
// in the kernel. The calling thread's network namespace is the host's: the
// TUN and the socket are created there by Prepare, whichever thread calls
// it. The environment variable LINEN_UDP_OFFLOAD (EnvOffload), when set,
// overrides the Offload object (ParseOffloadSpec).
func New(cfg *subnet.Config, ext dataplane.ExternalInterface, o dataplane.Options) (*Backend, error) {
	c, err := ParseConfig(cfg.Backend)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if spec := os.Getenv(EnvOffload); spec != "" {
		if c.Offload, err = ParseOffloadSpec(spec, c.Offload); err != nil {
			errs = append(errs, err)
		}
	}
	if !cfg.EnableIPv4 || !cfg.Network.Addr().Is4() {
		errs = append(errs, errors.New("the udp backend needs EnableIPv4 and an IPv4 Network"))
	}
	if cfg.EnableIPv6 {
		errs = append(errs, errors.New("the udp backend carries IPv4 only: set EnableIPv6 false or use vxlan"))
	}
	if !ext.IfaceAddr.Is4() {
		errs = append(errs, fmt.Errorf("external interface %q has no IPv4 address", ext.Name))
	}
	if ext.MTU < 68+Overhead {
		errs = append(errs, fmt.Errorf("external interface %q: MTU %d leaves no room for %d bytes of encapsulation", ext.Name, ext.MTU, Overhead))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Backend{net: *cfg, cfg: c, ext: ext, log: log.With("backend", BackendType)}
	if b.ns, err = netns.Current(); err != nil {
		return nil, err
	}
	if b.h, err = netlink.NewHandleAt(b.ns.Handle(), unix.NETLINK_ROUTE); err != nil {
		b.ns.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	b.ap = dataplane.NewApplier(b.h, b.log)
	b.loop = dataplane.NewLoop(b.reconcile, dataplane.ResyncPeriod(o), b.log)
	return b, nil
}

// Prepare creates the TUN device and the UDP socket in the host's
// namespace, starts the data path and returns the lease attributes
// (PublicIP only, as flannel's udp backend publishes).
func (b *Backend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	if err := ctx.Err(); err != nil {
		return subnet.LeaseAttrs{}, err
	}
	if b.dev != nil {
		return b.attrs(), nil
	}
	off := b.cfg.Offload
	err := b.ns.Do(func() error {
		tc := tun.Config{Name: DeviceName, VnetHdr: off.VnetHdr, MTU: b.MTU()}
		if off.VnetHdr {
			tc.Offload = tun.AllOffloads
		}
		dev, err := tun.Open(tc)
		if err != nil {
			return err
		}
		conn, eff, err := listenUDP(netip.AddrPortFrom(b.ext.IfaceAddr, uint16(b.cfg.port())), off, &b.st)
		if err != nil {
			dev.Close()
			return err
		}
		b.dev, b.conn, off = dev, conn, eff
		return nil
	})
	if err != nil {
		return subnet.LeaseAttrs{}, err
	}
	if off.VnetHdr && !b.dev.Offload().TSO4 {
		b.log.Warn("kernel refused TSO on the TUN; reading single packets", "offload", fmt.Sprintf("%+v", b.dev.Offload()))
	}
	if b.cfg.Offload.UDPGSO && !off.UDPGSO {
		b.log.Warn("UDP GSO is not available; one sendmsg per datagram")
	}
	if b.cfg.Offload.UDPGRO && !off.UDPGRO {
		b.log.Warn("UDP GRO is not available (kernel < 5.12 or refused)")
	}
	b.conn.onGSO = func(err error) {
		b.log.Warn("UDP GSO failed; sending one datagram per segment from now on", "err", err)
	}
	b.off = off
	b.dp = newDataPath(b.dev, b.conn, off, &b.st, b.log)
	b.log.Info("data path", "device", b.dev.Name(), "mtu", b.MTU(), "listen", b.conn.LocalAddr(),
		"vnethdr", off.VnetHdr, "tso", b.dev.Offload().TSO4, "uso", b.dev.Offload().USO, "tcpgro", off.TCPGRO,
		"udpgso", off.UDPGSO, "udpgro", off.UDPGRO, "batch", off.Batch, "sockbuf", off.SocketBuffer)
	for _, run := range []func() error{b.dp.runTx, b.dp.runRx} {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			if err := run(); err != nil {
				b.log.Error("data path stopped", "err", err)
			}
		}()
	}
	name := b.dev.Name()
	b.loop.WatchLinks(b.ns, func(u netlink.LinkUpdate) bool { return u.Attrs().Name == name })
	b.loop.Start()
	return b.attrs(), nil
}

func (b *Backend) attrs() subnet.LeaseAttrs {
	return subnet.LeaseAttrs{PublicIP: b.ext.ExtAddr, BackendType: BackendType}
}

// Configure gives the TUN the own subnet's address as /32 and routes the
// whole network through it.
func (b *Backend) Configure(own subnet.Lease) error {
	if !own.Subnet.Addr().Is4() {
		return fmt.Errorf("own lease %s has no IPv4 subnet", own.Key())
	}
	if b.dp == nil {
		return errors.New("Configure before Prepare")
	}
	return b.loop.Do(func() error {
		b.own, b.hasOwn = own, true
		sn := own.Subnet.Masked()
		b.dp.local.Store(&local{subnet: sn, icmpSrc: icmpSource(b.net.Network, sn)})
		if b.synced {
			routes, _ := Desired(b.params(), b.leases)
			b.dp.routes.Store(newTable(routes))
		}
		return b.reconcile()
	})
}

// Sync rebuilds the forwarding table from the full lease set. The returned
// error joins the problems with single leases (those get no route; the
// others do) and kernel errors (retried by the loop).
func (b *Backend) Sync(all []subnet.Lease) error {
	var leaseErrs []error
	err := b.loop.Do(func() error {
		b.leases, b.synced = slices.Clone(all), true
		routes, errs := Desired(b.params(), b.leases)
		leaseErrs = errs
		b.leaseErrs.Store(uint64(len(errs)))
		if b.dp != nil {
			b.dp.routes.Store(newTable(routes))
		}
		return b.reconcile()
	})
	return errors.Join(append(leaseErrs, err)...)
}

func (b *Backend) params() Params {
	p := Params{Network: b.net.Network, Port: b.cfg.port(), OwnPublic: b.ext.ExtAddr}
	if b.hasOwn {
		p.Own = b.own.Subnet
	}
	return p
}

// reconcile makes the kernel state match: the TUN up with exactly the own
// address, and the network route through it (linen's route protocol; stale
// linen routes of the family are removed).
func (b *Backend) reconcile() error {
	if !b.hasOwn || b.dev == nil {
		return nil
	}
	b.reconciles.Add(1)
	err := b.reconcileKernel()
	if err != nil {
		b.reconcileErrs.Add(1)
	}
	return err
}

func (b *Backend) reconcileKernel() error {
	l, err := b.h.LinkByName(b.dev.Name())
	if err != nil {
		return fmt.Errorf("find %s: %w", b.dev.Name(), err)
	}
	want := netip.PrefixFrom(b.own.Subnet.Masked().Addr(), 32)
	addrs, err := b.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", b.dev.Name(), err)
	}
	have := false
	for _, a := range addrs {
		p, ok := ipNetPrefix(a.IPNet)
		if ok && p == want {
			have = true
			continue
		}
		if err := b.h.AddrDel(l, &a); err != nil {
			return fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, b.dev.Name(), err)
		}
	}
	if !have {
		if err := b.h.AddrReplace(l, &netlink.Addr{IPNet: &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return fmt.Errorf("address %s on %s: %w", want, b.dev.Name(), err)
		}
	}
	if l.Attrs().MTU != b.MTU() {
		if err := b.h.LinkSetMTU(l, b.MTU()); err != nil {
			return fmt.Errorf("MTU of %s: %w", b.dev.Name(), err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := b.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", b.dev.Name(), err)
		}
	}
	state := dataplane.State{Routes: []dataplane.Route{{Dst: b.net.Network.Masked(), Dev: b.dev.Name()}}}
	sc := dataplane.Scope{Families: []int{netlink.FAMILY_V4}, Links: map[string]int{b.dev.Name(): l.Attrs().Index}}
	_, err = b.ap.Apply(state, sc)
	return err
}

// icmpSource picks the source of the ICMP errors the data path writes into
// the TUN: an address of the network that is no node's, so that the kernel
// neither drops the packet as coming from one of its own addresses nor
// mistakes it for a pod. The network's first address, which is in the first
// subnet (never leased with flannel's default SubnetMin); if this node's own
// subnet holds it, the network's last address (a broadcast address).
func icmpSource(network, own netip.Prefix) netip.Addr {
	network = network.Masked()
	if !own.Contains(network.Addr()) {
		return network.Addr()
	}
	a := network.Addr().As4()
	host := ^uint32(0) >> network.Bits()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// MTU is the external interface's minus the 28 bytes of outer IPv4 and
// UDP headers.
func (b *Backend) MTU() int { return b.ext.MTU - Overhead }

// Offload returns the offloads in effect (after Prepare: what the kernel
// accepted; UDPGSO may still be turned off later, see Stats'
// udp_gso_disabled).
func (b *Backend) Offload() Offload {
	if b.dp == nil {
		return b.cfg.Offload
	}
	o := b.off
	o.UDPGSO = b.conn.gso.Load()
	return o
}

// Device is the TUN's name ("" before Prepare).
func (b *Backend) Device() string {
	if b.dev == nil {
		return ""
	}
	return b.dev.Name()
}

// Routes returns the forwarding table the last Sync computed.
func (b *Backend) Routes() []Route {
	var routes []Route
	_ = b.loop.Do(func() error {
		if b.synced {
			routes, _ = Desired(b.params(), b.leases)
		}
		return nil
	})
	return routes
}

// Stats are counters for /metrics: the data path's packets, bytes, drops
// by reason, and the reconciliation counts.
func (b *Backend) Stats() map[string]uint64 {
	m := b.st.snapshot()
	m["reconciles"] = b.reconciles.Load()
	m["reconcile_errors"] = b.reconcileErrs.Load()
	m["lease_errors"] = b.leaseErrs.Load()
	m["netlink_writes"] = b.ap.Writes()
	m["netlink_failures"] = b.ap.Failures()
	if b.dp != nil {
		m["routes"] = uint64(b.dp.routes.Load().len())
	}
	return m
}

// Close stops the data path and the loop. Unlike the kernel backends' state,
// the TUN device lives only as long as this process holds it: the kernel
// removes it, and the network route through it, when it is closed (as with
// flannel's udp backend).
func (b *Backend) Close() error {
	b.once.Do(func() {
		b.loop.Close()
		if b.dev != nil {
			b.dev.Close()
		}
		if b.conn != nil {
			b.conn.Close()
		}
		b.wg.Wait()
		b.h.Close()
		b.ns.Close()
	})
	return nil
}
