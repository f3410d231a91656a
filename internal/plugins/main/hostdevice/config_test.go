package hostdevice

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/plugins/plugintest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-hostdev-") }

func TestReadmeExamples(t *testing.T) {
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		c, err := parseConfig(ex, "", true)
		if err != nil {
			t.Errorf("example %d: %v\n%s", i, err, ex)
			continue
		}
		if c.Selector.Kind == 0 {
			t.Errorf("example %d selects nothing", i)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	base := `{"cniVersion":"1.0.0","name":"n","type":"host-device"`
	cases := []struct {
		name, conf, args string
		code             uint
		want             []string
	}{
		{"no selector", base + `}`, "", 7, []string{"device: no device selected", "hwaddr", "kernelpath", "pciBusID", "runtimeConfig.deviceID"}},
		{"two selectors", base + `,"device":"eth1","pciBusID":"0000:00:05.0"}`, "", 7, []string{"device:", "not device and pciBusID"}},
		{"selector and deviceID", base + `,"hwaddr":"02:00:00:00:00:01","runtimeConfig":{"deviceID":"0000:00:05.0"}}`, "", 7, []string{"hwaddr and runtimeConfig.deviceID"}},
		{"bad device name", base + `,"device":"a/b"}`, "", 7, []string{"device:", "'/'"}},
		{"bad hwaddr", base + `,"hwaddr":"xx"}`, "", 7, []string{"hwaddr:", "not a hardware address"}},
		{"zero hwaddr", base + `,"hwaddr":"00:00:00:00:00:00"}`, "", 7, []string{"hwaddr:", "all-zero"}},
		{"relative kernelpath", base + `,"kernelpath":"devices/pci0000:00"}`, "", 7, []string{"kernelpath:"}},
		{"kernelpath outside sysfs", base + `,"kernelpath":"/etc/passwd"}`, "", 7, []string{"kernelpath:"}},
		{"kernelpath escaping", base + `,"kernelpath":"/sys/../etc"}`, "", 7, []string{"kernelpath:"}},
		{"bad pci", base + `,"pciBusID":"0000:00:05"}`, "", 7, []string{"pciBusID:", "not a PCI address"}},
		{"pci device out of range", base + `,"pciBusID":"0000:00:20.0"}`, "", 7, []string{"pciBusID:"}},
		{"bad deviceID", base + `,"runtimeConfig":{"deviceID":"a b"}}`, "", 7, []string{"runtimeConfig.deviceID:"}},
		{"relative dataDir", base + `,"device":"eth1","dataDir":"state"}`, "", 7, []string{"dataDir:"}},
		{"every problem at once", base + `,"pciBusID":"x","dataDir":"y"}`, "", 7, []string{"pciBusID:", "dataDir:"}},
		{"device of the wrong type", base + `,"device":5}`, "", 6, []string{"device"}},
		{"broken CNI_ARGS", base + `,"device":"eth1"}`, "x", 4, []string{"CNI_ARGS"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.conf), tc.args, true)
			if err == nil {
				t.Fatal("no error")
			}
			te := pluginmain.ToCNI(err)
			if te.Code != tc.code {
				t.Errorf("code %d, want %d (%v)", te.Code, tc.code, te)
			}
			for _, w := range tc.want {
				if !strings.Contains(te.Msg, w) {
					t.Errorf("%q lacks %q", te.Msg, w)
				}
			}
		})
	}
	// DEL, CHECK, STATUS need no selector.
	if _, err := parseConfig([]byte(base+`}`), "", false); err != nil {
		t.Errorf("without selector: %v", err)
	}
}

