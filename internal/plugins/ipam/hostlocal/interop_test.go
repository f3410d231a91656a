package hostlocal

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"linen.dev/linen/internal/netns/nstest"
)

// The reference plugin, from Debian's containernetworking-plugins.
const referenceBin = "/usr/lib/cni/host-local"

func requireReference(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(referenceBin); err != nil {
		t.Skipf("skipped: reference plugin %s not installed (apt-get install containernetworking-plugins): %v", referenceBin, err)
	}
}

// reference runs the reference binary; conf must use a cniVersion it knows
// (it supports up to 1.0.0).
func reference(ctx context.Context, cmd, id, ifName, netnsPath, conf string) *exec.Cmd {
	c := exec.CommandContext(ctx, referenceBin)
	c.Env = []string{
		"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + id, "CNI_NETNS=" + netnsPath,
		"CNI_IFNAME=" + ifName, "CNI_PATH=/usr/lib/cni", "PATH=/usr/bin:/bin",
	}
	c.Stdin = strings.NewReader(conf)
	return c
}

func runReference(t *testing.T, cmd, id, ifName, netnsPath, conf string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := reference(ctx, cmd, id, ifName, netnsPath, conf)
	var out, stderr bytes.Buffer
	c.Stdout, c.Stderr = &out, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("reference %s %s: %v\nstdout: %s\nstderr: %s", cmd, id, err, out.String(), stderr.String())
	}
	return out.String()
}

func interopConf(data string) string {
	return `{"cniVersion":"1.0.0","name":"interop","ipam":{"type":"host-local","dataDir":"` + data + `","ranges":[[{"subnet":"10.20.0.0/24"}]]}}`
}

func TestInteropReference(t *testing.T) {
	requireReference(t)
	ns := nstest.New(t)
	data := t.TempDir()
	dir := filepath.Join(data, "interop")
	conf := interopConf(data)

	// Round robin continues across binaries, both ways.
	seq := []struct {
		who, id, want string
	}{
		{"linen", "a", "10.20.0.2/24"},
		{"linen", "b", "10.20.0.3/24"},
		{"ref", "c", "10.20.0.4/24"},
		{"linen", "d", "10.20.0.5/24"},
		{"ref", "e", "10.20.0.6/24"},
		{"linen", "f", "10.20.0.7/24"},
	}
	for _, s := range seq {
		var got string
		if s.who == "ref" {
			got = firstIP(t, []byte(runReference(t, "ADD", s.id, "eth0", ns.Path(), conf)))
		} else {
			got = firstIP(t, mustInvoke(t, "ADD", s.id, "eth0", ns.Path(), "", conf))
		}
		if got != s.want {
			t.Fatalf("%s ADD %s got %s, want %s", s.who, s.id, got, s.want)
		}
	}
	files := reservationFiles(t, dir)
	for _, id := range []string{"a", "c"} {
		found := false
		for _, content := range files {
			found = found || content == id+"\r\neth0"
		}
		if !found {
			t.Errorf("no reservation of %s in the shared format: %q", id, files)
		}
	}

	// The reference refuses a duplicate of our reservation: it reads our
	// files, and is not confused by our index.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := reference(ctx, "ADD", "a", "eth0", ns.Path(), conf).Output(); err == nil || !strings.Contains(string(out), "duplicate allocation") {
		t.Errorf("reference ADD of a duplicate: %v, %s", err, out)
	}
	// And we refuse a duplicate of its reservation.
	if _, err := invoke("ADD", "c", "eth0", ns.Path(), "", conf); err == nil || !strings.Contains(err.Msg, "duplicate allocation") {
		t.Errorf("linen ADD of the reference's duplicate = %v", err)
	}

	// Each releases the other's leases.
	runReference(t, "DEL", "a", "eth0", "", conf)
	mustInvoke(t, "DEL", "c", "eth0", "", "", conf)
	files = reservationFiles(t, dir)
	if _, ok := files["10.20.0.2"]; ok {
		t.Errorf("reference DEL left linen's lease of a: %q", files)
	}
	if _, ok := files["10.20.0.4"]; ok {
		t.Errorf("linen DEL left the reference's lease of c: %q", files)
	}
	if len(files) != 4 {
		t.Errorf("want 4 leases left, have %q", files)
	}
	for _, id := range []string{"b", "d", "e", "f"} {
		if id == "e" {
			mustInvoke(t, "DEL", id, "eth0", "", "", conf)
		} else {
			runReference(t, "DEL", id, "eth0", "", conf)
		}
	}
	if files := reservationFiles(t, dir); len(files) != 0 {
		t.Errorf("leases left after all DELs: %q", files)
	}
	if ok, leases := storeState(t, dir); len(leases) != 0 {
		t.Errorf("index after mixed DELs: trusted=%v leases=%v", ok, leases)
	}
}

