package linen

// Verb tests against a recording fake delegate registered as "bridge":
// what the plugin hands to the delegate, what it saves and removes, and
// the error codes. The fake touches no namespace; ADD and CHECK still need
// a real CNI_NETNS (Invoke opens it), hence root.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/netns"
	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
)

type fakeCall struct {
	Cmd, ContainerID, IfName string
	Conf                     map[string]any
}

// fakeDelegate records every call; fail makes a verb fail.
type fakeDelegate struct {
	mu    sync.Mutex
	calls []fakeCall
	fail  map[string]error
}

func (f *fakeDelegate) record(cmd string, a *pluginmain.Args) error {
	var m map[string]any
	if err := json.Unmarshal(a.StdinData, &m); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{cmd, a.ContainerID, a.IfName, m})
	return f.fail[cmd]
}

func (f *fakeDelegate) take() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeDelegate) plugin(name string) *pluginmain.Plugin {
	verb := func(cmd string) func(context.Context, *pluginmain.Env, *pluginmain.Args) error {
		return func(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) error { return f.record(cmd, a) }
	}
	return &pluginmain.Plugin{
		Name: name,
		Add: func(_ context.Context, _ *pluginmain.Env, a *pluginmain.Args) (types.Result, error) {
			if err := f.record("ADD", a); err != nil {
				return nil, err
			}
			idx := 0
			return &current.Result{CNIVersion: current.ImplementedSpecVersion,
				Interfaces: []*current.Interface{{Name: a.IfName, Sandbox: a.Netns}},
				IPs: []*current.IPConfig{{Interface: &idx, Address: net.IPNet{IP: net.IP{10, 244, 7, 2}, Mask: net.CIDRMask(24, 32)},
					Gateway: net.IP{10, 244, 7, 1}}}}, nil
		},
		Del: verb("DEL"), Check: verb("CHECK"), GC: verb("GC"), Status: verb("STATUS"),
	}
}

// rig is one test's plugin environment: a CNI_PATH with stand-in files for
// the delegates, a subnet.env, a dataDir, a log.
type rig struct {
	t          *testing.T
	path       string
	subnetFile string
	dataDir    string
	fake       *fakeDelegate
	env        *pluginmain.Env
	log        *bytes.Buffer
	pod        *netns.NS
}

