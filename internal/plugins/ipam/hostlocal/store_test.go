package hostlocal

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestParseOwner(t *testing.T) {
	tests := []struct {
		in   string
		want Owner
	}{
		{"c1\r\neth0", Owner{ID: "c1", IfName: "eth0"}},
		{"c1\neth0\n", Owner{ID: "c1", IfName: "eth0"}},
		{"c1", Owner{ID: "c1", Legacy: true}},
		{"  c1 \n", Owner{ID: "c1", Legacy: true}},
		{"", Owner{Legacy: true}},
	}
	for _, tt := range tests {
		if got := parseOwner([]byte(tt.in)); got != tt.want {
			t.Errorf("parseOwner(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if tt.want.ID != "" && parseOwner([]byte(tt.want.content())) != tt.want {
			t.Errorf("content(%+v) does not parse back", tt.want)
		}
	}
	if !(Owner{ID: "c", Legacy: true}).Matches("c", "any") || (Owner{ID: "c", IfName: "eth0"}).Matches("c", "eth1") {
		t.Error("Matches: legacy must match on ID, others on ID and interface")
	}
}

var cmpLeases = []cmp.Option{cmp.AllowUnexported(lease{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}

// sealed is a compacted index of leases with a vouched seal at mt.
func sealed(leases map[netip.Addr]lease, mt unix.Timespec) []byte {
	return appendSeal(encodeLeases(leases), len(header), seal{vouched: true, mtime: mt, live: len(leases), lines: len(leases) + 1})
}

func TestIndexRoundTrip(t *testing.T) {
	mt := unix.Timespec{Sec: 1700000000, Nsec: 123456789}
	leases := map[netip.Addr]lease{
		mustAddr("10.0.0.2"):    {Owner{ID: "abc", IfName: "eth0"}, 11},
		mustAddr("10.0.0.3"):    {Owner{ID: "old", Legacy: true}, 12},
		mustAddr("2001:db8::5"): {Owner{ID: "we\"ird \n\x00 ü", IfName: ""}, 13},
	}
	b := sealed(leases, mt)
	got, last, err := parseIndex(b)
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, b)
	}
	if want := (seal{vouched: true, mtime: mt, live: 3, lines: 4}); last != want {
		t.Errorf("seal = %+v, want %+v", last, want)
	}
	if tail, ok := lastSeal(b); !ok || tail != last {
		t.Errorf("lastSeal = %+v, %v; want %+v", tail, ok, last)
	}
	if diff := cmp.Diff(leases, got, cmpLeases...); diff != "" {
		t.Errorf("leases (-want +got):\n%s", diff)
	}
	if strings.TrimSpace(string(b)) == "abc" || !strings.HasPrefix(string(b), indexMagic+"\n") {
		t.Errorf("index content must never look like a container ID:\n%s", b)
	}

	// Appended blocks: a release, a reservation, an empty block (a failed
	// ADD that changed the directory and put it back).
	b2 := appendRelease(nil, mustAddr("10.0.0.2"))
	b2 = appendReserve(b2, mustAddr("10.0.0.9"), lease{Owner{ID: "abc", IfName: "eth1"}, 14})
	b = append(b, appendSeal(b2, 0, seal{mtime: unix.Timespec{Sec: 5}, live: 3, lines: 7})...)
	b = appendSeal(b, len(b), seal{vouched: true, mtime: unix.Timespec{Sec: 6, Nsec: 1}, live: 3, lines: 8})
	got, last, err = parseIndex(b)
	if err != nil || last.lines != 8 || last.mtime.Sec != 6 || got[mustAddr("10.0.0.9")].IfName != "eth1" || len(got) != 3 {
		t.Fatalf("after appends: %v %+v %v\n%s", err, last, got, b)
	}
	if tail, ok := lastSeal(b); !ok || tail != last {
		t.Errorf("lastSeal after appends = %+v, %v", tail, ok)
	}

	// Empty index.
	if l, _, err := parseIndex(sealed(nil, mt)); err != nil || len(l) != 0 {
		t.Errorf("empty index: %v, %v", l, err)
	}
	// Every kind of damage is detected by the full decode, and damage to
	// the last block by the tail check too.
	old := []byte(strings.Replace(string(b), "index 3", "index 2", 1))
	bad := map[string]struct {
		b    []byte
		tail bool // lastSeal must reject it too
	}{
		"empty":            {nil, true},
		"truncated":        {b[:len(b)-5], true},
		"unsealed append":  {append(append([]byte{}, b...), "- 10.0.0.3\n"...), true},
		"torn append":      {append(append([]byte{}, b...), "+ 10.0.0.7 1 \"x"...), true},
		"flipped in last":  {flip(b, len(b)-3), true},
		"flipped in first": {flip(b, len(indexMagic)+5), false},
		"no seal":          {[]byte(indexMagic + "\n+ 10.0.0.1 1 \"x\" \"y\"\n"), true},
		"foreign":          {[]byte("c1\r\neth0"), true},
		"older format":     {old, true},
		"count mismatch":   {[]byte(strings.Replace(string(sealed(leases, mt)), " 3 4 ", " 4 4 ", 1)), true},
		"release of free": {append(append([]byte{}, b...),
			appendSeal(appendRelease(nil, mustAddr("10.9.9.9")), 0, seal{live: 2, lines: 9})...), false},
		"reserve of taken": {append(append([]byte{}, b...),
			appendSeal(appendReserve(nil, mustAddr("10.0.0.3"), lease{Owner{ID: "x", IfName: "y"}, 1}), 0, seal{live: 4, lines: 9})...), false},
	}
	for name, in := range bad {
		if _, _, err := parseIndex(in.b); err == nil {
			t.Errorf("%s: parseIndex accepted a damaged index", name)
		}
		if _, ok := lastSeal(in.b); ok == in.tail {
			t.Errorf("%s: lastSeal ok=%v", name, ok)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte{}, b...)
	c[i] ^= 0x01
	return c
}

func TestScanOwned(t *testing.T) {
	b := sealed(map[netip.Addr]lease{
		mustAddr("10.0.0.2"): {Owner{ID: "a", IfName: "eth0"}, 1},
		mustAddr("10.0.0.3"): {Owner{ID: "a", IfName: "eth1"}, 2},
		mustAddr("10.0.0.4"): {Owner{ID: "a", Legacy: true}, 3},
		mustAddr("10.0.0.5"): {Owner{ID: "b", IfName: "a"}, 4},          // ends like a legacy "a"
		mustAddr("10.0.0.6"): {Owner{ID: "x\" \"a", IfName: "eth0"}, 5}, // quoting
		mustAddr("10.0.0.7"): {Owner{ID: "a", IfName: "eth0"}, 6},
	}, unix.Timespec{Sec: 1})
	// 10.0.0.7 released, then 10.0.0.2 released and reserved again by
	// someone else, then reserved by a's eth0 at 10.0.0.8.
	blk := appendRelease(nil, mustAddr("10.0.0.7"))
	blk = appendRelease(blk, mustAddr("10.0.0.2"))
	blk = appendReserve(blk, mustAddr("10.0.0.2"), lease{Owner{ID: "c", IfName: "eth0"}, 7})
	blk = appendReserve(blk, mustAddr("10.0.0.8"), lease{Owner{ID: "a", IfName: "eth0"}, 8})
	b = append(b, appendSeal(blk, 0, seal{vouched: true, live: 6, lines: 12})...)
	if _, _, err := parseIndex(b); err != nil {
		t.Fatalf("test index does not parse: %v\n%s", err, b)
	}
	tests := []struct {
		id, ifName string
		legacy     bool
		want       []string
	}{
		{"a", "eth0", false, []string{"10.0.0.8"}},
		{"a", "eth0", true, []string{"10.0.0.4", "10.0.0.8"}},
		{"a", "eth1", false, []string{"10.0.0.3"}},
		{"b", "a", true, []string{"10.0.0.5"}},
		{"x\" \"a", "eth0", false, []string{"10.0.0.6"}},
		{"c", "eth0", false, []string{"10.0.0.2"}},
		{"none", "eth0", true, nil},
	}
	for _, tt := range tests {
		got, err := scanOwned(b, tt.id, tt.ifName, tt.legacy)
		if err != nil {
			t.Fatal(err)
		}
		var gs []string
		for _, a := range got {
			gs = append(gs, a.String())
		}
		if diff := cmp.Diff(tt.want, gs); diff != "" {
			t.Errorf("scanOwned(%q, %q, %v) (-want +got):\n%s", tt.id, tt.ifName, tt.legacy, diff)
		}
	}
	live := liveIn(b, []netip.Addr{mustAddr("10.0.0.2"), mustAddr("10.0.0.7"), mustAddr("10.0.0.9")})
	if diff := cmp.Diff([]bool{true, false, false}, live); diff != "" {
		t.Errorf("liveIn (-want +got):\n%s", diff)
	}
}

// diskState is what a fresh operation would make of a network directory,
// computed without the store's lock (so that it can run inside a step hook,
// while an operation holds the lock): whether the index would be trusted,
// what it says, and what the files say.
type diskState struct {
	trusted bool
	index   map[netip.Addr]Owner // when trusted
	files   map[netip.Addr]Owner
	seal    seal
	damaged bool // a vouched last seal, but older blocks do not decode
}

func readDiskState(t *testing.T, dir string) diskState {
	t.Helper()
	var ds diskState
	ds.files = map[netip.Addr]Owner{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		a, ok := reservationName([]byte(e.Name()))
		if !ok || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		ds.files[a] = parseOwner(b)
	}
	b, err := os.ReadFile(filepath.Join(dir, indexName))
	if err != nil {
		return ds
	}
	last, ok := lastSeal(b)
	if !ok || last.mtime != mtimeOf(t, dir) {
		return ds
	}
	ds.seal = last
	leases, full, err := parseIndex(b)
	if err != nil {
		// The fast path would trust it; damage before the last block is
		// found when the index is decoded whole, and rebuilt then.
		ds.damaged = last.vouched
		return ds
	}
	if full != last {
		t.Errorf("lastSeal %+v != parseIndex's last seal %+v", last, full)
	}
	if !last.vouched {
		d, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		names, err := scanDir(d, make([]byte, 32<<10))
		if err != nil || !sameFiles(names, leases) {
			return ds
		}
	}
	ds.trusted = true
	ds.index = map[netip.Addr]Owner{}
	for a, l := range leases {
		ds.index[a] = l.Owner
	}
	return ds
}

// checkDisk fails when the index would be trusted but disagrees with the
// files: the one state a crash must never leave.
func checkDisk(t *testing.T, dir, when string) diskState {
	t.Helper()
	ds := readDiskState(t, dir)
	if ds.damaged {
		t.Errorf("%s: the index has a valid last seal but does not decode", when)
	}
	if ds.trusted {
		if diff := cmp.Diff(ds.files, ds.index, cmpLeases...); diff != "" {
			t.Errorf("%s: the index is trusted but wrong (-files +index):\n%s", when, diff)
		}
	}
	return ds
}

// storeState opens the store like an operation would and reports whether
// the index was trusted, and the leases (after a rebuild if it was not).
func storeState(t *testing.T, dir string) (bool, map[netip.Addr]lease) {
	t.Helper()
	st, err := openStore(context.Background(), dir, false)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	defer st.close()
	ok, err := st.loadIndex()
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		if err := st.rebuild(); err != nil {
			t.Fatal(err)
		}
	}
	leases, err := st.all()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.commit(); err != nil {
		t.Fatal(err)
	}
	return ok, leases
}

func mtimeOf(t *testing.T, dir string) unix.Timespec {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mtim
}

func setMtimeOf(t *testing.T, dir string, mt unix.Timespec) {
	t.Helper()
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dir, []unix.Timespec{{Nsec: unix.UTIME_OMIT}, mt}, 0); err != nil {
		t.Fatal(err)
	}
}

