package linen

// The saved delegate configurations: one file per container,
// <dataDir>/<containerID>, holding the delegate configuration ADD used, as
// flannel's plugin keeps it. linen adds one key, ifNameKey, naming the
// attachment's interface so that GC can match the file to an attachment;
// delegates ignore the key (it is removed before replaying anyway), so
// flannel's plugin can replay linen's files and linen replays flannel's.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"linen.dev/linen/internal/atomicfile"
)

const ifNameKey = "linen.dev/ifName"

// saved is one saved delegate configuration.
type saved struct {
	conf   map[string]json.RawMessage // without ifNameKey
	typ    string
	ifName string // "" in files written by flannel's plugin
}

func savePath(dir, containerID string) string { return filepath.Join(dir, containerID) }

// save writes the delegate configuration for an attachment atomically:
// temporary file, fsync, rename, fsync of the directory. The directory is
// created 0700 and the file is 0600 (the configuration may carry secrets
// of the delegate).
func save(dir, containerID, ifName string, conf []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(conf, &m); err != nil {
		return err
	}
	name, _ := json.Marshal(ifName)
	m[ifNameKey] = name
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create dataDir: %w", err)
	}
	if err := atomicfile.Write(savePath(dir, containerID), data, 0o600); err != nil {
		return fmt.Errorf("save delegate configuration %s: %w", savePath(dir, containerID), err)
	}
	return nil
}

// load reads an attachment's saved configuration: (nil, nil) when there is
// none, an error when the file cannot be read or is not a configuration.
func load(dir, containerID string) (*saved, error) {
	data, err := os.ReadFile(savePath(dir, containerID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s, err := decodeSaved(data)
	if err != nil {
		return nil, fmt.Errorf("saved delegate configuration %s: %w", savePath(dir, containerID), err)
	}
	return s, nil
}

func decodeSaved(data []byte) (*saved, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return nil, errors.New("not a JSON object")
	}
	s := &saved{conf: m}
	if err := json.Unmarshal(m["type"], &s.typ); err != nil || s.typ == "" {
		return nil, errors.New("no delegate type")
	}
	if raw, ok := m[ifNameKey]; ok {
		if err := json.Unmarshal(raw, &s.ifName); err != nil {
			return nil, fmt.Errorf("%s is not a string", ifNameKey)
		}
		delete(m, ifNameKey)
	}
	return s, nil
}

// replay renders the saved configuration for DEL, CHECK or GC of the
// current request: the request's cniVersion (the runtime may have moved
// the network to a newer version since ADD, and prevResult is in that
// version) and its prevResult, or none.
func (s *saved) replay(cniVersion string, prevResult json.RawMessage) []byte {
	m := make(map[string]json.RawMessage, len(s.conf)+1)
	for k, v := range s.conf {
		m[k] = v
	}
	if cniVersion != "" {
		m["cniVersion"], _ = json.Marshal(cniVersion)
	}
	delete(m, "prevResult")
	if prevResult != nil {
		m["prevResult"] = prevResult
	}
	b, _ := json.Marshal(m) // values came from json.Unmarshal: always valid
	return b
}

// subnets lists the range subnets of the saved ipam section.
func (s *saved) subnets() []netip.Prefix {
	var ipam struct {
		Ranges [][]struct {
			Subnet string `json:"subnet"`
		} `json:"ranges"`
	}
	_ = json.Unmarshal(s.conf["ipam"], &ipam)
	var out []netip.Prefix
	for _, set := range ipam.Ranges {
		for _, r := range set {
			if p, err := netip.ParsePrefix(r.Subnet); err == nil {
				out = append(out, p.Masked())
			}
		}
	}
	return out
}

// remove deletes an attachment's saved configuration; a missing file is
// not an error.
func remove(dir, containerID string) error {
	err := os.Remove(savePath(dir, containerID))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove saved delegate configuration: %w", err)
	}
	if err == nil {
		return atomicfile.SyncDir(dir)
	}
	return nil
}

// savedIDs lists the container IDs that have a saved configuration.
// Temporary files (names starting with '.', which no container ID does)
// and directories are skipped; a missing dataDir means none.
func savedIDs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		out = append(out, e.Name())
	}
	return out, nil
}
