package nft

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns/nstest"
)

func fwEntry(id string, policy IngressPolicy, bridge string, ips ...string) FirewallEntry {
	e := FirewallEntry{Network: "fwnet", ContainerID: id, IfName: "eth0", Policy: policy, Bridge: bridge}
	for _, s := range ips {
		e.IPs = append(e.IPs, netip.MustParseAddr(s))
	}
	return e
}

// The doc comment of firewall.go shows the table as FirewallRuleset renders
// it, and the kernel prints our expressions back as exactly that text.
func TestFirewallRulesetKernel(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	a := fwEntry("a", IngressIsolated, "br0", "10.0.0.2", "fd00::2")
	if _, err := AddFirewall(c, a); err != nil {
		t.Fatal(err)
	}
	if err := DelFirewall(c, a.Network, a.ContainerID, a.IfName, nil); err != nil {
		t.Fatal(err)
	}
	got := nftIn(t, ns, "list", "table", "inet", FirewallTable)
	if diff := cmp.Diff(FirewallRuleset(DefaultAdminChain), got); diff != "" {
		t.Errorf("(-ours +kernel):\n%s", diff)
	}
	// A second admin chain: its jump comes first.
	b := a
	b.AdminChain = "OTHER-ADMIN"
	if _, err := AddFirewall(c, b); err != nil {
		t.Fatal(err)
	}
	if err := DelFirewall(c, a.Network, a.ContainerID, a.IfName, &b); err != nil {
		t.Fatal(err)
	}
	got = nftIn(t, ns, "list", "table", "inet", FirewallTable)
	if diff := cmp.Diff(FirewallRuleset(DefaultAdminChain, "OTHER-ADMIN"), got); diff != "" {
		t.Errorf("two admin chains (-ours +kernel):\n%s", diff)
	}
	st, err := c.fwState()
	if err != nil || !st.complete() || !st.jumps[DefaultAdminChain] || !st.jumps["OTHER-ADMIN"] {
		t.Errorf("state = %+v, %v", st, err)
	}
}

func TestFirewallRulesetInDoc(t *testing.T) {
	doc := docBlock(t, "firewall.go", "table inet linen_fw {")
	want := FirewallRuleset(DefaultAdminChain)
	// The doc omits the blank lines between blocks.
	want = strings.ReplaceAll(want, "\n\n", "\n")
	if diff := cmp.Diff(want, doc); diff != "" {
		t.Errorf("firewall.go doc comment is out of date (-want +doc):\n%s", diff)
	}
}

// docBlock extracts the indented block starting with first from a Go
// file's comments, unindented.
func docBlock(t *testing.T, file, first string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		body, ok := strings.CutPrefix(l, "//\t")
		switch {
		case !in && ok && body == first:
			in = true
			out = append(out, body)
		case in && ok:
			out = append(out, body)
		case in:
			return strings.Join(out, "\n") + "\n"
		}
	}
	t.Fatalf("%s: no block starting with %q", file, first)
	return ""
}

