package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"
)

// ErrNoNetwork is returned (wrapped) when the configuration directory holds
// no valid network configuration.
var ErrNoNetwork = errors.New("no valid network configuration")

// Network is the network configuration a Runtime attaches pods to.
type Network struct {
	// Name is the network name from the configuration.
	Name string
	// File is the configuration file it was read from ("" when it comes
	// from a pod record).
	File string
	// CNIVersion is the version libcni negotiated (cniVersion and
	// cniVersions).
	CNIVersion string
	// List is the configuration as libcni uses it. A single-plugin
	// configuration has been upconverted to a one-plugin list.
	List *libcni.NetworkConfigList
	// Skipped lists the files, in order, that sort before File but are not
	// valid configurations.
	Skipped []SkippedFile
}

// SkippedFile is a configuration file passed over because it is invalid.
type SkippedFile struct {
	File string
	Err  error
}

// Plugins lists the plugin types of the chain in order.
func (n *Network) Plugins() []string {
	out := make([]string, 0, len(n.List.Plugins))
	for _, p := range n.List.Plugins {
		out = append(out, p.Network.Type)
	}
	return out
}

// ConfigExtensions are the file extensions LoadNetwork considers.
var ConfigExtensions = []string{".conf", ".conflist", ".json"}

// LoadNetwork selects the default network of dir the way container
// runtimes do: the files ending in .conf, .conflist or .json (not in
// subdirectories), sorted by file name; the first one that is a valid
// configuration wins. A .conflist is a configuration list (with the plugin
// drop-ins of dir/<network name>/*.conf that libcni appends unless
// loadOnlyInlinedPlugins is set); a .conf or .json is a single plugin
// configuration, upconverted to a one-plugin list. Invalid files are
// listed in Network.Skipped. With no valid file the error wraps
// ErrNoNetwork and names every skipped file.
func LoadNetwork(dir string) (*Network, error) {
	files, err := libcni.ConfFiles(dir, ConfigExtensions)
	if err != nil {
		return nil, fmt.Errorf("read network configuration directory: %w", err)
	}
	sort.Strings(files)
	var skipped []SkippedFile
	for _, f := range files {
		list, err := loadFile(f)
		if err != nil {
			skipped = append(skipped, SkippedFile{File: f, Err: err})
			continue
		}
		return &Network{Name: list.Name, File: f, CNIVersion: list.CNIVersion, List: list, Skipped: skipped}, nil
	}
	if len(skipped) == 0 {
		return nil, fmt.Errorf("%w in %s: no *.conflist, *.conf or *.json file", ErrNoNetwork, dir)
	}
	msgs := make([]string, 0, len(skipped))
	for _, s := range skipped {
		msgs = append(msgs, fmt.Sprintf("%s: %v", filepath.Base(s.File), s.Err))
	}
	return nil, fmt.Errorf("%w in %s: %s", ErrNoNetwork, dir, strings.Join(msgs, "; "))
}

func loadFile(path string) (*libcni.NetworkConfigList, error) {
	var list *libcni.NetworkConfigList
	if strings.HasSuffix(path, ".conflist") {
		l, err := libcni.ConfListFromFile(path)
		if err != nil {
			return nil, err
		}
		if err := inlineDropIns(l); err != nil {
			return nil, err
		}
		list = l
	} else {
		c, err := libcni.ConfFromFile(path)
		if err != nil {
			return nil, err
		}
		if c.Network.Name == "" {
			return nil, errors.New("no network name")
		}
		l, err := libcni.ConfListFromConf(c)
		if err != nil {
			return nil, err
		}
		list = l
	}
	if err := validateList(list); err != nil {
		return nil, err
	}
	return list, nil
}

// NetworkFromBytes parses a configuration list (as recorded by AddPod) and
// validates it like LoadNetwork does.
func NetworkFromBytes(b []byte) (*Network, error) {
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, err
	}
	if err := validateList(list); err != nil {
		return nil, err
	}
	return &Network{Name: list.Name, CNIVersion: list.CNIVersion, List: list}, nil
}

func validateList(list *libcni.NetworkConfigList) error {
	var errs []error
	if err := utils.ValidateNetworkName(list.Name); err != nil {
		errs = append(errs, fmt.Errorf("network name %q: %s", list.Name, err.Msg))
	}
	if list.CNIVersion == "" {
		// A missing cniVersion means 0.1.0, which has no chaining and no
		// result caching on DEL; nobody means it.
		errs = append(errs, errors.New("no cniVersion"))
	} else if newer, err := version.GreaterThan(list.CNIVersion, version.Current()); err != nil {
		errs = append(errs, fmt.Errorf("cniVersion %q: %w", list.CNIVersion, err))
	} else if newer {
		errs = append(errs, fmt.Errorf("cniVersion %q is newer than the supported %s", list.CNIVersion, version.Current()))
	}
	if len(list.Plugins) == 0 {
		errs = append(errs, errors.New("no plugins"))
	}
	for i, p := range list.Plugins {
		if t := p.Network.Type; t == "" || strings.ContainsAny(t, `/\`) {
			errs = append(errs, fmt.Errorf("plugins[%d].type %q is not a plugin name", i, t))
		}
	}
	return errors.Join(errs...)
}

// inlineDropIns rewrites list.Bytes to hold every plugin when libcni has
// appended drop-in plugin files to the inlined ones: libcni caches
// list.Bytes as the configuration of the attachment, and a DEL from the
// cache must run the same chain as the ADD.
func inlineDropIns(list *libcni.NetworkConfigList) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		return err
	}
	var inline []json.RawMessage
	if p, ok := raw["plugins"]; ok {
		if err := json.Unmarshal(p, &inline); err != nil {
			return err
		}
	}
	if len(inline) == len(list.Plugins) {
		return nil
	}
	all := make([]json.RawMessage, 0, len(list.Plugins))
	for _, p := range list.Plugins {
		all = append(all, p.Bytes)
	}
	b, err := json.Marshal(all)
	if err != nil {
		return err
	}
	raw["plugins"] = b
	raw["loadOnlyInlinedPlugins"] = json.RawMessage("true")
	out, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	list.Bytes = out
	list.LoadOnlyInlinedPlugins = true
	return nil
}

// fileStamp identifies a version of a file or directory cheaply.
type fileStamp struct {
	ok      bool
	modNano int64
	size    int64
	ino     uint64
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{ok: true, modNano: fi.ModTime().UnixNano(), size: fi.Size(), ino: inode(fi)}
}
