package linen

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "flannel")
	conf := []byte(`{"cniVersion":"0.3.1","name":"cbr0","type":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.7.0/24"}],[{"subnet":"2001:db8::/64"}]]}}`)
	if err := save(dir, "c1", "eth0", conf); err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "c1"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	s, err := load(dir, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if s.typ != "bridge" || s.ifName != "eth0" {
		t.Errorf("type %q ifName %q", s.typ, s.ifName)
	}
	if _, ok := s.conf[ifNameKey]; ok {
		t.Error("the interface key reaches the delegate")
	}
	// Replayed as it was saved, with the request's version and prevResult.
	var got, want map[string]any
	_ = json.Unmarshal(s.replay("", nil), &got)
	_ = json.Unmarshal(conf, &want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replay (-want +got):\n%s", diff)
	}
	_ = json.Unmarshal(s.replay("1.0.0", json.RawMessage(`{"cniVersion":"1.0.0"}`)), &got)
	if got["cniVersion"] != "1.0.0" || got["prevResult"] == nil {
		t.Errorf("replay for DEL: %v", got)
	}
	if diff := cmp.Diff([]string{"10.244.7.0/24", "2001:db8::/64"}, prefixStrings(s.subnets())); diff != "" {
		t.Error(diff)
	}
	ids, err := savedIDs(dir)
	if err != nil || len(ids) != 1 || ids[0] != "c1" {
		t.Errorf("savedIDs = %v, %v", ids, err)
	}
	if err := remove(dir, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := remove(dir, "c1"); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if s, err := load(dir, "c1"); s != nil || err != nil {
		t.Errorf("after remove: %v %v", s, err)
	}
}

// A file written by flannel's plugin (the bare delegate configuration)
// loads; a file that is not a configuration is an error.
func TestLoadFlannelFileAndGarbage(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "flan"), []byte(`{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.7.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`), 0o600)
	os.WriteFile(filepath.Join(dir, "junk"), []byte(`not json`), 0o600)
	os.WriteFile(filepath.Join(dir, "notype"), []byte(`{"name":"x"}`), 0o600)
	os.WriteFile(filepath.Join(dir, ".c1.tmp123"), []byte(`{}`), 0o600)
	s, err := load(dir, "flan")
	if err != nil {
		t.Fatal(err)
	}
	if s.typ != "bridge" || s.ifName != "" {
		t.Errorf("type %q ifName %q", s.typ, s.ifName)
	}
	for _, id := range []string{"junk", "notype"} {
		if _, err := load(dir, id); err == nil {
			t.Errorf("%s: no error", id)
		}
	}
	ids, _ := savedIDs(dir)
	if diff := cmp.Diff([]string{"flan", "junk", "notype"}, ids); diff != "" {
		t.Errorf("savedIDs skips temporary files (-want +got):\n%s", diff)
	}
	if ids, err := savedIDs(filepath.Join(dir, "none")); ids != nil || err != nil {
		t.Errorf("missing dataDir: %v %v", ids, err)
	}
}
