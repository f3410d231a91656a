package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
)

// WatchLinks subscribes to link changes in ns and kicks the loop for every
// update that match accepts (a device deleted, set down, renamed, its MAC
// or MTU changed). The first subscription is made before WatchLinks returns,
// so no change after it is missed. The subscription socket is bound to ns,
// so the receiving goroutine may run on any thread. If the subscription
// ends (socket error, buffer overrun) it is re-established with backoff and
// the loop is kicked, since an event may have been missed. Stops when the
// loop is closed.
func (l *Loop) WatchLinks(ns *netns.NS, match func(netlink.LinkUpdate) bool) {
	subscribe := func() (chan netlink.LinkUpdate, chan struct{}, error) {
		ch := make(chan netlink.LinkUpdate, 64)
		stop := make(chan struct{})
		nsh := ns.Handle()
		err := netlink.LinkSubscribeWithOptions(ch, stop, netlink.LinkSubscribeOptions{
			Namespace: &nsh,
			ErrorCallback: func(err error) {
				select {
				case <-stop:
				default:
					l.log.Debug("link watch", "err", err)
				}
			},
		})
		if err != nil {
			close(stop)
			return nil, nil, err
		}
		return ch, stop, nil
	}
	ch, stop, err := subscribe()
	if err != nil {
		l.log.Warn("subscribe to link changes", "err", err)
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		backoff := MinBackoff
		for {
			if ch == nil {
				select {
				case <-l.done:
					return
				case <-time.After(backoff):
				}
				if ch, stop, err = subscribe(); err != nil {
					backoff = min(2*backoff, MaxBackoff)
					l.log.Warn("subscribe to link changes", "err", err, "retry-in", backoff)
					continue
				}
				backoff = MinBackoff
				l.Kick() // a change may have been missed meanwhile
			}
		recv:
			for {
				select {
				case <-l.done:
					close(stop)
					for range ch { // until the receiver goroutine has exited
					}
					return
				case u, ok := <-ch:
					if !ok {
						close(stop)
						ch = nil
						break recv
					}
					if match(u) {
						l.Kick()
					}
				}
			}
		}
	}()
}

// OnLink reports whether ip is directly reachable (same L2 network) through
// the external interface: the kernel's route to it has no gateway and
// leaves through ext. The error says why not (without repeating ip).
func OnLink(h *netlink.Handle, ext ExternalInterface, ip netip.Addr) error {
	routes, err := h.RouteGet(ip.AsSlice())
	if err != nil {
		return fmt.Errorf("no route: %w", err)
	}
	if len(routes) != 1 {
		return fmt.Errorf("%d routes", len(routes))
	}
	r := routes[0]
	if r.Type == unix.RTN_LOCAL {
		return errors.New("a local address")
	}
	if r.Gw != nil {
		return fmt.Errorf("reached via gateway %s", r.Gw)
	}
	if r.LinkIndex != ext.Index {
		name := fmt.Sprintf("if%d", r.LinkIndex)
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		return fmt.Errorf("reached through %s, not %s", name, ext.Name)
	}
	return nil
}
