package hostlocal

import (
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"linen.dev/linen/internal/plugins/plugintest"
)

// FuzzParseConfig feeds arbitrary stdin and CNI_ARGS to the configuration
// decoders. They must never panic, and what validates must be usable.
func FuzzParseConfig(f *testing.F) {
	for _, ex := range plugintest.ReadmeExamples(f, "README.md") {
		f.Add(ex, "")
	}
	f.Add([]byte(`{"cniVersion":"0.1.0","name":"n","ipam":{"subnet":"10.0.0.0/30","routes":[{"dst":"::/0"}]}}`), "IP=10.0.0.2")
	f.Add([]byte(`{"name":"n","ipam":{"ranges":[[{"subnet":"2001:db8::/126","gateway":"2001:db8::3"}]]},"prevResult":{"ips":[{"address":"10.0.0.1/8"}]}}`), "IP=2001:db8::2")
	f.Add([]byte(`{"name":"n","runtimeConfig":{"ipRanges":[[{"subnet":"10.0.0.0/24"}]],"ips":["10.0.0.9"]},"args":{"cni":{"ips":["x"]}},"ipam":{}}`), "")
	f.Add([]byte(`[]`), ";;=")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		c, err := ParseConfig(stdin, cniArgs)
		_, _ = parseLenient(stdin)
		if err != nil {
			return
		}
		if len(c.Sets) == 0 {
			t.Fatalf("valid config without range sets: %s", stdin)
		}
		for _, s := range c.Sets {
			if len(s.Ranges) == 0 {
				t.Fatalf("valid config with an empty set: %s", stdin)
			}
			for _, r := range s.Ranges {
				if !r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End) || r.Start.Compare(r.End) > 0 {
					t.Fatalf("bad range %+v from %s", r, stdin)
				}
			}
			if s.Requested.IsValid() && !s.Allocatable(s.Requested) {
				t.Fatalf("requested %v not allocatable in %+v", s.Requested, s.Ranges)
			}
			// The first few candidates are allocatable and distinct.
			seen := map[string]bool{}
			n := 0
			for a := range s.Candidates(s.Requested) {
				if !s.Allocatable(a) || seen[a.String()] {
					t.Fatalf("candidate %v repeated or not allocatable in %+v", a, s.Ranges)
				}
				seen[a.String()] = true
				if n++; n == 64 {
					break
				}
			}
			_ = s.hasFree(nil)
		}
	})
}

// FuzzIndex feeds arbitrary bytes to the index decoders: the index is a
// file in a directory others write to. They must never panic. What the full
// decoder accepts, the tail check accepts with the same seal, the owner scan
// and the liveness check answer exactly like the decoded reservations, and
// a compacted copy decodes to the same reservations.
func FuzzIndex(f *testing.F) {
	mt := unix.Timespec{Sec: 1795753274, Nsec: 172862508}
	base := map[netip.Addr]lease{
		netip.MustParseAddr("10.0.0.2"):    {Owner{ID: "a", IfName: "eth0"}, 11},
		netip.MustParseAddr("10.0.0.3"):    {Owner{ID: "a", Legacy: true}, 12},
		netip.MustParseAddr("10.0.0.4"):    {Owner{ID: "b", IfName: "a"}, 13},
		netip.MustParseAddr("2001:db8::5"): {Owner{ID: "q\"uo te", IfName: "ü"}, 14},
	}
	idx := appendSeal(encodeLeases(base), len(header), seal{vouched: true, mtime: mt, live: 4, lines: 5})
	f.Add(idx)
	blk := appendRelease(nil, netip.MustParseAddr("10.0.0.2"))
	blk = appendReserve(blk, netip.MustParseAddr("10.0.0.2"), lease{Owner{ID: "a", IfName: "eth1"}, 15})
	f.Add(append(append([]byte{}, idx...), appendSeal(blk, 0, seal{mtime: mt, live: 4, lines: 8})...))
	f.Add(append(append([]byte{}, idx...), "- 10.0.0.3\n"...))
	f.Add(append(append([]byte{}, header...), "= 1.000000000 0 1 0 00000000\n"...))
	f.Add([]byte("c1\r\neth0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		leases, last, err := parseIndex(b)
		tail, tailOK := lastSeal(b)
		if tailOK {
			// Must not panic on anything with a valid tail.
			_, _ = scanOwned(b, "a", "eth0", true)
			_ = liveIn(b, []netip.Addr{netip.MustParseAddr("10.0.0.2")})
		}
		if err != nil {
			return
		}
		if !tailOK || tail != last {
			t.Fatalf("parseIndex seal %+v, lastSeal %+v %v", last, tail, tailOK)
		}
		var addrs []netip.Addr
		for a, l := range leases {
			addrs = append(addrs, a)
			for _, legacy := range []bool{false, true} {
				got, err := scanOwned(b, l.ID, l.IfName, legacy)
				if err != nil {
					t.Fatalf("scanOwned(%q, %q): %v", l.ID, l.IfName, err)
				}
				var want []netip.Addr
				for a2, l2 := range leases {
					if l2.ID == l.ID && (l2.IfName == l.IfName && !l2.Legacy || legacy && l2.Legacy) {
						want = append(want, a2)
					}
				}
				slices.SortFunc(got, netip.Addr.Compare)
				slices.SortFunc(want, netip.Addr.Compare)
				if !slices.Equal(got, want) {
					t.Fatalf("scanOwned(%q, %q, %v) = %v, decoded %v", l.ID, l.IfName, legacy, got, want)
				}
			}
		}
		addrs = append(addrs, netip.MustParseAddr("10.255.255.254"))
		for i, live := range liveIn(b, addrs) {
			if _, ok := leases[addrs[i]]; ok != live {
				t.Fatalf("liveIn(%v) = %v", addrs[i], live)
			}
		}
		c := appendSeal(encodeLeases(leases), len(header), seal{vouched: true, mtime: mt, live: len(leases), lines: len(leases) + 1})
		again, _, err := parseIndex(c)
		if err != nil || len(again) != len(leases) {
			t.Fatalf("compacted copy: %v\n%s", err, c)
		}
		for a, l := range leases {
			if again[a] != l {
				t.Fatalf("compacted copy: %v = %+v, want %+v", a, again[a], l)
			}
		}
	})
}