// Elements: ADD puts each address in pods4/6 and, by policy, (address .
// bridge) in samebr and isolated; a repeated ADD changes nothing; DEL
// removes exactly the attachment's elements, by key or by tag; CHECK sees
// a missing element; GC keeps the valid attachments.
func TestFirewallElements(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	a := fwEntry("a", IngressOpen, "", "10.0.0.2", "fd00::2")
	b := fwEntry("b", IngressSameBridge, "br0", "10.0.0.3")
	d := fwEntry("d", IngressIsolated, "br1", "10.0.1.2", "fd00:1::2")
	for _, e := range []FirewallEntry{a, b, d, d} {
		if _, err := AddFirewall(c, e); err != nil {
			t.Fatalf("add %s: %v", e.ContainerID, err)
		}
	}
	want := map[string][]string{
		"pods4":     {`10.0.0.2 comment "net=fwnet id=a if=eth0"`, `10.0.0.3 comment "net=fwnet id=b if=eth0"`, `10.0.1.2 comment "net=fwnet id=d if=eth0"`},
		"pods6":     {`fd00:1::2 comment "net=fwnet id=d if=eth0"`, `fd00::2 comment "net=fwnet id=a if=eth0"`},
		"samebr4":   {`10.0.0.3 . "br0" comment "net=fwnet id=b if=eth0"`, `10.0.1.2 . "br1" comment "net=fwnet id=d if=eth0"`},
		"samebr6":   {`fd00:1::2 . "br1" comment "net=fwnet id=d if=eth0"`},
		"isolated4": {`10.0.1.2 . "br1" comment "net=fwnet id=d if=eth0"`},
		"isolated6": {`fd00:1::2 . "br1" comment "net=fwnet id=d if=eth0"`},
	}
	if diff := cmp.Diff(want, fwElements(t, c)); diff != "" {
		t.Errorf("elements (-want +got):\n%s", diff)
	}
	for _, e := range []FirewallEntry{a, b, d} {
		if err := CheckFirewall(c, e); err != nil {
			t.Errorf("check %s: %v", e.ContainerID, err)
		}
	}
	// A stale element (the address of a pod whose DEL was missed) is
	// taken over.
	stale := fwEntry("new", IngressOpen, "", "10.0.0.3")
	if _, err := AddFirewall(c, stale); err != nil {
		t.Fatal(err)
	}
	if err := CheckFirewall(c, b); err == nil || !strings.Contains(err.Error(), `10.0.0.3 belongs to "net=fwnet id=new if=eth0"`) {
		t.Errorf("check of the replaced attachment: %v", err)
	}
	if err := DelFirewall(c, "fwnet", "new", "eth0", &stale); err != nil {
		t.Fatal(err)
	}
	// DEL by key (what ADD was given, whatever its policy), then by tag.
	known := d
	known.Policy = IngressOpen
	if err := DelFirewall(c, "fwnet", "d", "eth0", &known); err != nil {
		t.Fatal(err)
	}
	if err := DelFirewall(c, "fwnet", "b", "eth0", nil); err != nil {
		t.Fatal(err)
	}
	want = map[string][]string{
		"pods4": {`10.0.0.2 comment "net=fwnet id=a if=eth0"`},
		"pods6": {`fd00::2 comment "net=fwnet id=a if=eth0"`},
	}
	if diff := cmp.Diff(want, fwElements(t, c)); diff != "" {
		t.Errorf("after DEL (-want +got):\n%s", diff)
	}
	if err := CheckFirewall(c, d); err == nil {
		t.Error("CHECK of a deleted attachment succeeded")
	}
	// Repeated DEL: nothing to do, no transaction.
	c.deleted = false
	for _, k := range []*FirewallEntry{&d, nil} {
		if err := DelFirewall(c, "fwnet", "d", "eth0", k); err != nil {
			t.Fatal(err)
		}
	}
	if c.Deleted() {
		t.Error("a DEL with nothing to delete sent a transaction")
	}
	// GC: another network's elements stay; a is not valid any more.
	other := fwEntry("x", IngressOpen, "", "10.9.0.2")
	other.Network = "othernet"
	if _, err := AddFirewall(c, other); err != nil {
		t.Fatal(err)
	}
	if err := GCFirewall(c, "fwnet", []Attachment{{ContainerID: "b", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	want = map[string][]string{"pods4": {`10.9.0.2 comment "net=othernet id=x if=eth0"`}}
	if diff := cmp.Diff(want, fwElements(t, c)); diff != "" {
		t.Errorf("after GC (-want +got):\n%s", diff)
	}
}

func fwElements(t *testing.T, c *Conn) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, s := range fwSets {
		es, err := c.list(fwTable, s)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			out[s.name] = append(out[s.name], e.String())
		}
		sortStrings(out[s.name])
	}
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// Forward chains of other tables whose policy drops get the accept rule
// once; one that runs before ours is reported, not changed; the admin
// chain is never flushed, also when the table is repaired.
func TestFirewallHostChainsAndRepair(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	for _, cmd := range []string{
		"add table ip filter",
		"add chain ip filter FORWARD { type filter hook forward priority filter; policy drop; }",
		"add table inet hostfw",
		"add chain inet hostfw gate { type filter hook forward priority 10; policy drop; }",
		"add chain inet hostfw early { type filter hook forward priority -100; policy drop; }",
		"add chain inet hostfw open { type filter hook forward priority 0; policy accept; }",
		"add chain inet hostfw regular",
		"add rule inet hostfw gate ct state invalid drop",
	} {
		nftIn(t, ns, strings.Fields(cmd)...)
	}
	e := fwEntry("a", IngressOpen, "", "10.0.0.2")
	for i := 0; i < 2; i++ {
		early, err := AddFirewall(c, e)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"inet hostfw early (priority -100)"}, early); diff != "" {
			t.Errorf("early chains (-want +got):\n%s", diff)
		}
	}
	rule := "\t\t" + HostRuleText() + "\n"
	for _, ch := range [][]string{{"ip", "filter", "FORWARD"}, {"inet", "hostfw", "gate"}} {
		got := nftIn(t, ns, "list", "chain", ch[0], ch[1], ch[2])
		if strings.Count(got, HostRuleText()) != 1 || !strings.Contains(got, "policy drop;\n"+rule) {
			t.Errorf("%v: want the accept rule once, first:\n%s", ch, got)
		}
	}
	for _, ch := range [][]string{{"inet", "hostfw", "early"}, {"inet", "hostfw", "open"}, {"inet", "hostfw", "regular"}} {
		if got := nftIn(t, ns, "list", "chain", ch[0], ch[1], ch[2]); strings.Contains(got, "linen") {
			t.Errorf("%v was changed:\n%s", ch, got)
		}
	}
	if ipt, err := exec.LookPath("iptables"); err != nil || !strings.Contains(iptablesVersion(ipt), "nf_tables") {
		t.Log("iptables-nft is not installed: its view of the FORWARD chain is not checked")
	} else {
		out, err := exec.Command("ip", "netns", "exec", filepath.Base(ns.Path()), ipt, "-S", "FORWARD").CombinedOutput()
		want := `-A FORWARD -m mark --mark 0x400000/0x400000 -m comment --comment "linen firewall: accept pod traffic" -j ACCEPT`
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("iptables -S FORWARD: %v\n%s\nwant %s", err, out, want)
		}
	}
	if err := CheckFirewall(c, e); err != nil {
		t.Errorf("check: %v", err)
	}
	// A table flushed by iptables-restore loses the rule: CHECK says so,
	// the next ADD puts it back.
	nftIn(t, ns, "flush", "chain", "ip", "filter", "FORWARD")
	if err := CheckFirewall(c, e); err == nil || !strings.Contains(err.Error(), "ip filter FORWARD") {
		t.Errorf("check without the accept rule: %v", err)
	}
	// Repair: a static rule deleted by hand; the admin chain keeps the
	// administrator's rule.
	nftIn(t, ns, "add", "rule", "inet", FirewallTable, DefaultAdminChain, "ip", "daddr", "10.0.0.9", "drop")
	h := ruleHandle(t, c, "pods6")
	nftIn(t, ns, "delete", "rule", "inet", FirewallTable, "forward", "handle", h)
	if err := CheckFirewall(c, e); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("check of a damaged table: %v", err)
	}
	if _, err := AddFirewall(c, e); err != nil {
		t.Fatal(err)
	}
	if err := CheckFirewall(c, e); err != nil {
		t.Errorf("check after repair: %v", err)
	}
	if got := nftIn(t, ns, "list", "chain", "inet", FirewallTable, DefaultAdminChain); !strings.Contains(got, "ip daddr 10.0.0.9 drop") {
		t.Errorf("the admin chain lost its rule:\n%s", got)
	}
	if got := nftIn(t, ns, "list", "chain", "ip", "filter", "FORWARD"); strings.Count(got, HostRuleText()) != 1 {
		t.Errorf("ADD did not restore the accept rule:\n%s", got)
	}
}

