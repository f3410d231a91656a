package nft

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/nft/nfttest"
)

// The kernel prints our expressions back as exactly the rule text we
// document: register layouts, byte orders and set types are right.
func TestRulesetKernel(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	for _, tb := range []*tableDef{inetTable, bridgeTable} {
		t.Run(tb.familyName, func(t *testing.T) {
			if err := c.ensure(tb); err != nil {
				t.Fatalf("ensure: %v", err)
			}
			got := nftIn(t, ns, "list", "table", tb.familyName, TableName)
			if diff := cmp.Diff(tb.text(), got); diff != "" {
				t.Errorf("(-ours +kernel):\n%s", diff)
			}
			st, err := c.state(tb)
			if err != nil || !st.exists || st.use != tb.objects() || st.comment != tb.comment() {
				t.Errorf("state = %+v, %v; want use %d", st, err, tb.objects())
			}
		})
	}
}

// Dynamic sets appear, with their rules, as pods need them.
func TestRulesetKernelDynamic(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	a := pod("a", "10.0.0.2/24", "fd00::2/64", 80)
	b := pod("b", "10.0.0.3/24", "", 81)
	b.MasqAll = true
	m := []MasqEntry{
		{Network: "n", ContainerID: "a", IfName: "eth0", IP: mustAddr("10.0.0.2"), Subnet: mustPrefix("10.0.0.0/24")},
		{Network: "n", ContainerID: "a", IfName: "eth0", IP: mustAddr("fd00::2"), Subnet: mustPrefix("fd00::/64")},
	}
	for _, err := range []error{AddPortMaps(c, a), AddPortMaps(c, b), AddMasq(c, m)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, err := range []error{DelPortMaps(c, "net1", "a", "eth0", nil), DelPortMaps(c, "net1", "b", "eth0", nil), DelMasq(c, "n", "a", "eth0", nil)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := nftIn(t, ns, "list", "table", "inet", TableName)
	if diff := cmp.Diff(inetTable.text(exampleDyn...), got); diff != "" {
		t.Errorf("(-ours +kernel):\n%s", diff)
	}
	// A rebuild keeps the dynamic sets and their rules.
	nftIn(t, ns, "delete", "chain", "inet", TableName, "output")
	if err := dialIn(t, ns).ensure(inetTable); err != nil {
		t.Fatal(err)
	}
	got = nftIn(t, ns, "list", "table", "inet", TableName)
	if diff := cmp.Diff(blocks(inetTable.text(exampleDyn...)), blocks(got)); diff != "" {
		t.Errorf("after repair (-ours +kernel):\n%s", diff)
	}
}

// blocks splits a listing into its set and chain blocks, sorted (a rebuilt
// chain is listed last).
func blocks(listing string) []string {
	listing = strings.TrimSuffix(strings.TrimSpace(listing), "}")
	out := strings.Split(strings.TrimSpace(listing), "\n\n")
	for i := range out {
		out[i] = strings.TrimSpace(out[i])
	}
	sort.Strings(out)
	return out
}

// Every kind of element we generate is listed by nft exactly as we render
// it, and an element nft adds from our rendering decodes to our bytes.
func TestElementsKernel(t *testing.T) {
	for _, tc := range elemCases {
		t.Run(tc.name, func(t *testing.T) {
			ns := nstest.New(t)
			c := dialIn(t, ns)
			es, err := tc.elems()
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				if err := c.add(tc.table, "add", []elem{e}); err != nil {
					t.Fatalf("add %s: %v", e, err)
				}
				kind := "set"
				if e.set.isMap() {
					kind = "map"
				}
				out := nftIn(t, ns, "list", kind, tc.table.familyName, TableName, e.set.name)
				if want := "elements = { " + e.String() + " }"; !strings.Contains(out, want) {
					t.Errorf("nft lists\n%s\nwant a line %q", out, want)
				}
				if err := c.remove(tc.table, "del", e.Tag, []elem{e}, nil); err != nil {
					t.Fatalf("remove %s: %v", e, err)
				}
				nftIn(t, ns, e.command(tc.table))
				got, err := c.get(tc.table.id(), []elem{e})
				if err != nil || got[0] == nil {
					t.Fatalf("get %s after nft added it: %v %v", e, got, err)
				}
				if !got[0].same(e) || got[0].Tag != e.Tag {
					t.Errorf("nft added %s, we read %s", e, got[0])
				}
				if err := c.remove(tc.table, "del", e.Tag, []elem{e}, nil); err != nil {
					t.Fatalf("remove %s: %v", e, err)
				}
			}
		})
	}
}

func pod(id, v4, v6 string, ports ...uint16) PortMapEntry {
	e := PortMapEntry{Network: "net1", ContainerID: id, IfName: "eth0", SNAT: true}
	if v4 != "" {
		e.IPv4 = mustPrefix(v4)
	}
	if v6 != "" {
		e.IPv6 = mustPrefix(v6)
	}
	for _, p := range ports {
		e.Mappings = append(e.Mappings, PortMapping{Protocol: TCP, HostPort: p, ContainerPort: 80})
	}
	return e
}

// owned returns the rendered elements of every linen set, by tag.
func owned(t *testing.T, c *Conn) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, tb := range []*tableDef{inetTable, bridgeTable} {
		sets, err := c.sets(tb, func(*setDef) bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sets {
			es, err := c.list(tb.id(), s)
			if err != nil {
				t.Fatalf("list %s: %v", s.name, err)
			}
			for _, e := range es {
				out[e.Tag] = append(out[e.Tag], s.name+" "+e.String())
			}
		}
	}
	return out
}

func TestAddRepeatAndConflict(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	a := pod("a", "10.0.0.2/24", "fd00::2/64", 8080, 8081)
	if err := AddPortMaps(c, a); err != nil {
		t.Fatalf("add: %v", err)
	}
	before := owned(t, c)
	if err := AddPortMaps(c, a); err != nil {
		t.Fatalf("repeated add: %v", err)
	}
	b := pod("b", "10.0.0.3/24", "", 9000, 8081)
	err := AddPortMaps(c, b)
	var pe *PortConflictError
	if !errors.As(err, &pe) {
		t.Fatalf("conflicting add: %v, want a PortConflictError", err)
	}
	want := &PortConflictError{Mapping: 1, PortMapping: b.Mappings[1], Target: "10.0.0.2:80",
		Network: "net1", Container: "a", IfName: "eth0"}
	if diff := cmp.Diff(want, pe, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("conflict (-want +got):\n%s", diff)
	}
	if !strings.Contains(pe.Error(), `host port 8081/tcp is already mapped to 10.0.0.2:80 by container "a"`) {
		t.Errorf("message %q", pe.Error())
	}
	if diff := cmp.Diff(before, owned(t, c)); diff != "" {
		t.Errorf("a failed add changed the sets (-before +after):\n%s", diff)
	}
}

// A non-exclusive key held by another owner is stale and replaced.
func TestStaleReplaced(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	old := MasqEntry{Network: "net1", ContainerID: "old", IfName: "eth0", IP: mustAddr("10.0.0.9"), Subnet: mustPrefix("10.0.0.0/24")}
	if err := AddMasq(c, []MasqEntry{old}); err != nil {
		t.Fatal(err)
	}
	now := old
	now.ContainerID = "new"
	if err := AddMasq(c, []MasqEntry{now}); err != nil {
		t.Fatalf("add over a stale element: %v", err)
	}
	got := owned(t, c)
	if len(got[old.owner().Tag()]) != 0 || len(got[now.owner().Tag()]) != 2 {
		t.Errorf("elements after replacement: %v", got)
	}
	if err := CheckMasq(c, []MasqEntry{now}); err != nil {
		t.Errorf("check: %v", err)
	}
}

func TestDel(t *testing.T) {
	tests := []struct {
		name  string
		known bool
	}{{"known", true}, {"by tag", false}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := nstest.New(t)
			c := dialIn(t, ns)
			a, b := pod("a", "10.0.0.2/24", "fd00::2/64", 80, 443), pod("b", "10.0.0.3/24", "fd00::3/64", 8080)
			ma := []MasqEntry{{Network: "net1", ContainerID: "a", IfName: "eth0", IP: mustAddr("10.0.0.2"), Subnet: mustPrefix("10.0.0.0/24")}}
			mac, _ := net.ParseMAC("02:00:00:00:00:02")
			sa := SpoofEntry{Network: "net1", ContainerID: "a", IfName: "eth0", HostIf: "veth-a", MAC: mac}
			for _, err := range []error{AddPortMaps(c, a), AddPortMaps(c, b), AddMasq(c, ma), AddSpoofCheck(c, sa)} {
				if err != nil {
					t.Fatal(err)
				}
			}
			bElems := owned(t, c)[b.owner().Tag()]
			for round := 0; round < 2; round++ { // DEL twice
				var ka *PortMapEntry
				var kma []MasqEntry
				var ksa *SpoofEntry
				if tt.known {
					ka, kma, ksa = &a, ma, &sa
				}
				if err := DelPortMaps(c, "net1", "a", "eth0", ka); err != nil {
					t.Fatalf("round %d: DelPortMaps: %v", round, err)
				}
				if err := DelMasq(c, "net1", "a", "eth0", kma); err != nil {
					t.Fatalf("round %d: DelMasq: %v", round, err)
				}
				if err := DelSpoofCheck(c, "net1", "a", "eth0", ksa); err != nil {
					t.Fatalf("round %d: DelSpoofCheck: %v", round, err)
				}
				got := owned(t, c)
				if len(got[a.owner().Tag()]) != 0 {
					t.Errorf("round %d: left behind: %v", round, got[a.owner().Tag()])
				}
				if diff := cmp.Diff(bElems, got[b.owner().Tag()]); diff != "" {
					t.Errorf("round %d: another pod's elements changed:\n%s", round, diff)
				}
			}
		})
	}
}