func newRig(t *testing.T, needNS bool) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{t: t, path: filepath.Join(dir, "bin"), subnetFile: filepath.Join(dir, "run", "subnet.env"),
		dataDir: filepath.Join(dir, "data"), fake: &fakeDelegate{fail: map[string]error{}}, log: &bytes.Buffer{}}
	os.MkdirAll(r.path, 0o755)
	os.MkdirAll(filepath.Dir(r.subnetFile), 0o755)
	for _, n := range []string{"bridge", "ptp"} {
		if err := os.WriteFile(filepath.Join(r.path, n), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.env = &pluginmain.Env{
		Stderr:    r.log,
		Log:       slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Registry:  pluginmain.NewRegistry(r.fake.plugin("bridge"), r.fake.plugin("ptp")),
		InProcess: func(string, string) bool { return true },
	}
	if needNS {
		nstest.RequireRoot(t)
		r.pod = nstest.New(t)
	}
	return r
}

func (r *rig) writeEnv(s string) {
	r.t.Helper()
	if err := os.WriteFile(r.subnetFile, []byte(s), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) conf(version, extra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"pods","type":"flannel","subnetFile":%q,"dataDir":%q,"delegate":{"hairpinMode":true}%s}`,
		version, r.subnetFile, r.dataDir, extra))
}

func (r *rig) run(cmd, id, ifName string, conf []byte) ([]byte, *types.Error) {
	a := &pluginmain.Args{Command: cmd, ContainerID: id, IfName: ifName, Path: r.path, StdinData: conf}
	if (cmd == "ADD" || cmd == "CHECK") && r.pod != nil {
		a.Netns = r.pod.Path()
	}
	out, _, err := pluginmain.Invoke(context.Background(), r.env, Plugin(), a)
	return out, err
}

func (r *rig) must(cmd, id, ifName string, conf []byte) []byte {
	r.t.Helper()
	out, err := r.run(cmd, id, ifName, conf)
	if err != nil {
		r.t.Fatalf("%s %s: %v (code %d)", cmd, id, err, err.Code)
	}
	return out
}

func (r *rig) saved(id string) *saved {
	r.t.Helper()
	s, err := load(r.dataDir, id)
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

func ranges(conf map[string]any) string {
	b, _ := json.Marshal(conf["ipam"].(map[string]any)["ranges"])
	return string(b)
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// ADD saves exactly what it hands the delegate; DEL replays the saved
// configuration even after subnet.env moved, then removes it; a repeated
// DEL builds the configuration from subnet.env; without subnet.env either
// DEL succeeds with a warning and calls nobody.
func TestAddSaveDelReplay(t *testing.T) {
	r := newRig(t, true)
	r.writeEnv(envV4)
	out := r.must("ADD", "c1", "eth0", r.conf("1.0.0", ""))
	if !strings.Contains(string(out), `"10.244.7.2/24"`) {
		t.Errorf("result is not the delegate's: %s", out)
	}
	calls := r.fake.take()
	if len(calls) != 1 || calls[0].Cmd != "ADD" || calls[0].ContainerID != "c1" || calls[0].IfName != "eth0" {
		t.Fatalf("calls %+v", calls)
	}
	s := r.saved("c1")
	if s == nil || s.ifName != "eth0" {
		t.Fatalf("saved %+v", s)
	}
	var savedConf map[string]any
	_ = json.Unmarshal(s.replay("", nil), &savedConf)
	if diff := cmp.Diff(calls[0].Conf, savedConf); diff != "" {
		t.Errorf("saved configuration is not what the delegate got (-delegate +saved):\n%s", diff)
	}

	// The node's subnet moves: DEL still uses the pod's configuration.
	r.writeEnv(strings.ReplaceAll(envV4, "10.244.7.1", "10.244.9.1"))
	prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.7.2/24","gateway":"10.244.7.1"}]}`
	r.must("DEL", "c1", "eth0", r.conf("1.0.0", prev))
	calls = r.fake.take()
	if len(calls) != 1 || calls[0].Cmd != "DEL" {
		t.Fatalf("calls %+v", calls)
	}
	if got := ranges(calls[0].Conf); got != `[[{"subnet":"10.244.7.0/24"}]]` {
		t.Errorf("DEL ranges %s, want the saved ones", got)
	}
	if calls[0].Conf["prevResult"] == nil {
		t.Error("DEL without the request's prevResult")
	}
	if s := r.saved("c1"); s != nil {
		t.Error("saved configuration left after DEL")
	}

	// Again: from subnet.env.
	r.must("DEL", "c1", "eth0", r.conf("1.0.0", ""))
	calls = r.fake.take()
	if len(calls) != 1 || ranges(calls[0].Conf) != `[[{"subnet":"10.244.9.0/24"}]]` {
		t.Errorf("repeated DEL calls %+v", calls)
	}

	// Nothing saved, no subnet.env: success, a warning, no delegate call.
	os.Remove(r.subnetFile)
	r.must("DEL", "c1", "eth0", r.conf("1.0.0", ""))
	if calls := r.fake.take(); len(calls) != 0 {
		t.Errorf("calls %+v", calls)
	}
	if !strings.Contains(r.log.String(), "nothing to release") {
		t.Errorf("no warning on stderr: %q", r.log.String())
	}
}

// The saved configuration serves DEL when subnet.env is gone; a failing
// delegate DEL keeps it for the next attempt.
func TestDelWithoutSubnetEnv(t *testing.T) {
	r := newRig(t, true)
	r.writeEnv(envDual)
	r.must("ADD", "c1", "eth0", r.conf("0.4.0", ""))
	r.fake.take()
	os.Remove(r.subnetFile)
	r.fake.fail["DEL"] = errors.New("busy")
	if _, err := r.run("DEL", "c1", "eth0", r.conf("0.4.0", "")); err == nil || !strings.Contains(err.Msg, "busy") {
		t.Fatalf("DEL error %v, want the delegate's", err)
	}
	if r.saved("c1") == nil {
		t.Fatal("a failed DEL removed the saved configuration")
	}
	delete(r.fake.fail, "DEL")
	r.fake.take()
	r.must("DEL", "c1", "eth0", r.conf("0.4.0", ""))
	calls := r.fake.take()
	if len(calls) != 1 || ranges(calls[0].Conf) != `[[{"subnet":"10.244.7.0/24"}],[{"subnet":"2001:db8:244:7::/64"}]]` {
		t.Fatalf("calls %+v", calls)
	}
	if r.saved("c1") != nil {
		t.Error("saved configuration left")
	}
}

// A saved file that is not a configuration is ignored (DEL falls back to
// subnet.env) and removed once DEL succeeds; a file of another attachment
// of the container is left alone.
func TestDelBrokenOrForeignSaved(t *testing.T) {
	r := newRig(t, false)
	r.writeEnv(envV4)
	os.MkdirAll(r.dataDir, 0o700)
	os.WriteFile(filepath.Join(r.dataDir, "c1"), []byte("garbage"), 0o600)
	r.must("DEL", "c1", "eth0", r.conf("1.1.0", ""))
	if calls := r.fake.take(); len(calls) != 1 {
		t.Errorf("calls %+v", calls)
	}
	if _, err := os.Stat(filepath.Join(r.dataDir, "c1")); err == nil {
		t.Error("broken file left")
	}
	if err := save(r.dataDir, "c2", "net1", []byte(`{"type":"ptp","name":"pods"}`)); err != nil {
		t.Fatal(err)
	}
	r.must("DEL", "c2", "eth0", r.conf("1.1.0", ""))
	calls := r.fake.take()
	if len(calls) != 1 || calls[0].Conf["type"] != "bridge" {
		t.Errorf("calls %+v: want a bridge DEL from subnet.env", calls)
	}
	if r.saved("c2") == nil {
		t.Error("another attachment's file was removed")
	}
}

// DEL with an invalid configuration: the saved configuration still
// serves; without one there is nothing to release.
func TestDelInvalidConfig(t *testing.T) {
	r := newRig(t, false)
	r.writeEnv(envV4)
	bad := r.conf("1.1.0", `,"ipam":{"subnet":"10.0.0.0/8"}`)
	r.must("DEL", "c1", "eth0", bad)
	if calls := r.fake.take(); len(calls) != 0 {
		t.Errorf("calls %+v", calls)
	}
	if err := save(r.dataDir, "c1", "eth0", []byte(`{"type":"bridge","name":"pods"}`)); err != nil {
		t.Fatal(err)
	}
	r.must("DEL", "c1", "eth0", bad)
	if calls := r.fake.take(); len(calls) != 1 {
		t.Errorf("calls %+v", calls)
	}
	if r.saved("c1") != nil {
		t.Error("saved configuration left")
	}
}

func TestAddErrors(t *testing.T) {
	r := newRig(t, true)
	check := func(name string, err *types.Error, code uint, want string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", name)
			return
		}
		if err.Code != code || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: code %d %q, want code %d with %q", name, err.Code, err.Error(), code, want)
		}
	}
	_, err := r.run("ADD", "c1", "eth0", r.conf("1.1.0", ""))
	check("no subnet.env", err, 11, "subnet.env not found: is linen daemon (or flanneld) running?; open "+r.subnetFile)

	r.writeEnv("FLANNEL_NETWORK=10.244.0.0/16\n")
	_, err = r.run("ADD", "c1", "eth0", r.conf("1.1.0", ""))
	check("invalid subnet.env", err, 7, "FLANNEL_MTU: missing")

	r.writeEnv(envV4)
	c := []byte(strings.Replace(string(r.conf("1.1.0", "")), `"delegate":{`, `"delegate":{"type":"macvlan",`, 1))
	_, err = r.run("ADD", "c1", "eth0", c)
	check("delegate not in CNI_PATH", err, 7, `delegate.type: plugin "macvlan" not found in CNI_PATH`)

	_, err = r.run("ADD", "c1", "eth0", r.conf("1.1.0", `,"delegate":{"name":"x"}`))
	check("invalid configuration", err, 7, "delegate.name")

	// The delegate fails: nothing saved is left.
	r.fake.fail["ADD"] = pluginmain.Errorf(pluginmain.CodeInvalidConfig, "no room")
	_, err = r.run("ADD", "c1", "eth0", r.conf("1.1.0", ""))
	check("delegate fails", err, 7, "no room")
	if r.saved("c1") != nil {
		t.Error("a failed ADD left its saved configuration")
	}
	delete(r.fake.fail, "ADD")

	// One attachment per container.
	r.must("ADD", "c1", "eth0", r.conf("1.1.0", ""))
	_, err = r.run("ADD", "c1", "net1", r.conf("1.1.0", ""))
	check("second attachment", err, 4, `already has an attachment of network "pods" on "eth0"`)
	if s := r.saved("c1"); s == nil || s.ifName != "eth0" {
		t.Errorf("first attachment's file changed: %+v", s)
	}
}

