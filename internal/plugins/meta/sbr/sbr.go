package sbr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/ipcfg"
	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/nl"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// Protocol is the routing protocol number on every rule and route the
// plugin adds (`ip rule` and `ip route` show it as "proto 76"): DEL and
// CHECK find them by it, without prevResult or any state file.
const Protocol = 76

// FirstTable is where the search for a free routing table starts.
const FirstTable = 100

// lastTable bounds the search (a namespace would need 10000 tables in use
// to exhaust it).
const lastTable = FirstTable + 10000

// Plugin returns the sbr plugin.
func Plugin() *pluginmain.Plugin {
	return &pluginmain.Plugin{
		Name:   "sbr",
		About:  "linen sbr: source-based routing for a pod interface (chained after an interface plugin)",
		Add:    add,
		Del:    del,
		Check:  check,
		GC:     func(context.Context, *pluginmain.Env, *pluginmain.Args) error { return nil },
		Status: status,
	}
}

func add(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) (_ types.Result, err error) {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return nil, err
	}
	if conf.PrevResult == nil {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: missing: sbr must follow an interface plugin in the chain")
	}
	ips := ifaceIPs(conf.PrevResult, a.IfName)
	if len(ips) == 0 {
		env.Log.Debug("sbr: the interface has no address; nothing to route", "ifname", a.IfName)
		return conf.PrevResult, nil
	}
	h, err := netlink.NewHandleAt(a.NS.Handle())
	if err != nil {
		return nil, fmt.Errorf("open netlink in %q: %w", a.Netns, err)
	}
	defer h.Close()
	link, err := h.LinkByName(a.IfName)
	if err != nil {
		return nil, fmt.Errorf("find interface %q in %q: %w", a.IfName, a.Netns, err)
	}
	unlock, err := lockNS(a.NS)
	if err != nil {
		return nil, err
	}
	defer unlock()

	var undo pluginmain.Undo
	defer undo.OnError(&err)
	rules, err := ourRules(h)
	if err != nil {
		return nil, err
	}
	table := conf.Table
	if table == 0 {
		if table, err = pickTable(h, rules, ips); err != nil {
			return nil, err
		}
		routes, err := tableRoutes(h, link, conf, ips, table)
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			if err := h.RouteAdd(r); err != nil {
				if errors.Is(err, unix.EEXIST) {
					continue // a repeated ADD
				}
				return nil, fmt.Errorf("add route %s to table %d: %w", routeText(r), table, err)
			}
			undo.Push(func() { _ = h.RouteDel(r) })
		}
	}
	for _, ip := range ips {
		if hasRule(rules, ip, table) {
			continue // a repeated ADD (the kernel would add a duplicate)
		}
		r := rule(ip, table)
		if err := h.RuleAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				continue
			}
			return nil, fmt.Errorf("add rule from %s lookup %d: %w", ip, table, err)
		}
		undo.Push(func() { _ = h.RuleDel(r) })
	}
	env.Log.Debug("sbr: source-based routing set up", "ifname", a.IfName, "table", table)
	return conf.PrevResult, nil
}

func del(_ context.Context, env *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		// The rules are found by their protocol; the configuration only
		// narrows the search.
		env.Log.Warn("sbr: ignoring invalid configuration on DEL; removing by protocol", "error", err)
		conf = &Config{}
	}
	if a.NS == nil {
		return nil // the namespace is gone, and its rules and routes with it
	}
	h, err := netlink.NewHandleAt(a.NS.Handle())
	if err != nil {
		return fmt.Errorf("open netlink in %q: %w", a.Netns, err)
	}
	defer h.Close()
	unlock, err := lockNS(a.NS)
	if err != nil {
		return err
	}
	defer unlock()

	// The interface's addresses: from prevResult and from the interface
	// itself, if they are still there.
	mine := map[netip.Addr]bool{}
	if conf.PrevResult != nil {
		for _, ip := range ifaceIPs(conf.PrevResult, a.IfName) {
			mine[ip] = true
		}
	}
	if link, err := h.LinkByName(a.IfName); err == nil {
		addrs, err := nl.Retry(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
		if err != nil {
			return fmt.Errorf("list addresses of %q: %w", a.IfName, err)
		}
		for _, ad := range addrs {
			if p := ipcfg.Prefix(*ad.IPNet); p.IsValid() {
				mine[p.Addr()] = true
			}
		}
	} else if !nl.IsNotFound(err) {
		return fmt.Errorf("find interface %q: %w", a.IfName, err)
	}
	// Rules whose source no interface has any more are dead: removed too.
	present, err := nsAddrs(h)
	if err != nil {
		return err
	}
	rules, err := ourRules(h)
	if err != nil {
		return err
	}
	emptied := map[int]bool{}
	kept := map[int]bool{}
	for _, r := range rules {
		src, ok := ruleSource(r)
		if !ok || (!mine[src] && present[src]) {
			kept[r.Table] = true
			continue
		}
		if err := h.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete rule from %s lookup %d: %w", src, r.Table, err)
		}
		emptied[r.Table] = true
	}
	for table := range emptied {
		if kept[table] || table == conf.Table {
			continue // still used, or a table the configuration owns
		}
		if err := flushTable(h, table); err != nil {
			return err
		}
	}
	return nil
}