func testConf(t *testing.T, subnet string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"net1","ipam":{"dataDir":"`+t.TempDir()+`","ranges":[[{"subnet":"`+subnet+`"}]]}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIndexTracksDirectory(t *testing.T) {
	ctx := context.Background()
	conf := testConf(t, "10.5.0.0/24")
	dir := conf.Dir()
	for i, id := range []string{"a", "b", "c"} {
		got, err := Allocate(ctx, nil, conf, id, "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if want := mustAddr("10.5.0.2").Next(); i == 1 && got[0] != want {
			t.Fatalf("second ADD got %v, want %v", got, want)
		}
	}
	ok, leases := storeState(t, dir)
	if !ok || len(leases) != 3 {
		t.Fatalf("after our own ADDs the index must be trusted: ok=%v leases=%d", ok, len(leases))
	}
	// The seal vouches for the directory as it is: its mtime was set
	// just below the last change's stamp.
	ds := checkDisk(t, dir, "after ADDs")
	if !ds.trusted || !ds.seal.vouched || ds.seal.mtime != mtimeOf(t, dir) {
		t.Fatalf("seal %+v, directory mtime %v", ds.seal, mtimeOf(t, dir))
	}
	// Reading changes nothing: neither the index nor the mtime.
	before, _ := os.ReadFile(filepath.Join(dir, indexName))
	if _, err := Reservations(ctx, nil, conf.DataDir, conf.Network); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, indexName)); !bytes.Equal(before, after) || mtimeOf(t, dir) != ds.seal.mtime {
		t.Error("a read-only operation rewrote the index or moved the mtime")
	}

	// A reservation created behind our back (as the reference binary does).
	if err := os.WriteFile(filepath.Join(dir, "10.5.0.100"), []byte("ext\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok, leases = storeState(t, dir)
	if ok {
		t.Error("index trusted after a foreign reservation appeared")
	}
	if l := leases[mustAddr("10.5.0.100")]; l.Owner != (Owner{ID: "ext", IfName: "eth0"}) {
		t.Errorf("rebuilt owner = %+v", l.Owner)
	}
	if ok, _ := storeState(t, dir); !ok {
		t.Error("index not trusted after the rebuild was written")
	}

	// The same address released and reserved again for someone else.
	os.Remove(filepath.Join(dir, "10.5.0.2"))
	if err := os.WriteFile(filepath.Join(dir, "10.5.0.2"), []byte("other\r\neth1"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok, leases = storeState(t, dir)
	if ok {
		t.Error("index trusted after a file was replaced")
	}
	if l := leases[mustAddr("10.5.0.2")]; l.Owner != (Owner{ID: "other", IfName: "eth1"}) {
		t.Errorf("replaced owner = %+v", l.Owner)
	}

	// A damaged index is rebuilt, even when the damage is before the last
	// block (which the fast path does not read).
	if _, err := Allocate(ctx, nil, conf, "d", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := Release(ctx, nil, conf.DataDir, conf.Network, "d", "eth0", nil, 1); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, indexName))
	if err := overwrite(filepath.Join(dir, indexName), flip(b, len(header)+3)); err != nil {
		t.Fatal(err)
	}
	if ds := readDiskState(t, dir); ds.seal.mtime != mtimeOf(t, dir) || !ds.damaged {
		t.Fatal("test broken: the last seal must still match, the damage be before it")
	}
	if got, err := Reservations(ctx, nil, conf.DataDir, conf.Network); err != nil || len(got) != 4 {
		t.Errorf("damaged index: Reservations = %d, %v; want a rebuild with 4", len(got), err)
	}
	if ok, _ := storeState(t, dir); !ok {
		t.Error("index not trusted after rebuilding a damaged one")
	}
	if err := os.WriteFile(filepath.Join(dir, indexName), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, leases = storeState(t, dir); ok || len(leases) != 4 {
		t.Errorf("garbage index: trusted=%v leases=%d, want a rebuild with 4", ok, len(leases))
	}

	// Stray files are ignored: lock, last_reserved_ip.*, directories,
	// non-canonical names.
	os.Mkdir(filepath.Join(dir, "10.5.0.200"), 0o755)
	os.WriteFile(filepath.Join(dir, "2001:DB8::1"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o600)
	if _, leases = storeState(t, dir); len(leases) != 4 {
		t.Errorf("strays counted as reservations: %d leases", len(leases))
	}
}

// TestEveryStepLeavesATrustworthyIndex runs operations with a hook that, at
// every step that changes the disk, checks what a crash at that point would
// leave: if the next operation would trust the index, the index must
// describe the files exactly.
func TestEveryStepLeavesATrustworthyIndex(t *testing.T) {
	conf := testConf(t, "10.11.0.0/28")
	dir := conf.Dir()
	steps := map[string]int{}
	var stamp unix.Timespec // the directory's mtime after the last change
	ctx := context.WithValue(context.Background(), stepHookKey{}, func(step string) {
		steps[step]++
		checkDisk(t, dir, "at step "+step)
		switch step {
		case "vouch":
			// Below the stamp of the last change: any later change
			// moves the mtime away from it.
			if mt := mtimeOf(t, dir); !tsLess(mt, stamp) {
				t.Errorf("vouched mtime %v not below the last change's %v", mt, stamp)
			}
		case "seal":
		default:
			stamp = mtimeOf(t, dir)
		}
	})
	// Enough cycles to fill the range, wrap around, fail, and compact.
	for i := range 60 {
		id := fmt.Sprintf("c%d", i)
		if _, err := Allocate(ctx, nil, conf, id, "eth0"); err != nil && !strings.Contains(err.Error(), "no free address") {
			t.Fatal(err)
		}
		if i%3 != 0 {
			if _, err := Release(ctx, nil, conf.DataDir, conf.Network, fmt.Sprintf("c%d", i-1), "eth0", nil, 1); err != nil {
				t.Fatal(err)
			}
		}
		checkDisk(t, dir, "after "+id)
	}
	for _, want := range []string{"reserve", "release", "last reserved", "vouch", "seal", "compact write", "compact rename"} {
		if steps[want] == 0 {
			t.Errorf("step %q never ran (steps: %v)", want, steps)
		}
	}
	if ds := checkDisk(t, dir, "at the end"); !ds.trusted {
		t.Error("index not trusted at the end")
	}
}

// TestVouchSkipsTheLastSeal: two changes within one tick of the clock give
// the directory the same mtime; the value vouched for must still differ
// from the index's last seal, or a crash before the seal is written would
// leave the old index trusted.
func TestVouchSkipsTheLastSeal(t *testing.T) {
	conf := testConf(t, "10.12.0.0/24")
	dir := conf.Dir()
	bg := context.Background()
	if _, err := Allocate(bg, nil, conf, "a", "eth0"); err != nil {
		t.Fatal(err)
	}
	prev := checkDisk(t, dir, "after a").seal
	if !prev.vouched {
		t.Fatalf("seal not vouched: %+v", prev)
	}
	ctx := context.WithValue(bg, stepHookKey{}, func(step string) {
		switch step {
		case "last reserved":
			// The stamp of a change in the same tick as the last seal's.
			setMtimeOf(t, dir, addNsec(prev.mtime, 1))
		case "vouch":
			if mt := mtimeOf(t, dir); mt == prev.mtime {
				t.Errorf("vouched the last seal's value %v again", mt)
			}
			checkDisk(t, dir, "after vouch")
		}
	})
	if _, err := Allocate(ctx, nil, conf, "b", "eth0"); err != nil {
		t.Fatal(err)
	}
	ds := checkDisk(t, dir, "after b")
	if !ds.trusted || !ds.seal.vouched || ds.seal.mtime != addNsec(prev.mtime, -1) {
		t.Errorf("seal after a same-tick change = %+v, want vouched %v", ds.seal, addNsec(prev.mtime, -1))
	}
}

// TestIndexDoubt: a reservation that appeared without moving the mtime (a
// writer that ignored the lock, in the instant between a change and its
// seal) is found as soon as an ADD runs into it; the index is then
// dropped and the next operation rebuilds it.
func TestIndexDoubt(t *testing.T) {
	ctx := context.Background()
	conf := testConf(t, "10.13.0.0/24")
	dir := conf.Dir()
	if _, err := Allocate(ctx, nil, conf, "a", "eth0"); err != nil { // 10.13.0.2
		t.Fatal(err)
	}
	mt := mtimeOf(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "10.13.0.3"), []byte("sneaky\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	setMtimeOf(t, dir, mt)
	got, err := Allocate(ctx, nil, conf, "b", "eth0")
	if err != nil || got[0] != mustAddr("10.13.0.4") {
		t.Fatalf("ADD next to a hidden reservation = %v, %v", got, err)
	}
	if ds := readDiskState(t, dir); ds.trusted {
		t.Error("index still trusted after the ADD ran into a reservation it did not know")
	}
	held, err := Reservations(ctx, nil, conf.DataDir, conf.Network)
	if err != nil || held[mustAddr("10.13.0.3")] != (Owner{ID: "sneaky", IfName: "eth0"}) || len(held) != 3 {
		t.Errorf("after the rebuild: %v, %v", held, err)
	}
	// A release of a file that vanished the same way.
	mt = mtimeOf(t, dir)
	os.Remove(filepath.Join(dir, "10.13.0.4"))
	setMtimeOf(t, dir, mt)
	if freed, err := Release(ctx, nil, conf.DataDir, conf.Network, "b", "eth0", nil, 1); err != nil || len(freed) != 1 {
		t.Errorf("Release of a vanished file = %v, %v", freed, err)
	}
	if ds := readDiskState(t, dir); ds.trusted {
		t.Error("index still trusted after a release found its file missing")
	}
	if ok, leases := storeState(t, dir); ok || len(leases) != 2 {
		t.Errorf("after the rebuild: trusted=%v leases=%v", ok, leases)
	}
}

// TestCompaction: the index stays within twice the live reservations (plus
// slack) however many operations run, and compaction compares the names
// and inodes on disk with the index.
func TestCompaction(t *testing.T) {
	ctx := context.Background()
	conf := testConf(t, "10.14.0.0/16")
	dir := conf.Dir()
	for i := range 20 {
		if _, err := Allocate(ctx, nil, conf, fmt.Sprintf("keep%d", i), "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	maxLines := 0
	for i := range 300 {
		id := fmt.Sprintf("tmp%d", i)
		if _, err := Allocate(ctx, nil, conf, id, "eth0"); err != nil {
			t.Fatal(err)
		}
		if _, err := Release(ctx, nil, conf.DataDir, conf.Network, id, "eth0", nil, 1); err != nil {
			t.Fatal(err)
		}
		ds := checkDisk(t, dir, id)
		if !ds.trusted || ds.seal.live != 20 {
			t.Fatalf("%s: trusted=%v seal=%+v", id, ds.trusted, ds.seal)
		}
		maxLines = max(maxLines, ds.seal.lines)
	}
	if limit := 2*21 + compactSlack; maxLines > limit { // 21 live during an ADD
		t.Errorf("index grew to %d lines, limit %d", maxLines, limit)
	}
	b, _ := os.ReadFile(filepath.Join(dir, indexName))
	if n := bytes.Count(b, []byte{'\n'}) - 1; n != readDiskState(t, dir).seal.lines {
		t.Errorf("index has %d lines, its seal says %d", n, readDiskState(t, dir).seal.lines)
	}
	if _, err := os.Stat(filepath.Join(dir, indexName+".new")); err == nil {
		t.Error("compaction left its temporary file")
	}

	// A hidden reservation (mtime put back) is found at the next compaction.
	mt := mtimeOf(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "10.14.200.1"), []byte("sneaky\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	setMtimeOf(t, dir, mt)
	for i := 0; i < 2*compactSlack; i++ {
		id := fmt.Sprintf("more%d", i)
		if _, err := Allocate(ctx, nil, conf, id, "eth0"); err != nil {
			t.Fatal(err)
		}
		if _, err := Release(ctx, nil, conf.DataDir, conf.Network, id, "eth0", nil, 1); err != nil {
			t.Fatal(err)
		}
	}
	if ds := checkDisk(t, dir, "after compaction"); !ds.trusted || ds.index[mustAddr("10.14.200.1")].ID != "sneaky" {
		t.Errorf("compaction did not pick up the hidden reservation: %+v", ds.index[mustAddr("10.14.200.1")])
	}
}

// TestObservedSeal: an index sealed without a vouched mtime (a filesystem
// that refused to set it) is trusted only when the names and inodes on
// disk agree with it.
func TestObservedSeal(t *testing.T) {
	ctx := context.Background()
	conf := testConf(t, "10.15.0.0/24")
	dir := conf.Dir()
	for _, id := range []string{"a", "b"} {
		if _, err := Allocate(ctx, nil, conf, id, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	_, leases := storeState(t, dir)
	mt := mtimeOf(t, dir)
	b := appendSeal(encodeLeases(leases), len(header), seal{mtime: mt, live: len(leases), lines: len(leases) + 1})
	if err := overwrite(filepath.Join(dir, indexName), b); err != nil {
		t.Fatal(err)
	}
	if ok, _ := storeState(t, dir); !ok {
		t.Error("observed seal with matching names and inodes not trusted")
	}
	if err := overwrite(filepath.Join(dir, indexName), b); err != nil {
		t.Fatal(err)
	}
	setMtimeOf(t, dir, mt)
	// Same name, another inode (created while the old one is still in
	// use), the mtime put back.
	name := filepath.Join(dir, "10.15.0.2")
	if err := os.WriteFile(name+".new", []byte("q\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(name+".new", name); err != nil {
		t.Fatal(err)
	}
	setMtimeOf(t, dir, mt)
	if ok, leases := storeState(t, dir); ok || leases[mustAddr("10.15.0.2")].ID != "q" {
		t.Errorf("observed seal trusted although a file was replaced: ok=%v %+v", ok, leases[mustAddr("10.15.0.2")])
	}
}

func TestReleaseUsesPrevResultWhenIndexIsStale(t *testing.T) {
	ctx := context.Background()
	conf := testConf(t, "10.6.0.0/24")
	got, err := Allocate(ctx, nil, conf, "a", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Allocate(ctx, nil, conf, "b", "eth0"); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(conf.Dir(), indexName))
	// prevResult names a's address and also b's: b's must not be freed.
	freed, err := Release(ctx, nil, conf.DataDir, conf.Network, "a", "eth0", []netip.Addr{got[0], mustAddr("10.6.0.3")}, 1)
	if err != nil || len(freed) != 1 || freed[0] != got[0] {
		t.Fatalf("Release = %v, %v; want [%v]", freed, err, got[0])
	}
	if _, err := os.Stat(filepath.Join(conf.Dir(), "10.6.0.3")); err != nil {
		t.Errorf("b's reservation was removed: %v", err)
	}
	// Legacy ID-only reservations are released too.
	os.WriteFile(filepath.Join(conf.Dir(), "10.6.0.50"), []byte("b"), 0o600)
	freed, err = Release(ctx, nil, conf.DataDir, conf.Network, "b", "eth0", nil, 1)
	if err != nil || len(freed) != 2 {
		t.Fatalf("Release(b) = %v, %v; want its two reservations", freed, err)
	}
	if _, leases := storeState(t, conf.Dir()); len(leases) != 0 {
		t.Errorf("leases left: %v", leases)
	}
	// A missing directory is fine.
	if freed, err := Release(ctx, nil, conf.DataDir, "never-used", "x", "eth0", nil, 1); err != nil || freed != nil {
		t.Errorf("Release in a missing directory = %v, %v", freed, err)
	}
}

func TestLockWaitIsBounded(t *testing.T) {
	dir := t.TempDir()
	held, err := openStore(context.Background(), dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer held.close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := openStore(ctx, dir, true); err == nil || !strings.Contains(err.Error(), "lock") {
		t.Fatalf("openStore with a held lock and a done context = %v, want a lock error", err)
	}
}