// Every configuration version works, with the delegate's result converted
// to it.
func TestVersions(t *testing.T) {
	r := newRig(t, true)
	r.writeEnv(envV4)
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		out := r.must("ADD", "v"+strings.ReplaceAll(v, ".", ""), "eth0", r.conf(v, ""))
		var head struct {
			CNIVersion string `json:"cniVersion"`
		}
		if err := json.Unmarshal(out, &head); err != nil || head.CNIVersion != v {
			t.Errorf("%s: result %s", v, out)
		}
		r.must("DEL", "v"+strings.ReplaceAll(v, ".", ""), "eth0", r.conf(v, ""))
	}
}

func TestCheck(t *testing.T) {
	r := newRig(t, true)
	r.writeEnv(envV4)
	r.must("ADD", "c1", "eth0", r.conf("0.4.0", ""))
	r.fake.take()
	// The network moved to 1.0.0 since: CHECK carries the new version.
	prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.7.2/24"}]}`
	r.must("CHECK", "c1", "eth0", r.conf("1.0.0", prev))
	calls := r.fake.take()
	if len(calls) != 1 || calls[0].Cmd != "CHECK" || calls[0].Conf["cniVersion"] != "1.0.0" || calls[0].Conf["prevResult"] == nil {
		t.Fatalf("calls %+v", calls)
	}
	if _, ok := calls[0].Conf[ifNameKey]; ok {
		t.Error("the interface key reached the delegate")
	}

	r.fake.fail["CHECK"] = errors.New("veth gone")
	if _, err := r.run("CHECK", "c1", "eth0", r.conf("1.0.0", prev)); err == nil || !strings.Contains(err.Msg, "veth gone") {
		t.Errorf("CHECK error %v, want the delegate's", err)
	}
	delete(r.fake.fail, "CHECK")

	r.writeEnv(strings.ReplaceAll(envV4, "10.244.7.1", "10.244.9.1"))
	if _, err := r.run("CHECK", "c1", "eth0", r.conf("1.0.0", prev)); err == nil || !strings.Contains(err.Msg, "recreate the pod") {
		t.Errorf("CHECK after the subnet moved: %v", err)
	}
	// subnet.env gone: the pod's configuration is still checked.
	os.Remove(r.subnetFile)
	r.must("CHECK", "c1", "eth0", r.conf("1.0.0", prev))

	if _, err := r.run("CHECK", "c2", "eth0", r.conf("1.0.0", prev)); err == nil || err.Code != 3 {
		t.Errorf("CHECK of an unknown container: %v", err)
	}
	if _, err := r.run("CHECK", "c1", "net1", r.conf("1.0.0", prev)); err == nil || err.Code != 3 {
		t.Errorf("CHECK of another interface: %v", err)
	}
}

