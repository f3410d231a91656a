package bandwidth

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	vnl "github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// Kernel steps: find the host end of the pod's veth, program the shapers
// (TBF, or HTB with u32 classifiers when subnets are listed), redirect the
// veth's ingress to an IFB device, and read all of it back for CHECK.

// hostVeth returns the pod's interface and the host end of its veth pair.
// The pod interface's IFLA_LINK is the peer's index in the host; the
// candidate must be a veth whose own peer is the pod interface and, where
// the kernel assigned namespace ids, whose peer lives in the pod's
// namespace.
func hostVeth(host, pod *netlink.Handle, ns *netns.NS, ifName string) (hostLink, podLink netlink.Link, err error) {
	podLink, err = pod.LinkByName(ifName)
	if err != nil {
		if nl.IsNotFound(err) {
			return nil, nil, pluginmain.Errorf(pluginmain.CodeInvalidEnv, "CNI_IFNAME: no interface %q in %s", ifName, ns.Path())
		}
		return nil, nil, fmt.Errorf("find %q in %s: %w", ifName, ns.Path(), err)
	}
	if _, ok := podLink.(*netlink.Veth); !ok {
		return nil, nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig,
			"CNI_IFNAME: %q is a %s interface; bandwidth shapes veth pairs (chain it after bridge or ptp)", ifName, podLink.Type())
	}
	peer := nl.VethPeerIndex(podLink)
	notHere := pluginmain.Errorf(pluginmain.CodeInvalidConfig,
		"CNI_IFNAME: the veth peer of %q (index %d) is not in the host network namespace; bandwidth shapes the host end", ifName, peer)
	if peer <= 0 {
		return nil, nil, notHere
	}
	hostLink, err = host.LinkByIndex(peer)
	if err != nil {
		if nl.IsNotFound(err) {
			return nil, nil, notHere
		}
		return nil, nil, fmt.Errorf("find the host end of %q: %w", ifName, err)
	}
	if _, ok := hostLink.(*netlink.Veth); !ok || nl.VethPeerIndex(hostLink) != podLink.Attrs().Index {
		return nil, nil, notHere
	}
	if id, err := host.GetNetNsIdByFd(ns.Fd()); err == nil && id >= 0 && hostLink.Attrs().NetNsID >= 0 && hostLink.Attrs().NetNsID != id {
		return nil, nil, notHere
	}
	return hostLink, podLink, nil
}

// rootQdisc returns the qdisc at the root of link, or nil for the default
// (noqueue, handle 0, which cannot be deleted).
func rootQdisc(h *netlink.Handle, link netlink.Link) (netlink.Qdisc, error) {
	return findQdisc(h, link, netlink.HANDLE_ROOT)
}

func findQdisc(h *netlink.Handle, link netlink.Link, parent uint32) (netlink.Qdisc, error) {
	qs, err := nl.Retry(func() ([]netlink.Qdisc, error) { return h.QdiscList(link) })
	if err != nil {
		return nil, fmt.Errorf("list qdiscs of %q: %w", link.Attrs().Name, err)
	}
	for _, q := range qs {
		if q.Attrs().Parent == parent && q.Attrs().Handle != 0 {
			return q, nil
		}
	}
	return nil, nil
}

// clearQdisc deletes the qdisc at parent (root or ingress) of link, if
// there is one other than the default.
func clearQdisc(h *netlink.Handle, link netlink.Link, parent uint32) error {
	q, err := findQdisc(h, link, parent)
	if err != nil || q == nil {
		return err
	}
	if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) && !nl.IsNotFound(err) {
		return fmt.Errorf("delete %s qdisc of %q: %w", q.Type(), link.Attrs().Name, err)
	}
	return nil
}

