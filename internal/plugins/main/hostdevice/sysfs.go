package hostdevice

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// The selectors kernelpath, pciBusID and runtimeConfig.deviceID name a
// device by its place in the kernel's device tree; sysfs (normally /sys)
// tells which network interface belongs to it. sysfs lists the network
// interfaces of the namespace that mounted it, the node's initial one, so
// these selectors work for a plugin running there, as plugins do. Where
// sysfs gives an interface index, it must match the interface of that name
// the plugin sees, or the request fails rather than moving another device.

// userspaceDrivers are the drivers that hand a PCI network device to a
// userspace data plane (DPDK): such a device has no kernel interface, and
// host-device leaves it where it is.
var userspaceDrivers = map[string]bool{"vfio-pci": true, "uio_pci_generic": true, "igb_uio": true}

// sysDevice is what sysfs says about a selected device.
type sysDevice struct {
	name    string // network interface; "" for a device in userspace
	ifindex int    // from sysfs; 0 when unknown
	pci     string // PCI address, when the device is on (or under) PCI
	driver  string // the userspace driver, when name is ""
}

// lookup resolves a sysfs selector below root.
func lookup(root string, sel Selector) (*sysDevice, error) {
	var dir string
	switch sel.Kind {
	case ByKernelPath:
		dir = filepath.Join(root, strings.TrimPrefix(sel.Value, "/sys"))
	case ByPCI:
		dir = filepath.Join(root, "bus", "pci", "devices", sel.Value)
	case ByAuxiliary:
		dir = filepath.Join(root, "bus", "auxiliary", "devices", sel.Value)
	default:
		return nil, fmt.Errorf("selector %s is not a sysfs selector", sel.Field)
	}
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "%s: no device %q on the node (%s does not exist)", sel.Field, sel.Value, dir)
		}
		return nil, fmt.Errorf("%s: read %s: %w", sel.Field, dir, err)
	}
	d := &sysDevice{}
	if sel.Kind == ByPCI {
		d.pci = sel.Value
	} else if real, err := filepath.EvalSymlinks(dir); err == nil {
		d.pci = lastPCI(real)
	}
	names, err := netNames(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: list the interfaces of %s: %w", sel.Field, dir, err)
	}
	switch len(names) {
	case 1:
		d.name = names[0]
		d.ifindex = readInt(filepath.Join(dir, "net", d.name, "ifindex"))
		return d, nil
	case 0:
		drv := driverOf(dir)
		if userspaceDrivers[drv] && d.pci != "" {
			d.driver = drv
			return d, nil
		}
		if drv == "" {
			drv = "none"
		}
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "%s: device %q has no network interface (driver %s)", sel.Field, sel.Value, drv)
	default:
		return nil, pluginmain.Errorf(pluginmain.CodeInvalidConfig, "%s: device %q has several network interfaces (%s); select one with device or hwaddr", sel.Field, sel.Value, strings.Join(names, ", "))
	}
}

// netNames lists the network interfaces of a device directory.
func netNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "net"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out, nil
}

// driverOf names the driver bound to a device ("" for none).
func driverOf(dir string) string {
	target, err := os.Readlink(filepath.Join(dir, "driver"))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

// driverOfPCI names the driver bound to a PCI device.
func driverOfPCI(root, addr string) string {
	return driverOf(filepath.Join(root, "bus", "pci", "devices", addr))
}

// pciOf returns the PCI address of the node's interface name with index
// ifindex, "" when it has none or when sysfs shows another interface of
// that name.
func pciOf(root, name string, ifindex int) string {
	base := filepath.Join(root, "class", "net", name)
	if readInt(filepath.Join(base, "ifindex")) != ifindex {
		return ""
	}
	real, err := filepath.EvalSymlinks(filepath.Join(base, "device"))
	if err != nil {
		return ""
	}
	return lastPCI(real)
}

// lastPCI returns the last path element that is a PCI address: the device
// nearest to the end of a sysfs device path (a virtio or auxiliary device
// sits below its PCI function).
func lastPCI(path string) string {
	parts := strings.Split(path, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if a, ok := normalizePCI(parts[i]); ok && strings.Count(parts[i], ":") == 2 {
			return a
		}
	}
	return ""
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return n
}
