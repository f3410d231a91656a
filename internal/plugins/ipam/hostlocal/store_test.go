package hostlocal

import (
	"context"
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

func TestIndexRoundTrip(t *testing.T) {
	mt := unix.Timespec{Sec: 1700000000, Nsec: 123456789}
	leases := map[netip.Addr]lease{
		mustAddr("10.0.0.2"):    {Owner{ID: "abc", IfName: "eth0"}, 11},
		mustAddr("10.0.0.3"):    {Owner{ID: "old", Legacy: true}, 12},
		mustAddr("2001:db8::5"): {Owner{ID: "we\"ird \n\x00 ü", IfName: ""}, 13},
	}
	b := encodeIndex(mt, leases)
	gotMt, got, err := decodeIndex(b)
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, b)
	}
	if gotMt != mt {
		t.Errorf("mtime = %v, want %v", gotMt, mt)
	}
	if diff := cmp.Diff(leases, got, cmp.AllowUnexported(lease{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("leases (-want +got):\n%s", diff)
	}
	if strings.TrimSpace(string(b)) == "abc" || !strings.HasPrefix(string(b), indexMagic+"\n") {
		t.Errorf("index content must never look like a container ID:\n%s", b)
	}
	// Empty index.
	if _, l, err := decodeIndex(encodeIndex(mt, nil)); err != nil || len(l) != 0 {
		t.Errorf("empty index: %v, %v", l, err)
	}
	// Every kind of damage is detected.
	bad := map[string][]byte{
		"empty":          nil,
		"truncated":      b[:len(b)-5],
		"torn rewrite":   append(append([]byte{}, b...), "10.0.0.9 1 \"x\"\n"...),
		"flipped byte":   flip(b, len(indexMagic)+10),
		"no trailer":     []byte(indexMagic + "\nmtime 1 2\n"),
		"foreign":        []byte("c1\r\neth0"),
		"count mismatch": []byte(strings.Replace(string(b), "end 3", "end 4", 1)),
	}
	for name, in := range bad {
		if _, _, err := decodeIndex(in); err == nil {
			t.Errorf("%s: decodeIndex accepted a damaged index", name)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte{}, b...)
	c[i] ^= 0x01
	return c
}

// storeState opens the store like an operation would and reports whether
// the index was trusted, and the leases.
func storeState(t *testing.T, dir string) (bool, map[netip.Addr]lease) {
	t.Helper()
	st, err := openStore(context.Background(), dir, false)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	defer st.close()
	if err := st.scan(); err != nil {
		t.Fatal(err)
	}
	ok := st.readIndex()
	if !ok {
		if err := st.rebuild(); err != nil {
			t.Fatal(err)
		}
		if err := st.commit(); err != nil {
			t.Fatal(err)
		}
	}
	return ok, st.leases
}

func mtimeOf(t *testing.T, dir string) unix.Timespec {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mtim
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

	// Rewriting the index does not change the directory's mtime.
	before := mtimeOf(t, dir)
	st, err := openStore(ctx, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.load(); err != nil {
		t.Fatal(err)
	}
	st.changed = true
	if err := st.commit(); err != nil {
		t.Fatal(err)
	}
	st.close()
	if after := mtimeOf(t, dir); after != before {
		t.Errorf("index rewrite changed the directory mtime: %v -> %v", before, after)
	}
	if ok, _ := storeState(t, dir); !ok {
		t.Error("index not trusted after an in-place rewrite")
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

	// A damaged index is rebuilt.
	if err := os.WriteFile(filepath.Join(dir, indexName), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, leases = storeState(t, dir); ok || len(leases) != 4 {
		t.Errorf("damaged index: trusted=%v leases=%d, want a rebuild with 4", ok, len(leases))
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