func iptablesVersion(bin string) string {
	out, _ := exec.Command(bin, "-V").CombinedOutput()
	return string(out)
}

// ruleHandle returns the handle of the first forward rule whose text
// mentions word.
func ruleHandle(t *testing.T, c *Conn, word string) string {
	t.Helper()
	data, err := c.dump("list", fwRulesDumpRequest(fwTable.family, FirewallTable, "forward"))
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range data {
		ri, err := decodeRule(d)
		if err != nil {
			t.Fatal(err)
		}
		// The static rules follow the admin jump in fwForward order.
		if i >= 1 && strings.Contains(fwForward.rules[i-1].text, word) {
			return uitoa(ri.handle)
		}
	}
	t.Fatalf("no rule with %q", word)
	return ""
}

func uitoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b []byte
	for v > 0 {
		b = append([]byte{byte('0' + v%10)}, b...)
		v /= 10
	}
	return string(b)
}

func TestFirewallSchemaAndUsable(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	if err := c.FirewallUsable(); err != nil {
		t.Fatalf("usable on an empty namespace: %v", err)
	}
	if out := nftIn(t, ns, "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Errorf("the usability check changed the ruleset:\n%s", out)
	}
	nftIn(t, ns, "add", "table", "inet", FirewallTable, "{", "comment", `"linen schema=99"`, ";", "}")
	e := fwEntry("a", IngressOpen, "", "10.0.0.2")
	var se *SchemaError
	if _, err := AddFirewall(c, e); !asSchema(err, &se) {
		t.Errorf("ADD on a foreign layout: %v", err)
	}
	if err := c.FirewallUsable(); !asSchema(err, &se) {
		t.Errorf("usable on a foreign layout: %v", err)
	}
}

