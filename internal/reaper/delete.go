package reaper

import (
	"fmt"
	"os"
	"time"

	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nl"
)

// Deletion is a link deletion begun by Begin and completed by Finish; the
// caller does its other DEL work (IPAM release, netfilter changes) between
// the two, overlapping the helper's start and the kernel's work.
type Deletion struct {
	pod  *netlink.Handle
	link netlink.Link
	proc *Proc
}

// Begin starts deleting link, which lives in ns and is reached through pod.
// link may be nil when there is no link to delete (only descriptors to
// hold). With detach false nothing starts and Finish deletes synchronously.
func Begin(ns *netns.NS, pod *netlink.Handle, link netlink.Link, detach bool, hold []*os.File) *Deletion {
	d := &Deletion{pod: pod, link: link}
	if !detach || (link == nil && len(hold) == 0) {
		return d
	}
	job := Job{Hold: hold}
	if link != nil && ns != nil {
		job.NS = ns.File()
		job.IfName = link.Attrs().Name
	}
	p, err := Start(job)
	if err != nil {
		return d // fall back to a synchronous delete in Finish
	}
	d.proc = p
	return d
}

// Finish returns once the link is gone from its namespace.
func (d *Deletion) Finish() error {
	if d.link == nil {
		return nil
	}
	if d.proc != nil && WaitLinkGone(d.pod, d.link.Attrs().Index, d.proc, 5*time.Second) {
		return nil
	}
	if err := d.pod.LinkDel(d.link); err != nil && !nl.IsNotFound(err) {
		return fmt.Errorf("delete %q: %w", d.link.Attrs().Name, err)
	}
	return nil
}
