package dhcp

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A daemon starting on a state directory forgets leases whose namespace
// is gone and removes files it cannot read; nothing is resumed from them.
func TestResumeForgetsVanishedAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	gone := leaseFile{Version: stateVersion, Key: Key{"c", "n", "eth0"}, Netns: "/run/netns/lt-dhcp-vanished", NSDev: 1, NSIno: 2,
		Address: "10.0.0.5", Server: "10.0.0.1", Start: time.Now(), Duration: time.Hour, T1: 30 * time.Minute, T2: 50 * time.Minute, State: StateBound}
	if err := writeFileAtomic(filepath.Join(dir, "lease-gone.json"), gone); err != nil {
		t.Fatal(err)
	}
	bad := gone
	bad.Address = "not-an-address"
	if err := writeFileAtomic(filepath.Join(dir, "lease-bad.json"), bad); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "lease-junk.json"), []byte("{"), 0o600)
	os.WriteFile(filepath.Join(dir, "unrelated"), []byte("kept"), 0o600)
	d, err := NewDaemon(DaemonConfig{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n := len(d.Leases()); n != 0 {
		t.Errorf("resumed %d leases", n)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "unrelated" {
		t.Errorf("state directory holds %v, want only the unrelated file", names)
	}
}

func TestLoadLeaseValidation(t *testing.T) {
	dir := t.TempDir()
	base := leaseFile{Version: stateVersion, Key: Key{"c", "n", "eth0"}, Netns: "/x", Address: "10.0.0.5", Server: "10.0.0.1",
		ServerMAC: "02:00:00:00:00:01", Duration: time.Hour, T1: time.Minute, T2: 2 * time.Minute, State: StateRenewing}
	d := &Daemon{cfg: DaemonConfig{StateDir: dir}}
	p := filepath.Join(dir, "l.json")
	writeFileAtomic(p, base)
	ls, err := d.loadLease(p)
	if err != nil {
		t.Fatal(err)
	}
	if ls.state != StateBound || ls.cur.ServerMAC.String() != "02:00:00:00:00:01" || !bytes.Equal(clientID("c", "n", "eth0"), clientID(ls.key.ContainerID, ls.key.Network, ls.key.IfName)) {
		t.Errorf("loaded %+v %+v", ls, ls.cur)
	}
	for name, mod := range map[string]func(*leaseFile){
		"version": func(f *leaseFile) { f.Version = 9 },
		"server":  func(f *leaseFile) { f.Server = "::1" },
		"key":     func(f *leaseFile) { f.Key.IfName = "" },
		"times":   func(f *leaseFile) { f.T2 = 0 },
		"state":   func(f *leaseFile) { f.State = "dancing" },
	} {
		f := base
		mod(&f)
		writeFileAtomic(p, f)
		if _, err := d.loadLease(p); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

func TestDaemonMainFlags(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{{"-timeout", "0"}, {"-nosuchflag"}, {"extra"}, {"-log", "loud"}} {
		out.Reset()
		if rc := DaemonMain(args, &out); rc != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, rc, out.String())
		}
	}
	out.Reset()
	if rc := DaemonMain([]string{"-h"}, &out); rc != 0 || !strings.Contains(out.String(), "-socketpath") {
		t.Errorf("-h: exit %d\n%s", rc, out.String())
	}
	// A path that is not a socket makes the start fail, naming it.
	file := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(file, nil, 0o600)
	out.Reset()
	if rc := DaemonMain([]string{"-socketpath", file, "-statedir", ""}, &out); rc != 1 || !strings.Contains(out.String(), "not a socket") {
		t.Errorf("plain file as socket: exit %d\n%s", rc, out.String())
	}
	if !IsDaemonCommand([]string{"daemon", "-pidfile", "x"}) || IsDaemonCommand(nil) || IsDaemonCommand([]string{"daemons"}) {
		t.Error("IsDaemonCommand")
	}
}