// DEL where linen never added anything: success, and no table appears.
func TestDelWithoutTable(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	a := pod("a", "10.0.0.2/24", "", 80)
	if err := DelPortMaps(c, "net1", "a", "eth0", &a); err != nil {
		t.Fatal(err)
	}
	if err := DelPortMaps(c, "net1", "a", "eth0", nil); err != nil {
		t.Fatal(err)
	}
	if err := DelMasq(c, "net1", "a", "eth0", nil); err != nil {
		t.Fatal(err)
	}
	if err := DelSpoofCheck(c, "net1", "a", "eth0", nil); err != nil {
		t.Fatal(err)
	}
	for _, tb := range []*tableDef{inetTable, bridgeTable} {
		if st, _ := c.state(tb); st.exists {
			t.Errorf("DEL created table %s", tb.name())
		}
	}
}

func TestGC(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	var tags []string
	for i, id := range []string{"a", "b", "c", "d"} {
		e := pod(id, fmt.Sprintf("10.0.0.%d/24", i+2), fmt.Sprintf("fd00::%d/64", i+2), uint16(8000+i))
		if id == "d" {
			e.Network = "net2"
		}
		m := []MasqEntry{{Network: e.Network, ContainerID: id, IfName: "eth0", IP: e.IPv4.Addr(), Subnet: e.IPv4.Masked()}}
		mac := net.HardwareAddr{2, 0, 0, 0, 0, byte(i)}
		s := SpoofEntry{Network: e.Network, ContainerID: id, IfName: "eth0", HostIf: "veth-" + id, MAC: mac}
		for _, err := range []error{AddPortMaps(c, e), AddMasq(c, m), AddSpoofCheck(c, s)} {
			if err != nil {
				t.Fatal(err)
			}
		}
		tags = append(tags, e.owner().Tag())
	}
	before := owned(t, c)
	valid := []Attachment{{ContainerID: "b", IfName: "eth0"}, {ContainerID: "c", IfName: "eth1"}}
	for _, err := range []error{GCPortMaps(c, "net1", valid), GCMasq(c, "net1", valid), GCSpoofCheck(c, "net1", valid)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := owned(t, c)
	for i, tag := range tags {
		keep := i == 1 || i == 3 // b is valid; d belongs to another network
		if keep && cmp.Diff(before[tag], got[tag]) != "" {
			t.Errorf("GC changed %s: %v -> %v", tag, before[tag], got[tag])
		}
		if !keep && len(got[tag]) != 0 {
			t.Errorf("GC left %s: %v", tag, got[tag])
		}
	}
}

func TestCheck(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	a := pod("a", "10.0.0.2/24", "fd00::2/64", 80)
	if err := CheckPortMaps(c, a); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("check before add: %v", err)
	}
	if err := AddPortMaps(c, a); err != nil {
		t.Fatal(err)
	}
	if err := CheckPortMaps(c, a); err != nil {
		t.Errorf("check: %v", err)
	}
	nftIn(t, ns, "delete", "element", "inet", TableName, "hp6", "{ tcp . 80 }")
	err := CheckPortMaps(c, a)
	if err == nil || !strings.Contains(err.Error(), `hp6: missing tcp . 80 comment "net=net1 id=a if=eth0" : fd00::2 . 80`) {
		t.Errorf("check after deleting an element: %v", err)
	}
	other := a
	other.Mappings = []PortMapping{{Protocol: TCP, HostPort: 80, ContainerPort: 81}}
	if err := CheckPortMaps(c, other); err == nil || !strings.Contains(err.Error(), "have tcp . 80") {
		t.Errorf("check with another value: %v", err)
	}
}