func check(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) error {
	conf, err := parseConfig(a.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return pluginmain.Errorf(pluginmain.CodeInvalidConfig, "prevResult: missing: CHECK needs the result of ADD")
	}
	ips := ifaceIPs(conf.PrevResult, a.IfName)
	if len(ips) == 0 {
		return nil
	}
	h, err := netlink.NewHandleAt(a.NS.Handle())
	if err != nil {
		return fmt.Errorf("open netlink in %q: %w", a.Netns, err)
	}
	defer h.Close()
	link, err := h.LinkByName(a.IfName)
	if err != nil {
		return fmt.Errorf("find interface %q: %w", a.IfName, err)
	}
	rules, err := ourRules(h)
	if err != nil {
		return err
	}
	table := 0
	for _, ip := range ips {
		t := -1
		for _, r := range rules {
			if src, ok := ruleSource(r); ok && src == ip {
				t = r.Table
			}
		}
		switch {
		case t < 0:
			return fmt.Errorf("no rule from %s (proto %d)", ip, Protocol)
		case conf.Table != 0 && t != conf.Table:
			return fmt.Errorf("rule from %s looks up table %d, not the configured %d", ip, t, conf.Table)
		case table != 0 && t != table:
			return fmt.Errorf("the interface's rules look up two tables, %d and %d", table, t)
		}
		table = t
	}
	if conf.Table != 0 {
		return nil
	}
	have, err := nl.Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("list routes of table %d: %w", table, err)
	}
	for _, fam := range families(ips) {
		gw := gateway(conf, ips, fam)
		found, any := false, false
		for _, r := range have {
			if r.LinkIndex != link.Attrs().Index || r.Family != fam {
				continue
			}
			any = true
			if isDefault(r) && (!gw.IsValid() || addrOf(r.Gw) == gw) {
				found = true
			}
		}
		switch {
		case !any:
			return fmt.Errorf("table %d has no %s route via %q", table, famName(fam), a.IfName)
		case gw.IsValid() && !found:
			return fmt.Errorf("table %d has no default route via %s dev %q", table, gw, a.IfName)
		}
	}
	return nil
}

func status(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) error {
	_, err := parseConfig(a.StdinData)
	return err
}

// ifaceIPs returns the addresses of the sandbox interface ifName in the
// result, without link-local ones (their scope is the link: no rule is
// needed to leave through it).
func ifaceIPs(prev *current.Result, ifName string) []netip.Addr {
	return ipcfg.RoutedAddrs(ipcfg.IPsFor(prev, ifName))
}

func families(ips []netip.Addr) []int {
	var out []int
	v4, v6 := false, false
	for _, a := range ips {
		if a.Is4() && !v4 {
			v4 = true
			out = append(out, netlink.FAMILY_V4)
		}
		if a.Is6() && !v6 {
			v6 = true
			out = append(out, netlink.FAMILY_V6)
		}
	}
	return out
}

func famName(fam int) string {
	if fam == netlink.FAMILY_V6 {
		return "IPv6"
	}
	return "IPv4"
}

// gateway is the default-route gateway of a family: the configured one,
// else the first gateway of the interface's addresses of that family in
// the result.
func gateway(conf *Config, ips []netip.Addr, fam int) netip.Addr {
	if fam == netlink.FAMILY_V4 && conf.Gateway4.IsValid() {
		return conf.Gateway4
	}
	if fam == netlink.FAMILY_V6 && conf.Gateway6.IsValid() {
		return conf.Gateway6
	}
	for _, ip := range conf.PrevResult.IPs {
		if ip == nil || ip.Gateway == nil {
			continue
		}
		a := addrOf(ip.Address.IP)
		if !contains(ips, a) {
			continue
		}
		g := addrOf(ip.Gateway)
		if g.IsValid() && g.Is4() == (fam == netlink.FAMILY_V4) {
			return g
		}
	}
	return netip.Addr{}
}

func contains(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// rule is "from ip lookup table", marked with Protocol.
func rule(ip netip.Addr, table int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = netlink.FAMILY_V4
	if ip.Is6() {
		r.Family = netlink.FAMILY_V6
	}
	r.Src = &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}
	r.Table = table
	r.Protocol = Protocol
	return r
}

// hasRule reports whether rules hold "from ip lookup table".
func hasRule(rules []netlink.Rule, ip netip.Addr, table int) bool {
	for _, r := range rules {
		if src, ok := ruleSource(r); ok && src == ip && r.Table == table {
			return true
		}
	}
	return false
}

// ruleSource returns the single address a rule selects by source.
func ruleSource(r netlink.Rule) (netip.Addr, bool) {
	if r.Src == nil {
		return netip.Addr{}, false
	}
	ones, bits := r.Src.Mask.Size()
	a := addrOf(r.Src.IP)
	if !a.IsValid() || ones != bits || ones != a.BitLen() {
		return netip.Addr{}, false
	}
	return a, true
}

