package tuning

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"linen.dev/linen/internal/atomicfile"
)

// state is what ADD saved of an attachment: the original value of
// everything it was asked to change. The first five fields are the
// reference plugin's backup file under the same names, so either plugin
// restores what the other changed; the rest are linen's.
type state struct {
	Mac      string `json:"mac,omitempty"`
	Promisc  *bool  `json:"promisc,omitempty"`
	Mtu      int    `json:"mtu,omitempty"`
	Allmulti *bool  `json:"allmulti,omitempty"`
	TxQLen   *int   `json:"txQLen,omitempty"`

	// Sysctls in the order they were set; DEL restores them in reverse.
	Sysctls     []savedSysctl `json:"sysctls,omitempty"`
	Network     string        `json:"network,omitempty"`
	ContainerID string        `json:"containerID,omitempty"`
	IfName      string        `json:"ifName,omitempty"`
}

type savedSysctl struct {
	Path  string `json:"path"` // relative to /proc/sys
	Value string `json:"value"`
}

// statePath is the attachment's file: <dataDir>/<containerID>_<ifName>.json
// (the reference plugin's name). Both parts are validated by the
// dispatcher and contain no '/'.
func statePath(dataDir, containerID, ifName string) string {
	return filepath.Join(dataDir, containerID+"_"+ifName+".json")
}

// decodeState parses a state file and checks what DEL would act on: MAC
// syntax, and sysctl paths that stay below /proc/sys/net.
func decodeState(data []byte) (*state, error) {
	var st state
	d := json.NewDecoder(bytes.NewReader(data))
	if err := d.Decode(&st); err != nil {
		return nil, err
	}
	if st.Mac != "" {
		if _, err := net.ParseMAC(st.Mac); err != nil {
			return nil, fmt.Errorf("mac: %q is not a MAC address", st.Mac)
		}
	}
	if st.Mtu < 0 {
		return nil, fmt.Errorf("mtu: %d is negative", st.Mtu)
	}
	if st.TxQLen != nil && *st.TxQLen < 0 {
		return nil, fmt.Errorf("txQLen: %d is negative", *st.TxQLen)
	}
	for i, s := range st.Sysctls {
		if !validPath(s.Path) {
			return nil, fmt.Errorf("sysctls[%d]: %q is not a path below /proc/sys/net", i, s.Path)
		}
		if strings.ContainsAny(s.Value, "\x00\n\r") {
			return nil, fmt.Errorf("sysctls[%d]: value %q is not one line", i, s.Value)
		}
	}
	return &st, nil
}

// readState returns the saved state, nil when there is none.
func readState(path string) (*state, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read saved state %s: %w", path, err)
	}
	st, err := decodeState(data)
	if err != nil {
		return nil, fmt.Errorf("read saved state %s: %w", path, err)
	}
	return st, nil
}

// writeState replaces the file atomically (internal/atomicfile), readable
// by root only.
func writeState(path string, st *state) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("save state %s: %w", path, err)
	}
	return nil
}

func removeState(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove saved state: %w", err)
	}
	return nil
}

// merge keeps the originals an earlier ADD of the same attachment saved
// (the values now are already changed) and adds what it did not save.
func (st *state) merge(old *state) {
	if old == nil {
		return
	}
	if old.Mac != "" {
		st.Mac = old.Mac
	}
	if old.Promisc != nil {
		st.Promisc = old.Promisc
	}
	if old.Mtu != 0 {
		st.Mtu = old.Mtu
	}
	if old.Allmulti != nil {
		st.Allmulti = old.Allmulti
	}
	if old.TxQLen != nil {
		st.TxQLen = old.TxQLen
	}
	had := map[string]bool{}
	for _, s := range old.Sysctls {
		had[s.Path] = true
	}
	merged := append([]savedSysctl(nil), old.Sysctls...)
	for _, s := range st.Sysctls {
		if !had[s.Path] {
			merged = append(merged, s)
		}
	}
	st.Sysctls = merged
}
