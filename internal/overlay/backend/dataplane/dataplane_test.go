package dataplane

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

var (
	p  = netip.MustParsePrefix
	ip = netip.MustParseAddr
)

func TestStateString(t *testing.T) {
	s := State{
		Routes: []Route{
			{Dst: p("10.5.3.0/24"), Gw: ip("10.5.3.0"), Dev: "flannel.1", OnLink: true},
			{Dst: p("10.5.2.0/24"), Gw: ip("192.0.2.12"), Dev: "eth0"},
			{Dst: p("10.5.0.0/16"), Dev: "flannel0"},
		},
		Neighs: []Neigh{{Dev: "flannel.1", IP: ip("10.5.3.0"), MAC: mac("0a:00:00:00:00:03")}},
		FDB:    []FDB{{Dev: "flannel.1", MAC: mac("0a:00:00:00:00:03"), Dst: ip("192.0.2.13")}},
	}
	want := `route 10.5.0.0/16 dev flannel0
route 10.5.2.0/24 via 192.0.2.12 dev eth0
route 10.5.3.0/24 via 10.5.3.0 dev flannel.1 onlink
neigh 10.5.3.0 dev flannel.1 lladdr 0a:00:00:00:00:03 permanent
fdb 0a:00:00:00:00:03 dev flannel.1 dst 192.0.2.13 self permanent
`
	if diff := cmp.Diff(want, s.String()); diff != "" {
		t.Errorf("String (-want +got):\n%s", diff)
	}
	if s.Routes[0].Dst != p("10.5.3.0/24") {
		t.Error("String sorted the receiver's slices")
	}
	if (State{}).String() != "" {
		t.Error("empty state renders as non-empty")
	}
}

func TestPlan(t *testing.T) {
	sc := Scope{Families: []int{netlink.FAMILY_V4}, Links: map[string]int{"eth0": 2, "flannel.1": 5}, Owned: []string{"flannel.1"}}
	r2 := Route{Dst: p("10.5.2.0/24"), Gw: ip("10.5.2.0"), Dev: "flannel.1", OnLink: true}
	r3 := Route{Dst: p("10.5.3.0/24"), Gw: ip("10.5.3.0"), Dev: "flannel.1", OnLink: true}
	n2 := Neigh{Dev: "flannel.1", IP: ip("10.5.2.0"), MAC: mac("0a:00:00:00:00:02")}
	n3 := Neigh{Dev: "flannel.1", IP: ip("10.5.3.0"), MAC: mac("0a:00:00:00:00:03")}
	f2 := FDB{Dev: "flannel.1", MAC: mac("0a:00:00:00:00:02"), Dst: ip("192.0.2.12")}
	f3 := FDB{Dev: "flannel.1", MAC: mac("0a:00:00:00:00:03"), Dst: ip("192.0.2.13")}
	want := State{Routes: []Route{r2, r3}, Neighs: []Neigh{n2, n3}, FDB: []FDB{f2, f3}}
	exact := func(r Route) kRoute { return kRoute{r: r, exact: true} }

	tests := []struct {
		name string
		have observed
		want string // the ops, one a line
	}{
		{
			name: "empty kernel: neighbours, then fdb, then routes",
			want: `set neigh 10.5.2.0 dev flannel.1 lladdr 0a:00:00:00:00:02 permanent
set neigh 10.5.3.0 dev flannel.1 lladdr 0a:00:00:00:00:03 permanent
set fdb 0a:00:00:00:00:02 dev flannel.1 dst 192.0.2.12 self permanent
set fdb 0a:00:00:00:00:03 dev flannel.1 dst 192.0.2.13 self permanent
set route 10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink
set route 10.5.3.0/24 via 10.5.3.0 dev flannel.1 onlink
`,
		},
		{
			name: "in sync: nothing",
			have: observed{
				routes: []kRoute{exact(r3), exact(r2)},
				neighs: []kNeigh{{n: n2}, {n: n3}},
				fdb:    []kFDB{{f: f3}, {f: f2}},
			},
		},
		{
			name: "stale entries deleted, routes first",
			have: observed{
				routes: []kRoute{exact(r2), exact(r3), exact(Route{Dst: p("10.5.9.0/24"), Gw: ip("10.5.9.0"), Dev: "flannel.1", OnLink: true})},
				neighs: []kNeigh{{n: n2}, {n: n3}, {n: Neigh{Dev: "flannel.1", IP: ip("10.5.9.0"), MAC: mac("0a:00:00:00:00:09")}}},
				fdb:    []kFDB{{f: f2}, {f: f3}, {f: FDB{Dev: "flannel.1", MAC: mac("0a:00:00:00:00:09"), Dst: ip("192.0.2.19")}}},
			},
			want: `del route 10.5.9.0/24 via 10.5.9.0 dev flannel.1 onlink
del fdb 0a:00:00:00:00:09 dev flannel.1 dst 192.0.2.19 self permanent
del neigh 10.5.9.0 dev flannel.1 lladdr 0a:00:00:00:00:09 permanent
`,
		},
		{
			name: "changed entries replaced; extra FDB remotes deleted; inexact route deleted and set",
			have: observed{
				routes: []kRoute{
					exact(Route{Dst: p("10.5.2.0/24"), Gw: ip("192.0.2.12"), Dev: "eth0"}),
					{r: r3}, // e.g. a metric: not replaceable in place
				},
				neighs: []kNeigh{{n: Neigh{Dev: "flannel.1", IP: ip("10.5.2.0"), MAC: mac("0a:00:00:00:00:99")}}, {n: n3}},
				fdb: []kFDB{
					{f: f2}, {f: FDB{Dev: "flannel.1", MAC: mac("0a:00:00:00:00:02"), Dst: ip("192.0.2.99")}},
					{f: FDB{Dev: "flannel.1", MAC: mac("0a:00:00:00:00:03"), Dst: ip("192.0.2.99")}},
				},
			},
			want: `del route 10.5.3.0/24 via 10.5.3.0 dev flannel.1 onlink
del fdb 0a:00:00:00:00:02 dev flannel.1 dst 192.0.2.99 self permanent
del fdb 0a:00:00:00:00:03 dev flannel.1 dst 192.0.2.99 self permanent
set neigh 10.5.2.0 dev flannel.1 lladdr 0a:00:00:00:00:02 permanent
set fdb 0a:00:00:00:00:03 dev flannel.1 dst 192.0.2.13 self permanent
set route 10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink
set route 10.5.3.0/24 via 10.5.3.0 dev flannel.1 onlink
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, err := plan(want, tt.have, sc)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, o := range ops {
				b.WriteString(o.String() + "\n")
			}
			if diff := cmp.Diff(tt.want, b.String()); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlanRejectsDuplicatesAndForeignFamilies(t *testing.T) {
	sc := Scope{Families: []int{netlink.FAMILY_V4}, Links: map[string]int{"eth0": 2}}
	r := Route{Dst: p("10.5.2.0/24"), Gw: ip("192.0.2.12"), Dev: "eth0"}
	want := State{Routes: []Route{r, r, {Dst: p("fd00:5:2::/64"), Gw: ip("2001:db8::12"), Dev: "eth0"}}}
	ops, err := plan(want, observed{}, sc)
	if err == nil || !strings.Contains(err.Error(), "wanted twice") || !strings.Contains(err.Error(), "family not in scope") {
		t.Errorf("err = %v, want both problems", err)
	}
	if len(ops) != 1 {
		t.Errorf("ops = %v, want the one valid route", ops)
	}
}
