package tuning

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub", "tuning")
	path := statePath(dir, "c1_x", "eth0")
	if path != filepath.Join(dir, "c1_x_eth0.json") {
		t.Errorf("path %s", path)
	}
	if st, err := readState(path); st != nil || err != nil {
		t.Fatalf("missing file: %v %v", st, err)
	}
	want := &state{Mac: "c2:11:22:33:44:55", Promisc: ptr(false), Mtu: 1500, Allmulti: ptr(true), TxQLen: ptr(1000),
		Sysctls: []savedSysctl{{"net/core/somaxconn", "4096"}, {"net/ipv4/ping_group_range", "1\t0"}},
		Network: "n", ContainerID: "c1_x", IfName: "eth0"}
	if err := writeState(path, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v %v", fi.Mode(), err)
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v %v", di.Mode(), err)
	}
	got, err := readState(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	if err := removeState(path); err != nil {
		t.Fatal(err)
	}
	if err := removeState(path); err != nil {
		t.Errorf("second remove: %v", err)
	}
}

// The reference plugin's backup file reads as linen's state.
func TestReferenceBackupFormat(t *testing.T) {
	st, err := decodeState([]byte(`{"mac":"0a:58:0a:f4:01:05","promisc":false,"mtu":1450,"allmulti":true,"txQLen":1000}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &state{Mac: "0a:58:0a:f4:01:05", Promisc: ptr(false), Mtu: 1450, Allmulti: ptr(true), TxQLen: ptr(1000)}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// A tampered file cannot make DEL write outside /proc/sys/net.
func TestDecodeStateRejects(t *testing.T) {
	for in, want := range map[string]string{
		`{"sysctls":[{"path":"net/../../kernel/hostname","value":"x"}]}`: "sysctls[0]",
		`{"sysctls":[{"path":"kernel/hostname","value":"x"}]}`:           "sysctls[0]",
		`{"sysctls":[{"path":"net/core/somaxconn","value":"1\n2"}]}`:     "not one line",
		`{"mac":"nope"}`: "mac",
		`{"mtu":-1}`:     "mtu",
		`{"txQLen":-5}`:  "txQLen",
		`[]`:             "cannot unmarshal",
		`{"mac":`:        "EOF",
	} {
		if _, err := decodeState([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}

func TestMerge(t *testing.T) {
	now := &state{Mtu: 1400, Promisc: ptr(true), Sysctls: []savedSysctl{{"net/a", "2"}, {"net/b", "9"}}}
	old := &state{Mtu: 1500, Mac: "c2:00:00:00:00:01", Sysctls: []savedSysctl{{"net/a", "1"}}}
	now.merge(old)
	want := &state{Mtu: 1500, Mac: "c2:00:00:00:00:01", Promisc: ptr(true), Sysctls: []savedSysctl{{"net/a", "1"}, {"net/b", "9"}}}
	if diff := cmp.Diff(want, now); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	now.merge(nil)
	if diff := cmp.Diff(want, now); diff != "" {
		t.Errorf("merge(nil) changed it:\n%s", diff)
	}
}
