package dhcp

import (
	"context"
	"errors"
	"time"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/plugins/ipam/dhcp/dhcp4"
)

// start runs ls's maintenance goroutine.
func (d *Daemon) start(ls *lease) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(ls.done)
		d.maintain(ls)
	}()
}

// maintain keeps ls alive (RFC 2131 4.4.5): at T1 it renews with its
// server by unicast until T2, then rebinds by broadcast until the lease
// expires. A DHCPNAK or expiry ends the lease: the interface is set down,
// since the address may be given to someone else, and CHECK reports it. A
// namespace that has disappeared (the pod is gone without DEL) ends
// maintenance and forgets the lease.
func (d *Daemon) maintain(ls *lease) {
	ctx, cancel := context.WithCancel(d.ctx)
	defer cancel()
	go func() {
		select {
		case <-ls.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	log := d.log.With("lease", ls.key.String())
	for {
		ls.mu.Lock()
		cur, state := ls.cur, ls.state
		ls.mu.Unlock()
		if state == StateExpired || cur.Duration == dhcp4.Infinite {
			<-ctx.Done()
			return
		}
		now := time.Now()
		var next *dhcp4.Lease
		var err error
		switch {
		case now.Before(cur.RenewAt()):
			if !sleep(ctx, cur.RenewAt().Sub(now)) {
				return
			}
			continue
		case now.Before(cur.RebindAt()):
			d.setState(ls, StateRenewing)
			err = d.withConn(ls, func(c *dhcp4.Client) error {
				var e error
				next, e = c.Renew(ctx, cur, cur.RebindAt())
				return e
			})
		case now.Before(cur.Expiry()):
			d.setState(ls, StateRebinding)
			err = d.withConn(ls, func(c *dhcp4.Client) error {
				var e error
				next, e = c.Rebind(ctx, cur, cur.Expiry())
				return e
			})
		default:
			log.Warn("lease expired", "address", cur.Address)
			d.expire(ls)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		var nak *dhcp4.NakError
		switch {
		case err == nil:
			ls.mu.Lock()
			ls.cur, ls.state = next, StateBound
			ls.renewed++
			ls.mu.Unlock()
			d.mu.Lock()
			if d.leases[ls.key] == ls {
				d.persistLocked(ls)
			}
			d.mu.Unlock()
			log.Info("lease extended", "address", next.Address, "server", next.Server, "expiry", next.Expiry())
		case errors.As(err, &nak):
			log.Warn("lease refused", "address", cur.Address, "err", err)
			d.expire(ls)
		case errors.Is(err, netns.ErrNotExist):
			log.Info("namespace gone; lease forgotten", "address", cur.Address, "err", err)
			d.forget(ls)
			return
		case errors.Is(err, dhcp4.ErrNoAnswer):
			// The phase ended without an answer; the loop moves on to
			// the next one.
		default:
			// The interface may be gone or not ready: try again
			// shortly, within the phase.
			log.Warn("lease maintenance", "address", cur.Address, "err", err)
			if !sleep(ctx, 5*time.Second) {
				return
			}
		}
	}
}

func (d *Daemon) setState(ls *lease, s string) {
	ls.mu.Lock()
	ls.state = s
	ls.mu.Unlock()
}

// expire marks ls expired and sets its interface down.
func (d *Daemon) expire(ls *lease) {
	d.setState(ls, StateExpired)
	d.mu.Lock()
	if d.leases[ls.key] == ls {
		d.persistLocked(ls)
	}
	d.mu.Unlock()
	ns, err := d.openNS(ls.netns, ls.nsDev, ls.nsIno)
	if err != nil {
		return
	}
	defer ns.Close()
	setDown(ns, ls.key.IfName)
}

// sleep waits d or until ctx ends; it reports whether the time passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
