package hostlocal

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
)

func testEnv() *pluginmain.Env {
	return &pluginmain.Env{Stderr: io.Discard, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// invoke runs one verb through pluginmain.Invoke, as the binary would.
func invoke(cmd, id, ifName, netnsPath, cniArgs, conf string) ([]byte, *types.Error) {
	a := &pluginmain.Args{
		Command: cmd, ContainerID: id, Netns: netnsPath, IfName: ifName,
		Args: cniArgs, Path: "/opt/cni/bin", StdinData: []byte(conf),
	}
	out, _, err := pluginmain.Invoke(context.Background(), testEnv(), Plugin(), a)
	return out, err
}

func mustInvoke(t *testing.T, cmd, id, ifName, netnsPath, cniArgs, conf string) []byte {
	t.Helper()
	out, err := invoke(cmd, id, ifName, netnsPath, cniArgs, conf)
	if err != nil {
		t.Fatalf("%s %s/%s: code %d: %s", cmd, id, ifName, err.Code, err.Msg)
	}
	return out
}

// reservationFiles lists the IP-named files of a network directory.
func reservationFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return out
		}
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			out[e.Name()] = string(b)
		}
	}
	return out
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

func TestRoundTripEveryVersion(t *testing.T) {
	ns := nstest.New(t)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 192.0.2.53\nsearch example.com\n"), 0o644)
	for _, v := range version.All.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			data := t.TempDir()
			multi, _ := version.GreaterThanOrEqualTo(v, "0.3.0")
			ranges := `[[{"subnet":"10.1.0.0/24"}]]`
			if multi {
				ranges = `[[{"subnet":"10.1.0.0/24"}],[{"subnet":"2001:db8:1::/64"}]]`
			}
			conf := fmt.Sprintf(`{"cniVersion":%q,"name":"rt","type":"bridge","ipam":{"type":"host-local","dataDir":%q,"resolvConf":%q,
				"ranges":%s,"routes":[{"dst":"0.0.0.0/0"},{"dst":"2001:db8:9::/48"}]}}`, v, data, resolv, ranges)
			out := mustInvoke(t, "ADD", "ctr1", "eth0", ns.Path(), "", conf)
			got := decodeJSON(t, out)

			var want map[string]any
			dns := map[string]any{"nameservers": []any{"192.0.2.53"}, "search": []any{"example.com"}}
			switch {
			case !multi:
				want = map[string]any{"cniVersion": v,
					"ip4": map[string]any{"ip": "10.1.0.2/24", "gateway": "10.1.0.1", "routes": []any{map[string]any{"dst": "0.0.0.0/0"}}},
					"dns": dns}
			default:
				ip4 := map[string]any{"address": "10.1.0.2/24", "gateway": "10.1.0.1"}
				ip6 := map[string]any{"address": "2001:db8:1::2/64", "gateway": "2001:db8:1::1"}
				if old, _ := version.GreaterThanOrEqualTo(v, "1.0.0"); !old {
					ip4["version"], ip6["version"] = "4", "6"
				}
				want = map[string]any{"cniVersion": v, "ips": []any{ip4, ip6},
					"routes": []any{map[string]any{"dst": "0.0.0.0/0"}, map[string]any{"dst": "2001:db8:9::/48"}},
					"dns":    dns}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ADD result (-want +got):\n%s", diff)
			}
			files := reservationFiles(t, filepath.Join(data, "rt"))
			if files["10.1.0.2"] != "ctr1\r\neth0" || (multi && files["2001:db8:1::2"] != "ctr1\r\neth0") {
				t.Errorf("reservation files = %q", files)
			}
			fi, err := os.Stat(filepath.Join(data, "rt", "10.1.0.2"))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("reservation file mode = %v, %v; want 0600", fi.Mode(), err)
			}

			withPrev := conf
			if ok, _ := version.GreaterThanOrEqualTo(v, "0.4.0"); ok {
				withPrev = strings.TrimSuffix(strings.TrimSpace(conf), "}") + `,"prevResult":` + string(out) + "}"
				mustInvoke(t, "CHECK", "ctr1", "eth0", ns.Path(), "", withPrev)
				if _, err := invoke("CHECK", "ctr2", "eth0", ns.Path(), "", withPrev); err == nil {
					t.Error("CHECK of a container without reservation succeeded")
				}
			} else if _, err := invoke("CHECK", "ctr1", "eth0", ns.Path(), "", conf); err == nil || err.Code != 1 {
				t.Errorf("CHECK below 0.4.0 = %v, want code 1", err)
			}
			mustInvoke(t, "DEL", "ctr1", "eth0", ns.Path(), "", withPrev)
			if files := reservationFiles(t, filepath.Join(data, "rt")); len(files) != 0 {
				t.Errorf("after DEL: %q", files)
			}
			mustInvoke(t, "DEL", "ctr1", "eth0", "", "", withPrev) // again, without a netns
			if ok, _ := version.GreaterThanOrEqualTo(v, "0.4.0"); ok {
				if _, err := invoke("CHECK", "ctr1", "eth0", ns.Path(), "", withPrev); err == nil {
					t.Error("CHECK after DEL succeeded")
				}
			}
			if v == "1.1.0" {
				mustInvoke(t, "STATUS", "", "", "", "", conf)
				mustInvoke(t, "GC", "", "", "", "", strings.TrimSuffix(conf, "}")+`,"cni.dev/valid-attachments":null}`)
				if _, err := invoke("GC", "", "", "", "", conf); err == nil || err.Code != 7 {
					t.Errorf("GC without cni.dev/valid-attachments: %v, want code 7", err)
				}
			}
		})
	}
}