func TestSelectors(t *testing.T) {
	base := `{"cniVersion":"1.0.0","name":"n","type":"host-device"`
	cases := []struct {
		conf  string
		kind  SelectorKind
		value string
	}{
		{`,"device":"ens5"}`, ByName, "ens5"},
		{`,"hwaddr":"52:54:00:AB:cd:01"}`, ByMAC, "52:54:00:AB:cd:01"},
		{`,"kernelpath":"/sys/devices/pci0000:00/0000:00:05.0"}`, ByKernelPath, "/sys/devices/pci0000:00/0000:00:05.0"},
		{`,"pciBusID":"3B:02.1"}`, ByPCI, "0000:3b:02.1"},
		{`,"runtimeConfig":{"deviceID":"0000:3b:02.7"}}`, ByPCI, "0000:3b:02.7"},
		{`,"runtimeConfig":{"deviceID":"mlx5_core.sf.4"}}`, ByAuxiliary, "mlx5_core.sf.4"},
	}
	for _, tc := range cases {
		c, err := parseConfig([]byte(base+tc.conf), "", true)
		if err != nil {
			t.Errorf("%s: %v", tc.conf, err)
			continue
		}
		if c.Selector.Kind != tc.kind || c.Selector.Value != tc.value {
			t.Errorf("%s: selector %+v", tc.conf, c.Selector)
		}
		if c.DataDir != DefaultDataDir {
			t.Errorf("dataDir %q", c.DataDir)
		}
	}
}