// A table that lost a chain is rebuilt by the next Conn; a table deleted
// under a Conn's feet is rebuilt on the next add. Elements survive repairs.
func TestRepair(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	a := pod("a", "10.0.0.2/24", "", 80)
	if err := AddPortMaps(c, a); err != nil {
		t.Fatal(err)
	}
	nftIn(t, ns, "delete", "chain", "inet", TableName, "output")
	c2 := dialIn(t, ns)
	b := pod("b", "10.0.0.3/24", "", 81)
	if err := AddPortMaps(c2, b); err != nil {
		t.Fatalf("add after a chain was deleted: %v", err)
	}
	if err := CheckPortMaps(c2, a); err != nil {
		t.Errorf("elements lost in the repair: %v", err)
	}
	rules := nftIn(t, ns, "list", "chain", "inet", TableName, "output")
	if !strings.Contains(rules, "fib daddr type local jump hostports") {
		t.Errorf("output chain not rebuilt:\n%s", rules)
	}
	nftIn(t, ns, "delete", "table", "inet", TableName)
	if err := AddPortMaps(c2, a); err != nil {
		t.Fatalf("add after the table was deleted: %v", err)
	}
	if err := CheckPortMaps(c2, a); err != nil {
		t.Errorf("check: %v", err)
	}
}