func confFor(data, ranges string) string {
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"net","ipam":{"type":"host-local","dataDir":%q,"ranges":%s}}`, data, ranges)
}

func firstIP(t *testing.T, out []byte) string {
	t.Helper()
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.IPs) == 0 {
		t.Fatalf("result %s: %v", out, err)
	}
	return r.IPs[0].Address
}

func TestAddErrors(t *testing.T) {
	ns := nstest.New(t)
	data := t.TempDir()
	dir := filepath.Join(data, "net")
	conf := confFor(data, `[[{"subnet":"10.2.0.0/29"}]]`)

	// Duplicate (id, ifname); another interface of the same container is fine.
	mustInvoke(t, "ADD", "c1", "eth0", ns.Path(), "", conf)
	if _, err := invoke("ADD", "c1", "eth0", ns.Path(), "", conf); err == nil || !strings.Contains(err.Msg, "duplicate allocation is not allowed") ||
		!strings.Contains(err.Msg, `10.2.0.2 is already reserved for container "c1" interface "eth0"`) {
		t.Errorf("duplicate ADD = %v", err)
	}
	mustInvoke(t, "ADD", "c1", "eth1", ns.Path(), "", conf)

	// Requested address already taken, and one that is free.
	if _, err := invoke("ADD", "c2", "eth0", ns.Path(), "IP=10.2.0.2", conf); err == nil ||
		!strings.Contains(err.Msg, `ipam.ranges[0]: requested address 10.2.0.2 is already reserved for container "c1" interface "eth0"`) {
		t.Errorf("ADD of a taken address = %v", err)
	}
	if got := firstIP(t, mustInvoke(t, "ADD", "c2", "eth0", ns.Path(), "IgnoreUnknown=1;IP=10.2.0.6", conf)); got != "10.2.0.6/29" {
		t.Errorf("requested 10.2.0.6, got %s", got)
	}
	// The requested address moved the round-robin hint.
	if b, _ := os.ReadFile(filepath.Join(dir, "last_reserved_ip.0")); string(b) != "10.2.0.6" {
		t.Errorf("last_reserved_ip.0 = %q", b)
	}
	// Round robin wraps: .2 .3 taken, .6 last; .4 and .5 are next... after .6 comes .2 (taken), .3 (taken), .4.
	if got := firstIP(t, mustInvoke(t, "ADD", "c3", "eth0", ns.Path(), "", conf)); got != "10.2.0.4/29" {
		t.Errorf("round robin after wrap gave %s, want 10.2.0.4/29", got)
	}
	mustInvoke(t, "ADD", "c4", "eth0", ns.Path(), "", conf)
	_, err := invoke("ADD", "c5", "eth0", ns.Path(), "", conf)
	if err == nil || err.Msg != "ipam.ranges[0]: no free address in 10.2.0.0/29" {
		t.Errorf("ADD in a full range = %v", err)
	}
	_, err = invoke("STATUS", "", "", "", "", conf)
	if err == nil || err.Code != pluginmain.CodeNotAvailable || !strings.Contains(err.Msg, "ipam.ranges[0]: no free address in 10.2.0.0/29") {
		t.Errorf("STATUS with a full range = %v", err)
	}
	mustInvoke(t, "DEL", "c4", "eth0", "", "", conf)
	mustInvoke(t, "STATUS", "", "", "", "", conf)
}

func TestFailedAddLeavesNothing(t *testing.T) {
	ns := nstest.New(t)
	data := t.TempDir()
	dir := filepath.Join(data, "net")
	conf := confFor(data, `[[{"subnet":"10.3.0.0/24"}],[{"subnet":"10.4.0.0/30"}]]`)
	mustInvoke(t, "ADD", "c1", "eth0", ns.Path(), "", conf)
	before := reservationFiles(t, dir)
	last, _ := os.ReadFile(filepath.Join(dir, "last_reserved_ip.0"))
	_, err := invoke("ADD", "c2", "eth0", ns.Path(), "", conf)
	if err == nil || !strings.Contains(err.Msg, "ipam.ranges[1]: no free address in 10.4.0.0/30") {
		t.Fatalf("ADD with the second set full = %v", err)
	}
	if diff := cmp.Diff(before, reservationFiles(t, dir)); diff != "" {
		t.Errorf("failed ADD left reservations (-before +after):\n%s", diff)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, "last_reserved_ip.0")); string(now) != string(last) {
		t.Errorf("failed ADD moved last_reserved_ip.0: %q -> %q", last, now)
	}
	if ok, _ := storeState(t, dir); !ok {
		t.Error("index not valid after a failed ADD")
	}
}

func TestDelIsForgiving(t *testing.T) {
	data := t.TempDir()
	// Unknown network, no netns, invalid ranges: all succeed.
	mustInvoke(t, "DEL", "c1", "eth0", "", "", confFor(data, `[[{"subnet":"10.0.0.0/24"}]]`))
	mustInvoke(t, "DEL", "c1", "eth0", "/run/netns/does-not-exist-linen", "", confFor(data, `[[{"subnet":"10.0.0.0/24"}]]`))
	dir := filepath.Join(data, "net")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "10.0.0.9"), []byte("c1\r\neth0"), 0o600)
	mustInvoke(t, "DEL", "c1", "eth0", "", "", confFor(data, `[[{"subnet":"not-a-subnet"}]]`))
	if files := reservationFiles(t, dir); len(files) != 0 {
		t.Errorf("DEL with an invalid range left %q", files)
	}
	// Type errors are still reported (the data directory is unknown).
	if _, err := invoke("DEL", "c1", "eth0", "", "", `{"cniVersion":"1.0.0","name":"net","ipam":{"dataDir":7}}`); err == nil || err.Code != 6 {
		t.Errorf("DEL with a wrongly typed dataDir = %v, want code 6", err)
	}
}

func TestCheck(t *testing.T) {
	ns := nstest.New(t)
	data := t.TempDir()
	conf := confFor(data, `[[{"subnet":"10.7.0.0/24"}]]`)
	out := mustInvoke(t, "ADD", "c1", "eth0", ns.Path(), "", conf)
	mustInvoke(t, "ADD", "c2", "eth0", ns.Path(), "", conf)
	with := func(prev string) string {
		return strings.TrimSuffix(conf, "}") + `,"prevResult":` + prev + "}"
	}
	mustInvoke(t, "CHECK", "c1", "eth0", ns.Path(), "", with(string(out)))
	// prevResult names c2's address.
	bad := `{"cniVersion":"1.1.0","ips":[{"address":"10.7.0.3/24"}]}`
	if _, err := invoke("CHECK", "c1", "eth0", ns.Path(), "", with(bad)); err == nil || !strings.Contains(err.Msg, `10.7.0.3 is reserved for container "c2"`) {
		t.Errorf("CHECK with another container's address = %v", err)
	}
	// prevResult names an address nobody holds.
	bad = `{"cniVersion":"1.1.0","ips":[{"address":"10.7.0.99/24"}]}`
	if _, err := invoke("CHECK", "c1", "eth0", ns.Path(), "", with(bad)); err == nil || !strings.Contains(err.Msg, "10.7.0.99 is not reserved") {
		t.Errorf("CHECK with a free address = %v", err)
	}
	// Addresses outside our ranges (another plugin's) are not our business.
	other := `{"cniVersion":"1.1.0","ips":[{"address":"10.7.0.2/24"},{"address":"192.0.2.7/24"}]}`
	mustInvoke(t, "CHECK", "c1", "eth0", ns.Path(), "", with(other))
	if _, err := invoke("CHECK", "c1", "eth1", ns.Path(), "", with(string(out))); err == nil || !strings.Contains(err.Msg, "no address is reserved") {
		t.Errorf("CHECK of another interface = %v", err)
	}
}

func TestGC(t *testing.T) {
	ns := nstest.New(t)
	data := t.TempDir()
	dir := filepath.Join(data, "net")
	conf := confFor(data, `[[{"subnet":"10.8.0.0/24"}],[{"subnet":"2001:db8:8::/64"}]]`)
	for _, id := range []string{"keep", "drop1", "drop2"} {
		mustInvoke(t, "ADD", id, "eth0", ns.Path(), "", conf)
	}
	mustInvoke(t, "ADD", "keep", "net1", ns.Path(), "", conf)
	os.WriteFile(filepath.Join(dir, "10.8.0.200"), []byte("keep"), 0o600) // legacy, container still valid
	os.WriteFile(filepath.Join(dir, "10.8.0.201"), []byte("gone"), 0o600) // legacy, container gone
	os.WriteFile(filepath.Join(dir, "notes"), []byte("operator"), 0o600)  // not a reservation
	gc := strings.TrimSuffix(conf, "}") + `,"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"keep","ifname":"net1"}]}`
	mustInvoke(t, "GC", "", "", "", "", gc)
	got := reservationFiles(t, dir)
	want := map[string]string{
		"10.8.0.2": "keep\r\neth0", "2001:db8:8::2": "keep\r\neth0",
		"10.8.0.5": "keep\r\nnet1", "2001:db8:8::5": "keep\r\nnet1",
		"10.8.0.200": "keep",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after GC (-want +got):\n%s", diff)
	}
	for _, keep := range []string{"lock", "last_reserved_ip.0", "last_reserved_ip.1", "notes", indexName} {
		if _, err := os.Stat(filepath.Join(dir, keep)); err != nil {
			t.Errorf("GC removed %s: %v", keep, err)
		}
	}
	// An empty list releases everything.
	mustInvoke(t, "GC", "", "", "", "", strings.TrimSuffix(conf, "}")+`,"cni.dev/valid-attachments":[]}`)
	if got := reservationFiles(t, dir); len(got) != 0 {
		t.Errorf("after GC with no valid attachment: %q", got)
	}
}

