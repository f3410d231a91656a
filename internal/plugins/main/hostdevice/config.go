package hostdevice

import (
	"net"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// DefaultDataDir is where the state of each attachment is kept unless the
// configuration names another directory.
const DefaultDataDir = "/var/lib/cni/host-device"

// wireConf is the configuration as it arrives on stdin.
type wireConf struct {
	types.NetConf
	Device        string `json:"device,omitempty"`
	HWAddr        string `json:"hwaddr,omitempty"`
	KernelPath    string `json:"kernelpath,omitempty"`
	PCIBusID      string `json:"pciBusID,omitempty"`
	DataDir       string `json:"dataDir,omitempty"`
	RuntimeConfig *struct {
		DeviceID string `json:"deviceID,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// SelectorKind says how the configuration names the device.
type SelectorKind int

// The selectors, in the order the documentation lists them.
const (
	ByName       SelectorKind = iota + 1 // device
	ByMAC                                // hwaddr
	ByKernelPath                         // kernelpath
	ByPCI                                // pciBusID, or runtimeConfig.deviceID holding a PCI address
	ByAuxiliary                          // runtimeConfig.deviceID holding an auxiliary-bus device
)

// Selector names the device to move.
type Selector struct {
	Kind  SelectorKind
	Field string // the configuration key it came from
	// Value is the interface name, the sysfs path, the PCI address
	// (normalised to the 0000:00:00.0 form) or the auxiliary device name.
	Value string
	MAC   net.HardwareAddr // ByMAC
}

// Config is the validated configuration.
type Config struct {
	Network    string
	CNIVersion string
	Selector   Selector
	DataDir    string
	IPAMType   string
	DNS        types.DNS
	PrevResult *current.Result
}

// parseConfig decodes and validates stdin with CNI_ARGS, reporting every
// problem at once. Only ADD needs the selector (withSelector): DEL, CHECK
// and STATUS work from the attachment's record, so a runtime that leaves
// runtimeConfig.deviceID out of a DEL still gets the device back.
func parseConfig(stdin []byte, cniArgs string, withSelector bool) (*Config, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	if _, err := pluginmain.ParseCNIArgs(cniArgs); err != nil {
		return nil, err
	}
	c := &Config{Network: w.Name, CNIVersion: w.CNIVersion, DataDir: w.DataDir, IPAMType: w.IPAM.Type, DNS: w.DNS}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	} else if !filepath.IsAbs(c.DataDir) {
		fe.Add("dataDir", "%q is not an absolute path", c.DataDir)
	}
	deviceID := ""
	if w.RuntimeConfig != nil {
		deviceID = w.RuntimeConfig.DeviceID
	}
	given := []struct{ field, value string }{
		{"device", w.Device}, {"hwaddr", w.HWAddr}, {"kernelpath", w.KernelPath},
		{"pciBusID", w.PCIBusID}, {"runtimeConfig.deviceID", deviceID},
	}
	var set []string
	for _, g := range given {
		if g.value != "" {
			set = append(set, g.field)
		}
	}
	switch n := len(set); {
	case !withSelector:
	case n == 0:
		fe.Add("device", "no device selected: give exactly one of device, hwaddr, kernelpath, pciBusID or runtimeConfig.deviceID")
	case n == 1:
		for _, g := range given {
			if g.value != "" {
				c.Selector = parseSelector(fe, g.field, g.value)
			}
		}
	default:
		fe.Add(set[0], "give exactly one of device, hwaddr, kernelpath, pciBusID and runtimeConfig.deviceID, not %s", strings.Join(set, " and "))
	}
	if err := fe.Err(); err != nil {
		return nil, err
	}
	prev, err := pluginmain.PrevResult(&w.NetConf)
	if err != nil {
		return nil, err
	}
	c.PrevResult = prev
	return c, nil
}

func parseSelector(fe *pluginmain.FieldErrors, field, v string) Selector {
	s := Selector{Field: field, Value: v}
	switch field {
	case "device":
		s.Kind = ByName
		if why := pluginmain.ValidateIfName(v); why != "" {
			fe.Add(field, "%q %s", v, why)
		}
	case "hwaddr":
		s.Kind = ByMAC
		hw, err := net.ParseMAC(v)
		switch {
		case err != nil:
			fe.Add(field, "%q is not a hardware address", v)
		case strings.Trim(hw.String(), "0:") == "":
			fe.Add(field, "%q is the all-zero address", v)
		}
		s.MAC = hw
	case "kernelpath":
		s.Kind = ByKernelPath
		if !strings.HasPrefix(v, "/sys/") || filepath.Clean(v) != v || strings.Contains(v, "/../") {
			fe.Add(field, "%q is not a clean absolute path under /sys (for example /sys/devices/pci0000:00/0000:00:05.0)", v)
		}
	case "pciBusID":
		s.Kind = ByPCI
		addr, ok := normalizePCI(v)
		if !ok {
			fe.Add(field, "%q is not a PCI address (domain:bus:device.function, for example 0000:04:00.1)", v)
		}
		s.Value = addr
	case "runtimeConfig.deviceID":
		if addr, ok := normalizePCI(v); ok {
			s.Kind, s.Value = ByPCI, addr
			break
		}
		s.Kind = ByAuxiliary
		if v == "." || v == ".." || strings.ContainsAny(v, "/\x00") || strings.IndexFunc(v, isSpace) >= 0 || len(v) > 255 {
			fe.Add(field, "%q is neither a PCI address nor an auxiliary device name", v)
		}
	}
	return s
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
}

// normalizePCI checks a PCI address, "dddd:bb:dd.f" or "bb:dd.f", and
// returns it with the domain, in lower case.
func normalizePCI(s string) (string, bool) {
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
		parts = append([]string{"0000"}, parts...)
	case 3:
	default:
		return "", false
	}
	devFn := strings.Split(parts[2], ".")
	if len(devFn) != 2 || !hexN(parts[0], 4) || !hexN(parts[1], 2) || !hexN(devFn[0], 2) ||
		len(devFn[1]) != 1 || devFn[1][0] < '0' || devFn[1][0] > '7' {
		return "", false
	}
	// Device numbers go up to 0x1f.
	if d := devFn[0][0]; d != '0' && d != '1' {
		return "", false
	}
	return strings.ToLower(parts[0] + ":" + parts[1] + ":" + devFn[0] + "." + devFn[1]), true
}

func hexN(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// lenient is the part of the configuration GC needs, decoded without
// validating the rest, so that GC works with whatever the runtime cached.
type lenient struct {
	network  string
	ipamType string
	dataDir  string
}

func parseLenient(stdin []byte) (*lenient, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	l := &lenient{network: w.Name, ipamType: w.IPAM.Type, dataDir: w.DataDir}
	if l.dataDir == "" {
		l.dataDir = DefaultDataDir
	}
	if !filepath.IsAbs(l.dataDir) {
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "dataDir: %q is not an absolute path", l.dataDir)
	}
	return l, nil
}