func TestNormalizePCI(t *testing.T) {
	for in, want := range map[string]string{
		"0000:00:05.0": "0000:00:05.0", "00:1f.7": "0000:00:1f.7", "ABCD:EF:1A.3": "abcd:ef:1a.3",
		"0000:00:05.8": "", "0000:00:20.0": "", "00:05": "", "0:00:05.0": "", "0000:00:05.0.1": "", "": "", "gggg:00:00.0": "",
	} {
		got, ok := normalizePCI(in)
		if ok != (want != "") || got != want {
			t.Errorf("normalizePCI(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// sysfs is a fake sysfs tree laid out as the kernel's is: devices below
// devices/, bus/*/devices/ and class/net/ entries as symbolic links.
type sysfs struct {
	t    *testing.T
	root string
}

func newSysfs(t *testing.T) *sysfs { return &sysfs{t: t, root: t.TempDir()} }

func (s *sysfs) mkdir(p string) string {
	s.t.Helper()
	full := filepath.Join(s.root, p)
	if err := os.MkdirAll(full, 0o755); err != nil {
		s.t.Fatal(err)
	}
	return full
}

func (s *sysfs) link(target, at string) {
	s.t.Helper()
	s.mkdir(filepath.Dir(at))
	rel, err := filepath.Rel(filepath.Join(s.root, filepath.Dir(at)), filepath.Join(s.root, target))
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.Symlink(rel, filepath.Join(s.root, at)); err != nil {
		s.t.Fatal(err)
	}
}

// device adds a device at devPath (below devices/) with the network
// interfaces nets (name -> ifindex), bound to driver ("" for none).
func (s *sysfs) device(devPath, driver string, nets map[string]int) {
	s.t.Helper()
	dir := filepath.Join("devices", devPath)
	s.mkdir(dir)
	for name, idx := range nets {
		nd := filepath.Join(dir, "net", name)
		s.mkdir(nd)
		if err := os.WriteFile(filepath.Join(s.root, nd, "ifindex"), []byte(strconv.Itoa(idx)+"\n"), 0o644); err != nil {
			s.t.Fatal(err)
		}
		s.link(dir, filepath.Join(nd, "device"))
		// class/net/<name> is the first device of that name.
		if _, err := os.Lstat(filepath.Join(s.root, "class", "net", name)); err != nil {
			s.link(nd, filepath.Join("class", "net", name))
		}
	}
	if driver != "" {
		s.mkdir(filepath.Join("bus", "pci", "drivers", driver))
		s.link(filepath.Join("bus", "pci", "drivers", driver), filepath.Join(dir, "driver"))
	}
}

func (s *sysfs) pci(addr, driver string, nets map[string]int) {
	s.t.Helper()
	s.device("pci0000:00/"+addr, driver, nets)
	s.link(filepath.Join("devices", "pci0000:00", addr), filepath.Join("bus", "pci", "devices", addr))
}

func (s *sysfs) aux(parent, name string, nets map[string]int) {
	s.t.Helper()
	s.device("pci0000:00/"+parent+"/"+name, "", nets)
	s.link(filepath.Join("devices", "pci0000:00", parent, name), filepath.Join("bus", "auxiliary", "devices", name))
}

func TestSysfsLookup(t *testing.T) {
	s := newSysfs(t)
	s.pci("0000:00:05.0", "virtio-pci", map[string]int{"ens5": 3})
	s.pci("0000:00:06.0", "mlx4_core", map[string]int{"ens6": 4, "ens6d1": 5})
	s.pci("0000:00:07.0", "vfio-pci", nil)
	s.pci("0000:00:08.0", "ixgbevf", nil)
	s.aux("0000:00:09.0", "mlx5_core.sf.2", map[string]int{"enp0s9f0s2": 9})
	cases := []struct {
		sel         Selector
		name, pci   string
		idx         int
		driver, err string
	}{
		{Selector{Kind: ByPCI, Field: "pciBusID", Value: "0000:00:05.0"}, "ens5", "0000:00:05.0", 3, "", ""},
		{Selector{Kind: ByKernelPath, Field: "kernelpath", Value: "/sys/devices/pci0000:00/0000:00:05.0"}, "ens5", "0000:00:05.0", 3, "", ""},
		{Selector{Kind: ByAuxiliary, Field: "runtimeConfig.deviceID", Value: "mlx5_core.sf.2"}, "enp0s9f0s2", "0000:00:09.0", 9, "", ""},
		{Selector{Kind: ByPCI, Field: "pciBusID", Value: "0000:00:07.0"}, "", "0000:00:07.0", 0, "vfio-pci", ""},
		{Selector{Kind: ByPCI, Field: "pciBusID", Value: "0000:00:06.0"}, "", "", 0, "", "several network interfaces (ens6, ens6d1)"},
		{Selector{Kind: ByPCI, Field: "pciBusID", Value: "0000:00:08.0"}, "", "", 0, "", "no network interface (driver ixgbevf)"},
		{Selector{Kind: ByPCI, Field: "runtimeConfig.deviceID", Value: "0000:00:0a.0"}, "", "", 0, "", "runtimeConfig.deviceID: no device"},
		{Selector{Kind: ByKernelPath, Field: "kernelpath", Value: "/sys/devices/nope"}, "", "", 0, "", "kernelpath: no device"},
	}
	for _, tc := range cases {
		d, err := lookup(s.root, tc.sel)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || pluginmain.ToCNI(err).Code != 7 {
				t.Errorf("%+v: %v, want code 7 %q", tc.sel, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", tc.sel, err)
			continue
		}
		if d.name != tc.name || d.pci != tc.pci || d.ifindex != tc.idx || d.driver != tc.driver {
			t.Errorf("%+v: %+v", tc.sel, d)
		}
	}
	if got := pciOf(s.root, "ens5", 3); got != "0000:00:05.0" {
		t.Errorf("pciOf(ens5) = %q", got)
	}
	if got := pciOf(s.root, "ens5", 7); got != "" {
		t.Errorf("pciOf with another index = %q, want none", got)
	}
	if got := driverOfPCI(s.root, "0000:00:07.0"); got != "vfio-pci" {
		t.Errorf("driver %q", got)
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st := &state{ContainerID: "c-1.x", IfName: "net1", Netns: "/run/netns/p", Name: "ens5", Alias: "uplink", MAC: "52:54:00:00:00:01", MTU: 9000, Up: true, PCI: "0000:00:05.0"}
	if err := saveState(dir, "net", st); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(statePath(dir, "net", "c-1.x", "net1"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file %v %v", fi, err)
	}
	got, err := loadState(dir, "net", "c-1.x", "net1")
	if err != nil || *got != *st {
		t.Fatalf("loaded %+v %v, want %+v", got, err, st)
	}
	if s, err := loadState(dir, "net", "c-2", "net1"); s != nil || err != nil {
		t.Errorf("missing state: %v %v", s, err)
	}
	// A record under another attachment's name is refused, not trusted.
	b, _ := os.ReadFile(statePath(dir, "net", "c-1.x", "net1"))
	if err := os.WriteFile(statePath(dir, "net", "c-9", "net1"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadState(dir, "net", "c-9", "net1"); err == nil {
		t.Error("a misplaced record was accepted")
	}
	os.WriteFile(filepath.Join(stateDir(dir, "net"), "junk:x"), []byte("{"), 0o600)
	good, bad, err := listStates(dir, "net")
	if err != nil || len(good) != 1 || len(bad) != 2 {
		t.Errorf("list: %d good %v bad, %v", len(good), bad, err)
	}
	for i := 0; i < 2; i++ {
		if err := removeState(dir, "net", "c-1.x", "net1"); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzParseConfig: arbitrary configurations never panic; what validates
// has exactly one well-formed selector.
func FuzzParseConfig(f *testing.F) {
	for _, ex := range plugintest.ReadmeExamples(f, "README.md") {
		f.Add(ex, "")
	}
	f.Add([]byte(`{"name":"n","pciBusID":"00:1f.7","dataDir":"/x"}`), "")
	f.Add([]byte(`{"name":"n","runtimeConfig":{"deviceID":"mlx5_core.sf.1"},"device":""}`), "IgnoreUnknown=1")
	f.Add([]byte(`{"name":"n","kernelpath":"/sys/./devices"}`), "")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		c, err := parseConfig(stdin, cniArgs, true)
		_, _ = parseConfig(stdin, cniArgs, false)
		_, _ = parseLenient(stdin)
		if err != nil {
			if te := pluginmain.ToCNI(err); te.Code == 0 || te.Code == pluginmain.CodeInternal {
				t.Fatalf("error without a proper code: %v", te)
			}
			return
		}
		sel := c.Selector
		switch sel.Kind {
		case ByName:
			if pluginmain.ValidateIfName(sel.Value) != "" {
				t.Fatalf("device %q", sel.Value)
			}
		case ByMAC:
			if len(sel.MAC) == 0 {
				t.Fatal("hwaddr without a MAC")
			}
		case ByKernelPath:
			if !strings.HasPrefix(sel.Value, "/sys/") || filepath.Clean(sel.Value) != sel.Value {
				t.Fatalf("kernelpath %q", sel.Value)
			}
		case ByPCI:
			if a, ok := normalizePCI(sel.Value); !ok || a != sel.Value {
				t.Fatalf("pci %q", sel.Value)
			}
		case ByAuxiliary:
			if strings.Contains(sel.Value, "/") || sel.Value == "" {
				t.Fatalf("aux %q", sel.Value)
			}
		default:
			t.Fatalf("no selector: %+v", sel)
		}
		if !filepath.IsAbs(c.DataDir) {
			t.Fatalf("dataDir %q", c.DataDir)
		}
	})
}

// FuzzDecodeState: a state file read back from disk never panics the
// decoder, and what it accepts is safe to act on.
func FuzzDecodeState(f *testing.F) {
	good, _ := json.Marshal(&state{Version: 1, ContainerID: "c", IfName: "eth1", Name: "ens5", MAC: "02:00:00:00:00:01", MTU: 1500})
	f.Add(good)
	f.Add([]byte(`{"version":1,"containerID":"c","ifName":"eth1","name":"a/b"}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := decodeState(data)
		if err != nil {
			return
		}
		if pluginmain.ValidateIfName(s.Name) != "" || pluginmain.ValidateIfName(s.IfName) != "" || s.ContainerID == "" || strings.ContainsAny(s.ContainerID, "/:") || s.MTU < 0 {
			t.Fatalf("accepted %+v", s)
		}
	})
}
