package runtime

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// recordVersion is the format version of pod records.
const recordVersion = 1

// record is the on-disk pod record, StateDir/<name>.json. It holds what DEL
// needs even when the libcni cache is gone: the container id, the netns
// path, the configuration used at ADD time and the capability arguments.
type record struct {
	Version      int             `json:"version"`
	Name         string          `json:"name"`
	Namespace    string          `json:"namespace"`
	UID          string          `json:"uid"`
	ContainerID  string          `json:"containerID"`
	Netns        string          `json:"netns"`
	Network      string          `json:"network"`
	IfName       string          `json:"ifName"`
	Created      time.Time       `json:"created"`
	Capabilities Capabilities    `json:"capabilities"`
	Config       json.RawMessage `json:"config"`
}

const recordExt = ".json"

func (r *Runtime) recordPath(name string) string {
	return filepath.Join(r.StateDir, name+recordExt)
}

// errRecordNotFound is returned (wrapped) by readRecord for a missing file.
var errRecordNotFound = errors.New("no pod record")

func (r *Runtime) readRecord(name string) (*record, error) {
	b, err := os.ReadFile(r.recordPath(name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read pod %q: %w", name, errRecordNotFound)
		}
		return nil, fmt.Errorf("read pod %q: %w", name, err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("read pod record %s: %w", r.recordPath(name), err)
	}
	if rec.Version != recordVersion || rec.Name != name || rec.ContainerID == "" || rec.Netns == "" || rec.IfName == "" || len(rec.Config) == 0 {
		return nil, fmt.Errorf("read pod record %s: incomplete or unknown version %d", r.recordPath(name), rec.Version)
	}
	return &rec, nil
}

// writeRecord replaces the record atomically (temporary file and rename).
// It does not fsync: the record lives as long as the namespace in /run,
// and a record damaged by a crash is handled by DelPod (by name) and
// reported by GC.
func (r *Runtime) writeRecord(rec *record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("write pod record %q: %w", rec.Name, err)
	}
	b = append(b, '\n')
	if err := os.MkdirAll(r.StateDir, 0o700); err != nil {
		return fmt.Errorf("write pod record %q: %w", rec.Name, err)
	}
	final := r.recordPath(rec.Name)
	tmp := filepath.Join(r.StateDir, "."+rec.Name+".tmp-"+randHex(4))
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write pod record %q: %w", rec.Name, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write pod record %q: %w", rec.Name, err)
	}
	return nil
}

func (r *Runtime) removeRecord(name string) error {
	if err := os.Remove(r.recordPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove pod record %q: %w", name, err)
	}
	return nil
}

// recordNames lists the pod names that have a record file, sorted.
func (r *Runtime) recordNames() ([]string, error) {
	ents, err := os.ReadDir(r.StateDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list pod records: %w", err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, recordExt) || !e.Type().IsRegular() {
			continue
		}
		names = append(names, strings.TrimSuffix(n, recordExt))
	}
	return names, nil // ReadDir sorts by name
}

// lock takes the StateDir lock: shared for pod operations, exclusive for
// GC. It returns the unlock function.
func (r *Runtime) lock(exclusive bool) (func(), error) {
	if err := os.MkdirAll(r.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock state directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(r.StateDir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state directory: %w", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock state directory: %w", err)
	}
	return func() { f.Close() }, nil
}

// NewContainerID returns a random 64-hex-digit id, the form of containerd's
// sandbox ids.
func NewContainerID() string { return randHex(32) }

// newUID returns a random (version 4) UUID.
func newUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