// installShaper puts d's shaper at the root of link: a TBF qdisc, or for
// subnet lists an HTB qdisc with one shaped class and u32 filters that send
// the listed traffic to it or past it.
func installShaper(h *netlink.Handle, link netlink.Link, d direction) error {
	name := link.Attrs().Name
	if err := clearQdisc(h, link, netlink.HANDLE_ROOT); err != nil {
		return err
	}
	attrs := netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: rootHandle, Parent: netlink.HANDLE_ROOT}
	if d.subnets.Mode == ShapeAll {
		tbf := &netlink.Tbf{QdiscAttrs: attrs, Rate: d.bucket.Rate, Limit: d.bucket.Limit, Buffer: d.bucket.Buffer}
		if err := h.QdiscAdd(tbf); err != nil {
			return fmt.Errorf("add tbf qdisc to %q: %w", name, err)
		}
		return nil
	}
	listed, def := subnetClass(d.subnets.Mode)
	htb := netlink.NewHtb(attrs)
	htb.Defcls = def
	if err := h.QdiscAdd(htb); err != nil {
		return fmt.Errorf("add htb qdisc to %q: %w", name, err)
	}
	if err := h.ClassAdd(htbClass(link, d.bucket)); err != nil {
		return fmt.Errorf("add htb class to %q: %w", name, err)
	}
	// The class's queue: as long as a TBF's (the same byte limit), not the
	// device's packet count a default leaf would get.
	if err := addBfifo(link.Attrs().Index, shapedClass, leafHandle, d.bucket.Limit); err != nil {
		return fmt.Errorf("add bfifo queue to htb class of %q: %w", name, err)
	}
	for _, f := range subnetFilters(link, d, listed) {
		if err := h.FilterAdd(f); err != nil {
			return fmt.Errorf("add u32 filter for %s to %q: %w", describeSel(f), name, err)
		}
	}
	return nil
}

// addBfifo attaches a byte-limited FIFO to parent. The netlink library has
// no typed bfifo, so the request (struct tc_fifo_qopt: the limit) is built
// here; it goes out on a socket of the calling thread's namespace, the
// host, like the library handle's.
func addBfifo(linkIndex int, parent, handle, limit uint32) error {
	req := vnl.NewNetlinkRequest(unix.RTM_NEWQDISC, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(&vnl.TcMsg{Family: vnl.FAMILY_ALL, Ifindex: int32(linkIndex), Handle: handle, Parent: parent})
	req.AddData(vnl.NewRtAttr(vnl.TCA_KIND, vnl.ZeroTerminated("bfifo")))
	req.AddData(vnl.NewRtAttr(vnl.TCA_OPTIONS, vnl.Uint32Attr(limit)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

func htbClass(link netlink.Link, b bucket) *netlink.HtbClass {
	return &netlink.HtbClass{
		ClassAttrs: netlink.ClassAttrs{LinkIndex: link.Attrs().Index, Parent: rootHandle, Handle: shapedClass},
		Rate:       b.Rate, Ceil: b.Rate, Buffer: b.Buffer, Cbuffer: b.Buffer, Quantum: htbQuantum(b.Rate),
	}
}

func subnetFilters(link netlink.Link, d direction, classID uint32) []*netlink.U32 {
	var out []*netlink.U32
	for _, p := range d.subnets.Prefixes {
		proto, sel := u32Match(p, d.matchSrc)
		prio := uint16(prioIPv4)
		if proto == unix.ETH_P_IPV6 {
			prio = prioIPv6
		}
		out = append(out, &netlink.U32{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: link.Attrs().Index, Parent: rootHandle, Priority: prio, Protocol: proto},
			ClassId:     classID,
			Sel:         sel,
		})
	}
	return out
}

func describeSel(f *netlink.U32) string {
	return fmt.Sprintf("protocol 0x%04x keys %v", f.Protocol, f.Sel.Keys)
}

// redirect sends everything that arrives on veth (the pod's egress) to the
// IFB device: an ingress qdisc with a match-all u32 filter whose action is
// a mirred egress redirect.
func redirect(h *netlink.Handle, veth, ifb netlink.Link) error {
	if err := clearQdisc(h, veth, netlink.HANDLE_INGRESS); err != nil {
		return err
	}
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: veth.Attrs().Index, Handle: ingressQdisc, Parent: netlink.HANDLE_INGRESS}}
	if err := h.QdiscAdd(q); err != nil {
		return fmt.Errorf("add ingress qdisc to %q: %w", veth.Attrs().Name, err)
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: veth.Attrs().Index, Parent: ingressQdisc, Priority: prioRedirect, Protocol: unix.ETH_P_ALL},
		RedirIndex:  ifb.Attrs().Index,
	}
	if err := h.FilterAdd(f); err != nil {
		return fmt.Errorf("add redirect filter from %q to %q: %w", veth.Attrs().Name, ifb.Attrs().Name, err)
	}
	return nil
}