// FuzzIndexOps writes indexes through the encoders from a fuzzed sequence
// of reservations and releases with fuzzed owners (a rebuilt index holds
// whatever the reservation files held), sealing at fuzzed points, and
// checks that the decoders read back exactly what was written.
func FuzzIndexOps(f *testing.F) {
	f.Add([]byte{0x00, 0x11, 0x22, 0x83, 0x44, 0x95}, "a", "eth0", "b")
	f.Add([]byte{0x10, 0x10, 0x90, 0x31}, "x\" \"y", "a", "x")
	f.Add([]byte{0x21, 0xa1, 0x61, 0xe2}, "", "\n\x00ü", "\\")
	f.Fuzz(func(t *testing.T, ops []byte, id1, if1, id2 string) {
		owners := []Owner{
			{ID: id1, IfName: if1}, {ID: id1, Legacy: true},
			{ID: id2, IfName: if1}, {ID: if1, IfName: id1},
		}
		want := map[netip.Addr]lease{}
		b := append([]byte{}, header...)
		block, lines := len(b), 0
		mt := unix.Timespec{Sec: 1}
		base := netip.MustParseAddr("10.0.0.0")
		for i, op := range ops {
			a := base
			for range op & 7 {
				a = a.Next()
			}
			if _, live := want[a]; live {
				b = appendRelease(b, a)
				delete(want, a)
			} else {
				l := lease{owners[op>>3&3], uint64(i)}
				b = appendReserve(b, a, l)
				want[a] = l
			}
			lines++
			if op&0x80 != 0 || i == len(ops)-1 {
				lines++
				mt.Nsec++
				b = appendSeal(b, block, seal{vouched: op&0x40 != 0, mtime: mt, live: len(want), lines: lines})
				block = len(b)
			}
		}
		if len(ops) == 0 {
			b = appendSeal(b, block, seal{mtime: mt, lines: 1})
		}
		got, last, err := parseIndex(b)
		if err != nil {
			t.Fatalf("parseIndex: %v\n%s", err, b)
		}
		if tail, ok := lastSeal(b); !ok || tail != last || last.mtime != mt || last.live != len(want) {
			t.Fatalf("seals: parse %+v, tail %+v %v\n%s", last, tail, ok, b)
		}
		if len(got) != len(want) {
			t.Fatalf("decoded %v, wrote %v", got, want)
		}
		for a, l := range want {
			if got[a] != l {
				t.Fatalf("decoded %v = %+v, wrote %+v", a, got[a], l)
			}
		}
		for _, o := range owners {
			for _, legacy := range []bool{false, true} {
				found, err := scanOwned(b, o.ID, o.IfName, legacy)
				if err != nil {
					t.Fatal(err)
				}
				var w []netip.Addr
				for a, l := range want {
					if l.ID == o.ID && (l.IfName == o.IfName && !l.Legacy || legacy && l.Legacy) {
						w = append(w, a)
					}
				}
				slices.SortFunc(found, netip.Addr.Compare)
				slices.SortFunc(w, netip.Addr.Compare)
				if !slices.Equal(found, w) {
					t.Fatalf("scanOwned(%q, %q, %v) = %v, want %v\n%s", o.ID, o.IfName, legacy, found, w, b)
				}
			}
		}
	})
}