// ourRules lists the namespace's rules that carry Protocol.
func ourRules(h *netlink.Handle) ([]netlink.Rule, error) {
	all, err := nl.Retry(func() ([]netlink.Rule, error) { return h.RuleList(netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	var out []netlink.Rule
	for _, r := range all {
		if r.Protocol == Protocol {
			out = append(out, r)
		}
	}
	return out, nil
}

// nsAddrs is the set of addresses configured in the namespace.
func nsAddrs(h *netlink.Handle) (map[netip.Addr]bool, error) {
	addrs, err := nl.Retry(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	out := map[netip.Addr]bool{}
	for _, a := range addrs {
		if p := ipcfg.Prefix(*a.IPNet); p.IsValid() {
			out[p.Addr()] = true
		}
	}
	return out, nil
}

// pickTable returns the table of an earlier ADD of these addresses (a
// repeated ADD), else the first table from FirstTable upward that no rule
// points to and no route of either family is in.
func pickTable(h *netlink.Handle, ours []netlink.Rule, ips []netip.Addr) (int, error) {
	for _, r := range ours {
		if src, ok := ruleSource(r); ok && contains(ips, src) {
			return r.Table, nil
		}
	}
	used := map[int]bool{}
	all, err := nl.Retry(func() ([]netlink.Rule, error) { return h.RuleList(netlink.FAMILY_ALL) })
	if err != nil {
		return 0, fmt.Errorf("list rules: %w", err)
	}
	for _, r := range all {
		used[r.Table] = true
	}
	routes, err := nl.Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return 0, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		used[r.Table] = true
	}
	for t := FirstTable; t < lastTable; t++ {
		if !used[t] {
			return t, nil
		}
	}
	return 0, fmt.Errorf("no free routing table from %d to %d", FirstTable, lastTable-1)
}

// tableRoutes returns the routes to put into table: copies of the
// interface's routes in the main table and, per family with a gateway, a
// default route via it (a configured gateway replaces a copied default
// route). Device routes come first, so that gateways resolve.
func tableRoutes(h *netlink.Handle, link netlink.Link, conf *Config, ips []netip.Addr, table int) ([]*netlink.Route, error) {
	main, err := nl.Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes of %q: %w", link.Attrs().Name, err)
	}
	var out []*netlink.Route
	hasDefault := map[int]bool{}
	for _, fam := range families(ips) {
		configured := (fam == netlink.FAMILY_V4 && conf.Gateway4.IsValid()) || (fam == netlink.FAMILY_V6 && conf.Gateway6.IsValid())
		for _, r := range main {
			if r.Family != fam || (configured && isDefault(r)) || r.Type != unix.RTN_UNICAST {
				continue
			}
			c := &netlink.Route{
				LinkIndex: r.LinkIndex, Family: r.Family, Dst: r.Dst, Src: r.Src, Gw: r.Gw, Scope: r.Scope,
				Priority: r.Priority, Flags: r.Flags, MTU: r.MTU, AdvMSS: r.AdvMSS, Hoplimit: r.Hoplimit,
				Table: table, Protocol: Protocol, Type: unix.RTN_UNICAST,
			}
			hasDefault[fam] = hasDefault[fam] || isDefault(r)
			out = append(out, c)
		}
		if hasDefault[fam] {
			continue
		}
		if gw := gateway(conf, ips, fam); gw.IsValid() {
			bits := gw.BitLen()
			out = append(out, &netlink.Route{
				LinkIndex: link.Attrs().Index, Family: fam,
				Dst: &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)},
				Gw:  gw.AsSlice(), Table: table, Protocol: Protocol, Type: unix.RTN_UNICAST,
				Scope: netlink.SCOPE_UNIVERSE,
			})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Gw == nil && out[j].Gw != nil })
	return out, nil
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

func routeText(r *netlink.Route) string {
	dst := "default"
	if !isDefault(*r) {
		dst = r.Dst.String()
	}
	if r.Gw != nil {
		return dst + " via " + r.Gw.String()
	}
	return dst
}

// flushTable deletes the routes marked with Protocol in table (both
// families).
func flushTable(h *netlink.Handle, table int) error {
	routes, err := nl.Retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table, Protocol: Protocol},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return fmt.Errorf("list routes of table %d: %w", table, err)
	}
	for _, r := range routes {
		if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete route %s from table %d: %w", routeText(&r), table, err)
		}
	}
	return nil
}

// lockNS serialises the plugin's changes in one pod namespace (two
// interfaces set up at once must not pick the same table): an flock on the
// namespace file, which every opener of the namespace shares. It polls so
// that the wait is bounded.
func lockNS(ns *netns.NS) (func(), error) {
	fd := ns.Fd()
	deadline := time.Now().Add(10 * time.Second)
	delay := 200 * time.Microsecond
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(fd, unix.LOCK_UN) }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("lock network namespace %q: %w", ns.Path(), err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lock network namespace %q: still held after 10s", ns.Path())
		}
		time.Sleep(delay)
		delay = min(2*delay, 20*time.Millisecond)
	}
}