func TestStatusWithRuntimeRanges(t *testing.T) {
	data := t.TempDir()
	// Ranges come from runtimeConfig.ipRanges at ADD; STATUS has none.
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"k8s","ipam":{"type":"host-local","dataDir":%q,"ranges":[]}}`, data)
	mustInvoke(t, "STATUS", "", "", "", "", conf)
	if _, err := os.Stat(filepath.Join(data, "k8s", "lock")); err != nil {
		t.Errorf("STATUS did not prove the directory writable: %v", err)
	}
	// A range that is declared but invalid is still an error.
	if _, err := invoke("STATUS", "", "", "", "", confFor(data, `[[{"subnet":"10.0.0.0/33"}]]`)); err == nil || err.Code != 7 {
		t.Errorf("STATUS with an invalid range = %v, want code 7", err)
	}
}

func TestStatusUnwritable(t *testing.T) {
	base := t.TempDir()
	os.WriteFile(filepath.Join(base, "file"), nil, 0o600)
	_, err := invoke("STATUS", "", "", "", "", confFor(filepath.Join(base, "file", "sub"), `[[{"subnet":"10.0.0.0/24"}]]`))
	if err == nil || err.Code != pluginmain.CodeNotAvailable || !strings.Contains(err.Msg, "cannot be created") {
		t.Errorf("STATUS with an impossible dataDir = %v", err)
	}
}

func TestConcurrentAddDel(t *testing.T) {
	ns := nstest.New(t)
	data := t.TempDir()
	dir := filepath.Join(data, "net")
	conf := confFor(data, `[[{"subnet":"10.10.0.0/24"}]]`)
	const n = 64
	ips := make([]string, n)
	errs := make([]*types.Error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := invoke("ADD", fmt.Sprintf("ctr-%d", i), "eth0", ns.Path(), "", conf)
			if err != nil {
				errs[i] = err
				return
			}
			var r struct {
				IPs []struct{ Address string } `json:"ips"`
			}
			json.Unmarshal(out, &r)
			ips[i] = r.IPs[0].Address
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("ADD %d: %v", i, errs[i])
		}
		if j, dup := seen[ips[i]]; dup {
			t.Errorf("ADD %d and %d both got %s", i, j, ips[i])
		}
		seen[ips[i]] = i
	}
	files := reservationFiles(t, dir)
	if len(files) != n {
		t.Errorf("%d reservation files, want %d", len(files), n)
	}
	for i := range n {
		ip := strings.TrimSuffix(ips[i], "/24")
		if want := fmt.Sprintf("ctr-%d\r\neth0", i); files[ip] != want {
			t.Errorf("%s holds %q, want %q", ip, files[ip], want)
		}
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := invoke("DEL", fmt.Sprintf("ctr-%d", i), "eth0", "", "", conf); err != nil {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("DEL %d: %v", i, errs[i])
		}
	}
	if files := reservationFiles(t, dir); len(files) != 0 {
		t.Errorf("after %d DELs %d reservations remain: %v", n, len(files), files)
	}
	if ok, leases := storeState(t, dir); !ok || len(leases) != 0 {
		t.Errorf("index after concurrent DELs: trusted=%v leases=%d", ok, len(leases))
	}
}
