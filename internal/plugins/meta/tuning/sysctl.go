package tuning

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"unicode"
)

// ifnamePlaceholder in a sysctl key stands for CNI_IFNAME.
const ifnamePlaceholder = "IFNAME"

// sysctlKey is a sysctl key as written, split into its components. A key
// that contains a slash is a path below /proc/sys whose dots are literal
// (interface names may contain dots: "net/ipv4/conf/eth0.100/arp_notify");
// any other key is dotted ("net.ipv4.conf.IFNAME.arp_notify"), as
// sysctl(8) writes them.
type sysctlKey struct {
	written string
	parts   []string // with the IFNAME placeholder
}

// parseKey validates a key: a relative path of plain components under
// net/, nothing that could climb out of /proc/sys/net after the interface
// name is put in.
func parseKey(k string) (sysctlKey, string) {
	switch {
	case k == "":
		return sysctlKey{}, "is empty"
	case strings.HasPrefix(k, "/"):
		return sysctlKey{}, "must be relative to /proc/sys (\"net.core.somaxconn\" or \"net/core/somaxconn\")"
	}
	for _, r := range k {
		if r == 0 || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return sysctlKey{}, "must not contain whitespace or control characters"
		}
	}
	sep := "."
	if strings.Contains(k, "/") {
		sep = "/"
	}
	parts := strings.Split(k, sep)
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return sysctlKey{}, "must not have empty, \".\" or \"..\" components"
		}
	}
	if parts[0] != "net" || len(parts) < 2 {
		return sysctlKey{}, "is not under net. (only the network namespace's sysctls, /proc/sys/net/..., may be set)"
	}
	return sysctlKey{written: k, parts: parts}, ""
}

// resolve puts the interface name in and returns the path below /proc/sys
// (slash separated, relative).
func (k sysctlKey) resolve(ifName string) string {
	out := make([]string, len(k.parts))
	for i, p := range k.parts {
		out[i] = strings.ReplaceAll(p, ifnamePlaceholder, ifName)
	}
	return strings.Join(out, "/")
}

// template is the key in dotted form with the placeholder kept, for the
// allow-list and for finding one key written two ways.
func (k sysctlKey) template() string { return strings.Join(k.parts, ".") }

// validPath reports whether a resolved relative path stays below net/:
// plain components only. Interface names are checked by the dispatcher
// (no '/', not "." or ".."), so this holds for any key parseKey accepted;
// it is checked again before every read and write all the same.
func validPath(p string) bool {
	parts := strings.Split(p, "/")
	if len(parts) < 2 || parts[0] != "net" {
		return false
	}
	for _, c := range parts {
		if c == "" || c == "." || c == ".." || strings.ContainsRune(c, 0) {
			return false
		}
	}
	return true
}

// normValue is a sysctl value for comparison: the kernel separates fields
// with tabs where a configuration would use spaces.
func normValue(v string) string { return strings.Join(strings.Fields(v), " ") }

// validValue reports what is wrong with a value to write, or "".
func validValue(v string) string {
	switch {
	case strings.TrimSpace(v) == "":
		return "is empty"
	case strings.ContainsAny(v, "\x00\n\r"):
		return "must be one line without NUL"
	}
	return ""
}

// allowlist is the node's list of sysctl keys that may be set: one regular
// expression per line, each matching a whole key. Blank lines and lines
// starting with '#' are ignored.
type allowlist struct {
	path string
	res  []*regexp.Regexp
}

// loadAllowlist reads the allow-list; a missing file is nil (everything
// under net. is allowed).
func loadAllowlist(path string) (*allowlist, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read sysctl allow-list: %w", err)
	}
	return parseAllowlist(path, data)
}

func parseAllowlist(path string, data []byte) (*allowlist, error) {
	al := &allowlist{path: path}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		re, err := regexp.Compile(`^(?:` + line + `)$`)
		if err != nil {
			return nil, fmt.Errorf("sysctl allow-list %s line %d: %q is not a regular expression: %v", path, n, line, err)
		}
		al.res = append(al.res, re)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read sysctl allow-list %s: %w", path, err)
	}
	return al, nil
}

// allows reports whether a key may be set: an expression matches the
// whole key in dotted form, either with the IFNAME placeholder or with the
// interface name put in.
func (al *allowlist) allows(k sysctlKey, ifName string) bool {
	if al == nil {
		return true
	}
	forms := []string{k.template()}
	if ifName != "" {
		forms = append(forms, strings.ReplaceAll(k.resolve(ifName), "/", "."))
	}
	for _, re := range al.res {
		for _, f := range forms {
			if re.MatchString(f) {
				return true
			}
		}
	}
	return false
}
