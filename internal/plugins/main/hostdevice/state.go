package hostdevice

// The state of an attachment: one file per (container, interface) under
// <dataDir>/<network>/, named "<containerID>:<ifName>" (neither may contain
// ':', so the name is unambiguous), holding what DEL needs to give the
// device back as it was: its name, alias, MAC, MTU and whether it was up,
// and the namespace it went to (for GC). ADD writes it before the device
// moves, so a plugin that dies half-way leaves a record DEL can act on.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"linen.dev/linen/internal/atomicfile"
	"linen.dev/linen/internal/plugins/pluginmain"
)

const stateVersion = 1

// state is one attachment's record.
type state struct {
	Version     int    `json:"version"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	Netns       string `json:"netns"`
	// The device as it was on the node before ADD.
	Name  string `json:"name"`
	Alias string `json:"alias,omitempty"`
	MAC   string `json:"mac,omitempty"`
	MTU   int    `json:"mtu,omitempty"`
	Up    bool   `json:"up"`
	PCI   string `json:"pciID,omitempty"`
}

func stateDir(dataDir, network string) string { return filepath.Join(dataDir, network) }

func statePath(dataDir, network, containerID, ifName string) string {
	return filepath.Join(stateDir(dataDir, network), containerID+":"+ifName)
}

// decodeState parses and checks a state file.
func decodeState(data []byte) (*state, error) {
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("not a state record: %w", err)
	}
	switch {
	case s.Version != stateVersion:
		return nil, fmt.Errorf("unknown state version %d", s.Version)
	case pluginmain.ValidateIfName(s.Name) != "":
		return nil, fmt.Errorf("device name %q %s", s.Name, pluginmain.ValidateIfName(s.Name))
	case pluginmain.ValidateIfName(s.IfName) != "":
		return nil, fmt.Errorf("interface name %q %s", s.IfName, pluginmain.ValidateIfName(s.IfName))
	case s.ContainerID == "" || strings.ContainsAny(s.ContainerID, "/:"):
		return nil, fmt.Errorf("container ID %q", s.ContainerID)
	case s.MTU < 0:
		return nil, fmt.Errorf("MTU %d", s.MTU)
	}
	if s.MAC != "" {
		if _, err := net.ParseMAC(s.MAC); err != nil {
			return nil, fmt.Errorf("MAC %q", s.MAC)
		}
	}
	return &s, nil
}

// saveState writes the record atomically: temporary file, fsync, rename,
// fsync of the directory. Directory 0700, file 0600.
func saveState(dataDir, network string, s *state) (err error) {
	s.Version = stateVersion
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	dir := stateDir(dataDir, network)
	path := statePath(dataDir, network, s.ContainerID, s.IfName)
	defer func() {
		if err != nil {
			err = fmt.Errorf("save state %s: %w", path, err)
		}
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// loadState reads an attachment's record: (nil, nil) when there is none.
func loadState(dataDir, network, containerID, ifName string) (*state, error) {
	path := statePath(dataDir, network, containerID, ifName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	s, err := decodeState(data)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	if s.ContainerID != containerID || s.IfName != ifName {
		return nil, fmt.Errorf("state %s: records %s/%s", path, s.ContainerID, s.IfName)
	}
	return s, nil
}

// removeState deletes an attachment's record; a missing one is fine.
func removeState(dataDir, network, containerID, ifName string) error {
	err := os.Remove(statePath(dataDir, network, containerID, ifName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove state: %w", err)
	}
	return atomicfile.SyncDir(stateDir(dataDir, network))
}

// listStates returns the network's records; unreadable ones are reported
// by name in bad, not dropped silently.
func listStates(dataDir, network string) (good []*state, bad []string, err error) {
	dir := stateDir(dataDir, network)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			bad = append(bad, name)
			continue
		}
		s, err := decodeState(data)
		if err != nil || s.ContainerID+":"+s.IfName != name {
			bad = append(bad, name)
			continue
		}
		good = append(good, s)
	}
	return good, bad, nil
}