// TestInteropLock: the reference binary waits for linen's lock.
func TestInteropLock(t *testing.T) {
	requireReference(t)
	ns := nstest.New(t)
	data := t.TempDir()
	conf := interopConf(data)
	held, err := openStore(context.Background(), filepath.Join(data, "interop"), true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := reference(ctx, "ADD", "x", "eth0", ns.Path(), conf)
	var out bytes.Buffer
	c.Stdout = &out
	if err := c.Start(); err != nil {
		held.close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		held.close()
		t.Fatalf("reference ADD finished while linen held the lock: %v %s", err, out.String())
	case <-time.After(300 * time.Millisecond):
	}
	held.close()
	if err := <-done; err != nil {
		t.Fatalf("reference ADD after the lock was released: %v %s", err, out.String())
	}
	if got := firstIP(t, out.Bytes()); got != "10.20.0.2/24" {
		t.Errorf("reference got %s", got)
	}
}

// TestInteropInterleaved runs ADDs and DELs of both binaries on one
// directory in a random (seeded) order: after every step the index is
// either right or not trusted, no address is held twice, and each binary
// frees what the other reserved.
func TestInteropInterleaved(t *testing.T) {
	requireReference(t)
	ns := nstest.New(t)
	data := t.TempDir()
	dir := filepath.Join(data, "interop")
	conf := interopConf(data)
	rnd := rand.New(rand.NewPCG(7, 11))
	held := map[string]string{} // container -> address
	for i := range 60 {
		refs := rnd.IntN(2) == 0
		who := map[bool]string{true: "reference", false: "linen"}[refs]
		if len(held) > 0 && rnd.IntN(3) == 0 {
			var id string
			for id = range held {
				break
			}
			if refs {
				runReference(t, "DEL", id, "eth0", "", conf)
			} else {
				mustInvoke(t, "DEL", id, "eth0", "", "", conf)
			}
			delete(held, id)
		} else {
			id := fmt.Sprintf("c%d", i)
			var got []byte
			if refs {
				got = []byte(runReference(t, "ADD", id, "eth0", ns.Path(), conf))
			} else {
				got = mustInvoke(t, "ADD", id, "eth0", ns.Path(), "", conf)
			}
			ip := strings.TrimSuffix(firstIP(t, got), "/24")
			for other, a := range held {
				if a == ip {
					t.Fatalf("step %d: %s ADD %s got %s, held by %s", i, who, id, ip, other)
				}
			}
			held[id] = ip
		}
		ds := checkDisk(t, dir, fmt.Sprintf("step %d (%s)", i, who))
		if len(ds.files) != len(held) {
			t.Fatalf("step %d: %d reservation files, %d attachments hold one", i, len(ds.files), len(held))
		}
		for id, ip := range held {
			if o := ds.files[netip.MustParseAddr(ip)]; o.ID != id {
				t.Fatalf("step %d: %s holds %+v, want %s", i, ip, o, id)
			}
		}
	}
}
