// Package sysctl reads and writes kernel parameters under /proc/sys.
//
// Network sysctls are per network namespace and resolve against the namespace
// of the calling thread, so callers that target another namespace wrap the
// call in netns.NS.Do.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Path converts a dotted ("net.ipv4.ip_forward") or slashed key to its path
// under /proc/sys. Interface names may contain dots, so a key that already
// contains a slash is taken as a path as-is.
func Path(key string) string {
	if strings.Contains(key, "/") {
		return filepath.Join("/proc/sys", key)
	}
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

// Get returns the trimmed value of key.
func Get(key string) (string, error) {
	b, err := os.ReadFile(Path(key))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Set writes value to key.
func Set(key, value string) error {
	f, err := os.OpenFile(Path(key), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("write sysctl %s: %w", key, err)
	}
	_, werr := f.WriteString(value)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("write sysctl %s=%s: %w", key, value, werr)
	}
	if cerr != nil {
		return fmt.Errorf("write sysctl %s=%s: %w", key, value, cerr)
	}
	return nil
}

// Ensure writes value only when the current value differs, which saves a
// write (and its notifier work in the kernel) on the common path.
func Ensure(key, value string) error {
	cur, err := Get(key)
	if err == nil && cur == value {
		return nil
	}
	return Set(key, value)
}

// Link builds the per-interface key, e.g. Link("ipv6", "eth0", "accept_dad")
// = "net/ipv6/conf/eth0/accept_dad" (slashed, so interface names with dots
// stay intact).
func Link(family, ifname, name string) string {
	return "net/" + family + "/conf/" + ifname + "/" + name
}