// GC forwards the valid attachments to the delegate and removes the saved
// configurations of the others: by container and interface for linen's
// files, by container for flannel's.
func TestGC(t *testing.T) {
	r := newRig(t, false)
	r.writeEnv(envV4)
	bridgeConf := []byte(`{"cniVersion":"1.1.0","name":"pods","type":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.7.0/24"}]]}}`)
	for id, ifName := range map[string]string{"keep1": "eth0", "stale2": "eth0", "wrongif3": "eth1"} {
		if err := save(r.dataDir, id, ifName, bridgeConf); err != nil {
			t.Fatal(err)
		}
	}
	flannelFile := []byte(`{"cniVersion":"0.3.1","name":"cbr0","type":"bridge","ipam":{"type":"host-local"}}`)
	os.WriteFile(filepath.Join(r.dataDir, "flannelkeep4"), flannelFile, 0o600)
	os.WriteFile(filepath.Join(r.dataDir, "flannelstale5"), flannelFile, 0o600)
	os.WriteFile(filepath.Join(r.dataDir, "junk6"), []byte("x"), 0o600)
	valid := `,"cni.dev/valid-attachments":[{"containerID":"keep1","ifname":"eth0"},{"containerID":"wrongif3","ifname":"eth0"},{"containerID":"flannelkeep4","ifname":"eth0"}]`

	r.fake.fail["GC"] = errors.New("later")
	if _, err := r.run("GC", "", "", r.conf("1.1.0", valid)); err == nil {
		t.Fatal("GC hid the delegate's error")
	}
	if ids, _ := savedIDs(r.dataDir); len(ids) != 6 {
		t.Errorf("a failed GC removed files: %v", ids)
	}
	delete(r.fake.fail, "GC")
	r.fake.take()

	r.must("GC", "", "", r.conf("1.1.0", valid))
	calls := r.fake.take()
	if len(calls) != 1 || calls[0].Cmd != "GC" {
		t.Fatalf("calls %+v", calls)
	}
	if got := calls[0].Conf["cni.dev/valid-attachments"]; got == nil || len(got.([]any)) != 3 {
		t.Errorf("GC delegate configuration lacks the valid attachments: %v", calls[0].Conf)
	}
	if calls[0].Conf["name"] != "pods" || ranges(calls[0].Conf) != `[[{"subnet":"10.244.7.0/24"}]]` {
		t.Errorf("GC delegate configuration %v", calls[0].Conf)
	}
	ids, _ := savedIDs(r.dataDir)
	if diff := cmp.Diff([]string{"flannelkeep4", "keep1"}, ids); diff != "" {
		t.Errorf("files after GC (-want +got):\n%s", diff)
	}

	// subnet.env gone: a saved configuration stands in.
	os.Remove(r.subnetFile)
	r.must("GC", "", "", r.conf("1.1.0", `,"cni.dev/valid-attachments":[]`))
	calls = r.fake.take()
	if len(calls) != 1 || calls[0].Conf["type"] != "bridge" || calls[0].Conf["cniVersion"] != "1.1.0" {
		t.Errorf("calls %+v", calls)
	}
	if ids, _ := savedIDs(r.dataDir); len(ids) != 0 {
		t.Errorf("files left: %v", ids)
	}
	// Nothing at all: GC succeeds without the delegate.
	r.must("GC", "", "", r.conf("1.1.0", `,"cni.dev/valid-attachments":[]`))
	if calls := r.fake.take(); len(calls) != 0 {
		t.Errorf("calls %+v", calls)
	}
}