// createIFB creates the attachment's IFB device, up, with the veth's MTU
// and queue length (an HTB qdisc's queue of unshaped traffic is as long
// as the device's).
// A device of that name left by an earlier ADD of the same attachment is
// replaced; any other is an error.
func createIFB(h *netlink.Handle, name, alias string, veth netlink.Link) (netlink.Link, error) {
	if old, err := h.LinkByName(name); err == nil {
		if old.Type() != "ifb" || old.Attrs().Alias != alias {
			return nil, fmt.Errorf("create IFB device %q: the name is taken by a %s interface (alias %q) that is not this attachment's", name, old.Type(), old.Attrs().Alias)
		}
		if err := h.LinkDel(old); err != nil && !nl.IsNotFound(err) {
			return nil, fmt.Errorf("replace IFB device %q: %w", name, err)
		}
	} else if !nl.IsNotFound(err) {
		return nil, fmt.Errorf("look up IFB device %q: %w", name, err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.MTU = veth.Attrs().MTU
	la.TxQLen = veth.Attrs().TxQLen
	if la.TxQLen <= 0 {
		la.TxQLen = 1000
	}
	la.Flags = net.FlagUp
	if err := h.LinkAdd(&netlink.Ifb{LinkAttrs: la}); err != nil {
		return nil, fmt.Errorf("create IFB device %q: %w", name, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find new IFB device %q: %w", name, err)
	}
	if err := h.LinkSetAlias(l, alias); err != nil {
		_ = h.LinkDel(l)
		return nil, fmt.Errorf("tag IFB device %q: %w", name, err)
	}
	l.Attrs().Alias = alias
	return l, nil
}

// ownIFB returns the attachment's IFB device, nil when there is none. A
// device of that name that is not ours is left alone (and reported).
func ownIFB(h *netlink.Handle, name, alias string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		if nl.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up IFB device %q: %w", name, err)
	}
	if l.Type() != "ifb" || l.Attrs().Alias != alias {
		return nil, fmt.Errorf("interface %q is a %s with alias %q, not this attachment's IFB device; left alone", name, l.Type(), l.Attrs().Alias)
	}
	return l, nil
}

// checkShaper verifies that the root of link holds exactly d's shaper.
func checkShaper(h *netlink.Handle, link netlink.Link, d direction) error {
	name := link.Attrs().Name
	q, err := rootQdisc(h, link)
	if err != nil {
		return err
	}
	if q == nil {
		return fmt.Errorf("%s: %q has no shaping qdisc", d.name, name)
	}
	if q.Attrs().Handle != rootHandle {
		return fmt.Errorf("%s: the root qdisc of %q has handle %s, want %s", d.name, name, netlink.HandleStr(q.Attrs().Handle), netlink.HandleStr(rootHandle))
	}
	b := d.bucket
	if d.subnets.Mode == ShapeAll {
		tbf, ok := q.(*netlink.Tbf)
		if !ok {
			return fmt.Errorf("%s: the root qdisc of %q is %s, want tbf", d.name, name, q.Type())
		}
		if tbf.Rate != b.Rate || tbf.Buffer != b.Buffer || tbf.Limit != b.Limit {
			return fmt.Errorf("%s: tbf of %q has rate %d B/s, buffer %d ticks, limit %d B; want %d B/s, %d ticks, %d B",
				d.name, name, tbf.Rate, tbf.Buffer, tbf.Limit, b.Rate, b.Buffer, b.Limit)
		}
		return nil
	}
	htb, ok := q.(*netlink.Htb)
	if !ok {
		return fmt.Errorf("%s: the root qdisc of %q is %s, want htb (%s)", d.name, name, q.Type(), d.subnets.Mode)
	}
	listed, def := subnetClass(d.subnets.Mode)
	if htb.Defcls != def {
		return fmt.Errorf("%s: htb of %q sends unclassified traffic to class %d, want %d", d.name, name, htb.Defcls, def)
	}
	classes, err := nl.Retry(func() ([]netlink.Class, error) { return h.ClassList(link, rootHandle) })
	if err != nil {
		return fmt.Errorf("list classes of %q: %w", name, err)
	}
	var cl *netlink.HtbClass
	for _, c := range classes {
		if hc, ok := c.(*netlink.HtbClass); ok && hc.Handle == shapedClass {
			cl = hc
		}
	}
	want := htbClass(link, b)
	switch {
	case cl == nil:
		return fmt.Errorf("%s: htb of %q has no class %s", d.name, name, netlink.HandleStr(shapedClass))
	case cl.Rate != want.Rate || cl.Ceil != want.Ceil || cl.Buffer != want.Buffer || cl.Cbuffer != want.Cbuffer:
		return fmt.Errorf("%s: class %s of %q has rate %d B/s, ceil %d B/s, buffer %d ticks; want %d B/s, %d B/s, %d ticks",
			d.name, netlink.HandleStr(shapedClass), name, cl.Rate, cl.Ceil, cl.Buffer, want.Rate, want.Ceil, want.Buffer)
	}
	leaf, err := findQdisc(h, link, shapedClass)
	if err != nil {
		return err
	}
	if leaf == nil || leaf.Type() != "bfifo" || leaf.Attrs().Handle != leafHandle {
		return fmt.Errorf("%s: class %s of %q has queue %v, want bfifo %s", d.name, netlink.HandleStr(shapedClass), name, leaf, netlink.HandleStr(leafHandle))
	}
	filters, err := nl.Retry(func() ([]netlink.Filter, error) { return h.FilterList(link, rootHandle) })
	if err != nil {
		return fmt.Errorf("list filters of %q: %w", name, err)
	}
	have := map[string]int{}
	for _, f := range filters {
		if u, ok := f.(*netlink.U32); ok && u.Sel != nil && u.ClassId != 0 {
			have[filterKey(u.Protocol, u.ClassId, u.Sel)]++
		}
	}
	var missing []string
	for _, f := range subnetFilters(link, d, listed) {
		k := filterKey(f.Protocol, f.ClassId, f.Sel)
		if have[k] == 0 {
			missing = append(missing, k)
			continue
		}
		have[k]--
	}
	var extra []string
	for k, n := range have {
		for ; n > 0; n-- {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	if len(missing) > 0 || len(extra) > 0 {
		return fmt.Errorf("%s: filters of %q differ: missing %v, unexpected %v", d.name, name, missing, extra)
	}
	return nil
}

func filterKey(proto uint16, classID uint32, sel *netlink.TcU32Sel) string {
	s := fmt.Sprintf("proto=0x%04x class=%s", proto, netlink.HandleStr(classID))
	for _, k := range sel.Keys {
		s += fmt.Sprintf(" %08x/%08x@%d", k.Val, k.Mask, k.Off)
	}
	return s
}

// checkRedirect verifies that veth's ingress is redirected to ifb.
func checkRedirect(h *netlink.Handle, veth, ifb netlink.Link) error {
	q, err := findQdisc(h, veth, netlink.HANDLE_INGRESS)
	if err != nil {
		return err
	}
	if q == nil {
		return fmt.Errorf("egress: %q has no ingress qdisc redirecting to %q", veth.Attrs().Name, ifb.Attrs().Name)
	}
	filters, err := nl.Retry(func() ([]netlink.Filter, error) { return h.FilterList(veth, ingressQdisc) })
	if err != nil {
		return fmt.Errorf("list ingress filters of %q: %w", veth.Attrs().Name, err)
	}
	for _, f := range filters {
		if u, ok := f.(*netlink.U32); ok && u.Sel != nil && u.RedirIndex == ifb.Attrs().Index {
			return nil
		}
	}
	return fmt.Errorf("egress: no filter on %q redirects to %q", veth.Attrs().Name, ifb.Attrs().Name)
}