func asSchema(err error, se **SchemaError) bool {
	if err == nil {
		return false
	}
	e, ok := err.(*SchemaError)
	*se = e
	return ok
}

func TestFirewallEntryErrors(t *testing.T) {
	for _, tc := range []struct {
		e    FirewallEntry
		want string
	}{
		{fwEntry("a", IngressOpen, ""), "no IP address"},
		{fwEntry("a", IngressSameBridge, "", "10.0.0.2"), `needs the pod's bridge, got interface name ""`},
		{fwEntry("a", IngressIsolated, "a-very-long-bridge-name", "10.0.0.2"), "needs the pod's bridge"},
		{fwEntry("a", IngressPolicy(7), "br0", "10.0.0.2"), "unknown ingress policy"},
	} {
		if _, err := firewallElems(tc.e); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.e, err, tc.want)
		}
	}
	for name, ok := range map[string]bool{"CNI-ADMIN": true, "a.b_c-1": true, "": false, ".x": false,
		"forward": false, "x y": false, strings.Repeat("a", 29): false, "ümlaut": false} {
		if err := ValidAdminChain(name); (err == nil) != ok {
			t.Errorf("ValidAdminChain(%q) = %v", name, err)
		}
	}
}

// The rule and chain decoders read what google/nftables encodes.
func TestDecodeRuleAndChain(t *testing.T) {
	msgs, err := record(func(cc *nftables.Conn) error {
		tb := &nftables.Table{Name: "filter", Family: nftables.TableFamilyIPv4}
		drop := nftables.ChainPolicyDrop
		cc.AddChain(&nftables.Chain{Name: "FORWARD", Table: tb, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(-5), Policy: &drop})
		cc.AddRule(&nftables.Rule{Table: tb, Chain: &nftables.Chain{Name: "FORWARD"}, Exprs: jump("CNI-ADMIN")})
		cc.AddRule(&nftables.Rule{Table: tb, Chain: &nftables.Chain{Name: "FORWARD"}, Exprs: hostRuleExprs(),
			UserData: userdata.AppendString(nil, userdata.TypeComment, hostRuleComment)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var chains []chainInfo
	var rules []ruleInfo
	for _, m := range msgs {
		switch int(m.Header.Type) & 0xff {
		case unix.NFT_MSG_NEWCHAIN:
			ci, err := decodeChain(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			chains = append(chains, ci)
		case unix.NFT_MSG_NEWRULE:
			ri, err := decodeRule(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			rules = append(rules, ri)
		}
	}
	wantC := []chainInfo{{family: unix.NFPROTO_IPV4, table: "filter", name: "FORWARD", base: true, hook: unix.NF_INET_FORWARD, priority: -5, policy: 0, hasPol: true}}
	if diff := cmp.Diff(wantC, chains, cmp.AllowUnexported(chainInfo{})); diff != "" {
		t.Errorf("chains (-want +got):\n%s", diff)
	}
	wantR := []ruleInfo{
		{table: "filter", chain: "FORWARD", exprs: 1, jump: "CNI-ADMIN"},
		{table: "filter", chain: "FORWARD", exprs: 4, comment: hostRuleComment},
	}
	if diff := cmp.Diff(wantR, rules, cmp.AllowUnexported(ruleInfo{})); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
}

// FuzzFirewallDecode: rule, chain, set and table messages from the kernel (written by
// any tool) must decode or fail, never panic.
func FuzzFirewallDecode(f *testing.F) {
	msgs, _ := record(func(cc *nftables.Conn) error {
		tb := &nftables.Table{Name: "t", Family: nftables.TableFamilyINet}
		cc.AddChain(&nftables.Chain{Name: "c", Table: tb, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
		cc.AddRule(&nftables.Rule{Table: tb, Chain: &nftables.Chain{Name: "c"}, Exprs: jump("x"), UserData: []byte{0, 2, 'a', 0}})
		return nil
	})
	for _, m := range msgs {
		f.Add(m.Data)
	}
	f.Add([]byte{2, 0, 0, 0, 4, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeRule(b)
		_, _ = decodeChain(b)
		_ = immediateJump(b)
		_, _ = setNamesOf(fwTable, [][]byte{b})
		_, _, _ = decodeTable([][]byte{b})
	})
}
