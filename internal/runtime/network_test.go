package runtime

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	goodList = `{"cniVersion":"1.0.0","name":"%s","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}`
	goodConf = `{"cniVersion":"0.4.0","name":"%s","type":"bridge","bridge":"cni0"}`
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(content, "%s", strings.TrimSuffix(filepath.Base(name), filepath.Ext(name)))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadNetwork(t *testing.T) {
	tests := []struct {
		name        string
		files       map[string]string
		wantFile    string // base name; "" means an ErrNoNetwork error
		wantName    string
		wantVersion string
		wantPlugins []string
		wantSkipped []string
	}{
		{
			name:        "sorted by file name",
			files:       map[string]string{"20-b.conflist": goodList, "10-a.conflist": goodList, "99-c.conf": goodConf},
			wantFile:    "10-a.conflist",
			wantName:    "10-a",
			wantVersion: "1.0.0",
			wantPlugins: []string{"bridge", "portmap"},
		},
		{
			name:        "sort is by the whole name, not numeric",
			files:       map[string]string{"9-a.conflist": goodList, "10-b.conflist": goodList},
			wantFile:    "10-b.conflist",
			wantName:    "10-b",
			wantVersion: "1.0.0",
			wantPlugins: []string{"bridge", "portmap"},
		},
		{
			name: "invalid files skipped in order",
			files: map[string]string{
				"00-json.conflist":      `{"cniVersion":`,
				"01-noplugins.conflist": `{"cniVersion":"1.0.0","name":"x","plugins":[]}`,
				"02-badname.conflist":   `{"cniVersion":"1.0.0","name":"bad name","plugins":[{"type":"bridge"}]}`,
				"03-newer.conflist":     `{"cniVersion":"9.0.0","name":"x","plugins":[{"type":"bridge"}]}`,
				"04-noversion.conflist": `{"name":"x","plugins":[{"type":"bridge"}]}`,
				"05-list-in.conf":       goodList,
				"06-notype.conflist":    `{"cniVersion":"1.0.0","name":"x","plugins":[{"bridge":"x"}]}`,
				"07-badtype.conflist":   `{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"../bridge"}]}`,
				"08-noname.conf":        `{"cniVersion":"1.0.0","type":"bridge"}`,
				"10-good.conflist":      goodList,
			},
			wantFile:    "10-good.conflist",
			wantName:    "10-good",
			wantVersion: "1.0.0",
			wantPlugins: []string{"bridge", "portmap"},
			wantSkipped: []string{"00-json.conflist", "01-noplugins.conflist", "02-badname.conflist", "03-newer.conflist",
				"04-noversion.conflist", "05-list-in.conf", "06-notype.conflist", "07-badtype.conflist", "08-noname.conf"},
		},
		{
			name:        "single plugin conf upconverted",
			files:       map[string]string{"10-single.conf": goodConf},
			wantFile:    "10-single.conf",
			wantName:    "10-single",
			wantVersion: "0.4.0",
			wantPlugins: []string{"bridge"},
		},
		{
			name:        "json is a single plugin conf",
			files:       map[string]string{"10-single.json": goodConf},
			wantFile:    "10-single.json",
			wantName:    "10-single",
			wantVersion: "0.4.0",
			wantPlugins: []string{"bridge"},
		},
		{
			name:        "other extensions and subdirectories ignored",
			files:       map[string]string{"00-a.txt": goodList, "00-b.conflist.bak": goodList, "sub/00-c.conflist": goodList, "50-d.conflist": goodList},
			wantFile:    "50-d.conflist",
			wantName:    "50-d",
			wantVersion: "1.0.0",
			wantPlugins: []string{"bridge", "portmap"},
		},
		{
			name:        "cniVersions picks the highest supported",
			files:       map[string]string{"10-v.conflist": `{"cniVersion":"0.4.0","cniVersions":["1.0.0","9.9.9"],"name":"v","plugins":[{"type":"bridge"}]}`},
			wantFile:    "10-v.conflist",
			wantName:    "v",
			wantVersion: "1.0.0",
			wantPlugins: []string{"bridge"},
		},
		{
			name: "drop-in plugin files appended",
			files: map[string]string{
				"10-d.conflist":    `{"cniVersion":"1.0.0","name":"d","plugins":[{"type":"bridge"}]}`,
				"d/50-extra.conf":  `{"type":"bandwidth","capabilities":{"bandwidth":true}}`,
				"d/40-extra2.conf": `{"type":"tuning"}`,
			},
			wantFile:    "10-d.conflist",
			wantName:    "d",
			wantVersion: "1.0.0",
			wantPlugins: []string{"bridge", "tuning", "bandwidth"},
		},
		{
			name:  "empty directory",
			files: map[string]string{},
		},
		{
			name:        "only invalid files",
			files:       map[string]string{"10-x.conflist": `{}`, "20-y.conf": `nope`},
			wantSkipped: []string{"10-x.conflist", "20-y.conf"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			n, err := LoadNetwork(dir)
			if tc.wantFile == "" {
				if !errors.Is(err, ErrNoNetwork) {
					t.Fatalf("LoadNetwork = %v, %v; want ErrNoNetwork", n, err)
				}
				for _, s := range tc.wantSkipped {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name %s", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadNetwork: %v", err)
			}
			if got := filepath.Base(n.File); got != tc.wantFile {
				t.Errorf("File = %s, want %s", got, tc.wantFile)
			}
			if n.Name != tc.wantName || n.CNIVersion != tc.wantVersion {
				t.Errorf("Name, CNIVersion = %q, %q; want %q, %q", n.Name, n.CNIVersion, tc.wantName, tc.wantVersion)
			}
			if diff := cmp.Diff(tc.wantPlugins, n.Plugins()); diff != "" {
				t.Errorf("plugins (-want +got):\n%s", diff)
			}
			var skipped []string
			for _, s := range n.Skipped {
				if s.Err == nil {
					t.Errorf("skipped %s without an error", s.File)
				}
				skipped = append(skipped, filepath.Base(s.File))
			}
			if diff := cmp.Diff(tc.wantSkipped, skipped); diff != "" {
				t.Errorf("skipped (-want +got):\n%s", diff)
			}
			// The list bytes (what libcni caches and AddPod records) must
			// parse back to the same chain.
			back, err := NetworkFromBytes(n.List.Bytes)
			if err != nil {
				t.Fatalf("NetworkFromBytes(List.Bytes): %v", err)
			}
			if diff := cmp.Diff(n.Plugins(), back.Plugins()); diff != "" {
				t.Errorf("plugins after a round trip through List.Bytes (-want +got):\n%s", diff)
			}
			if back.Name != n.Name || back.CNIVersion != n.CNIVersion {
				t.Errorf("round trip: %q %q, want %q %q", back.Name, back.CNIVersion, n.Name, n.CNIVersion)
			}
		})
	}
}