func TestSchemaMismatch(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	nftIn(t, ns, `add table inet linen { comment "linen schema=99"; }`)
	var se *SchemaError
	if err := AddMasq(c, []MasqEntry{{IP: mustAddr("10.0.0.2"), Subnet: mustPrefix("10.0.0.0/24")}}); !errors.As(err, &se) {
		t.Errorf("add into a table of another schema: %v", err)
	}
	if err := c.NATUsable(); !errors.As(err, &se) {
		t.Errorf("NATUsable: %v", err)
	}
	if err := DelMasq(c, "n", "c", "eth0", nil); err != nil {
		t.Errorf("DEL must still succeed: %v", err)
	}
}

// Concurrent first ADDs in a fresh namespace create one table.
func TestConcurrentCreate(t *testing.T) {
	ns := nstest.New(t)
	lockDir := t.TempDir()
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, sock, err := Dial(ns.Fd())
			if err != nil {
				errs[i] = err
				return
			}
			defer sock.Close()
			defer c.Close()
			c.lockDir = lockDir
			e := pod(fmt.Sprintf("p%d", i), fmt.Sprintf("10.0.0.%d/24", i+2), "", uint16(9000+i))
			errs[i] = AddPortMaps(c, e)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("pod %d: %v", i, err)
		}
	}
	c := dialIn(t, ns)
	dyn, err := c.sets(inetTable, (*setDef).dynamic)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range inetTable.chains {
		rules, err := c.NFT().GetRules(inetTable.lib(), &nftables.Chain{Name: ch.name, Table: inetTable.lib()})
		if err != nil {
			t.Fatalf("rules of %s: %v", ch.name, err)
		}
		if want := len(ch.rulesWith(dyn)); len(rules) != want {
			t.Errorf("chain %s has %d rules, want %d", ch.name, len(rules), want)
		}
	}
	if got := len(owned(t, c)); got != n {
		t.Errorf("%d owners have elements, want %d", got, n)
	}
}

// NATUsable checks the kernel without creating anything.
func TestUsableDryRun(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	if err := c.NATUsable(); err != nil {
		t.Errorf("NATUsable: %v", err)
	}
	if err := c.BridgeUsable(); err != nil {
		t.Errorf("BridgeUsable: %v", err)
	}
	for _, tb := range []*tableDef{inetTable, bridgeTable} {
		if st, _ := c.state(tb); st.exists {
			t.Errorf("the check created %s", tb.name())
		}
	}
}

func TestDeleteConntrack(t *testing.T) {
	ns := nstest.New(t)
	c := dialIn(t, ns)
	if err := c.ensure(inetTable); err != nil { // nat chains turn conntrack on
		t.Fatal(err)
	}
	nfttest.Veth(t, ns, "lx0", nstest.New(t), "unused0") // brings lo up
	// A datagram to a port nobody listens on leaves an entry behind.
	for _, to := range []string{"127.0.0.1:9999", "127.0.0.1:9998", "[::1]:9999"} {
		nfttest.UDP(ns, "", to, 20*time.Millisecond)
	}
	tests := []struct {
		name   string
		family byte
		port   uint16
		daddr  netip.Addr
		want   int
	}{
		{"other address", unix.AF_INET, 9999, mustAddr("127.0.0.2"), 0},
		{"ipv4 by port", unix.AF_INET, 9999, netip.Addr{}, 1},
		{"ipv4 again", unix.AF_INET, 9999, netip.Addr{}, 0},
		{"ipv4 by address and port", unix.AF_INET, 9998, mustAddr("127.0.0.1"), 1},
		{"ipv6", unix.AF_INET6, 9999, netip.Addr{}, 1},
		{"tcp", unix.AF_INET6, 9999, netip.Addr{}, 0},
	}
	for _, tt := range tests {
		proto := UDP
		if tt.name == "tcp" {
			proto = TCP
		}
		n, err := c.DeleteConntrack(tt.family, proto, tt.port, tt.daddr)
		if err != nil || n != tt.want {
			t.Errorf("%s: deleted %d entries, %v; want %d", tt.name, n, err, tt.want)
		}
	}
}