func TestStatus(t *testing.T) {
	r := newRig(t, false)
	_, err := r.run("STATUS", "", "", r.conf("1.1.0", ""))
	if err == nil || err.Code != 50 || err.Msg != "subnet.env not found: is linen daemon (or flanneld) running?" || !strings.Contains(err.Details, r.subnetFile) {
		t.Errorf("STATUS without subnet.env: %+v", err)
	}
	r.writeEnv("FLANNEL_MTU=x\n")
	if _, err := r.run("STATUS", "", "", r.conf("1.1.0", "")); err == nil || err.Code != 50 || !strings.Contains(err.Msg, "FLANNEL_MTU") {
		t.Errorf("STATUS with a broken subnet.env: %+v", err)
	}
	r.writeEnv(envV4)
	r.must("STATUS", "", "", r.conf("1.1.0", ""))
	if calls := r.fake.take(); len(calls) != 1 || calls[0].Cmd != "STATUS" || calls[0].Conf["type"] != "bridge" {
		t.Errorf("calls %+v", calls)
	}
	r.fake.fail["STATUS"] = pluginmain.Errorf(pluginmain.CodeLimitedConnectivity, "ipam full")
	if _, err := r.run("STATUS", "", "", r.conf("1.1.0", "")); err == nil || err.Code != 51 {
		t.Errorf("STATUS hid the delegate's answer: %v", err)
	}
}