func TestUpconvertedConfKeepsPluginKeys(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"10-single.conf": goodConf})
	n, err := LoadNetwork(dir)
	if err != nil {
		t.Fatal(err)
	}
	var plugin map[string]any
	if err := json.Unmarshal(n.List.Plugins[0].Bytes, &plugin); err != nil {
		t.Fatal(err)
	}
	if plugin["bridge"] != "cni0" {
		t.Errorf("plugin config lost its keys: %v", plugin)
	}
}

func TestRuntimeNetworkCache(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"20-b.conflist": goodList})
	r := &Runtime{NetDir: dir, StateDir: t.TempDir(), CacheDir: t.TempDir()}
	n1, err := r.Network()
	if err != nil {
		t.Fatal(err)
	}
	n2, err := r.Network()
	if err != nil {
		t.Fatal(err)
	}
	if n1 != n2 {
		t.Errorf("unchanged directory: Network re-read the configuration")
	}

	// An atomic rename of a new file that sorts first changes the default.
	tmp := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(tmp, []byte(strings.ReplaceAll(goodList, "%s", "first")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "10-a.conflist")); err != nil {
		t.Fatal(err)
	}
	n3, err := r.Network()
	if err != nil {
		t.Fatal(err)
	}
	if n3.Name != "first" {
		t.Errorf("after adding 10-a.conflist: network %q, want first", n3.Name)
	}

	// Removing every file is noticed too.
	for _, f := range []string{"10-a.conflist", "20-b.conflist"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Network(); !errors.Is(err, ErrNoNetwork) {
		t.Errorf("empty directory: %v, want ErrNoNetwork", err)
	}
}
