// Package pluginmain is the shared entry of every linen CNI plugin: it reads
// and validates the protocol parameters, checks the configuration version,
// runs the plugin's verb, converts the result to the requested version, and
// maps failures to the specification's error object. The same Invoke serves a
// process (Main) and an in-process delegation (Env.Delegate), so a plugin
// behaves identically whichever way it is reached.
//
// Plugins return values and errors; they never print or read the process
// environment, so tests call them in process and in parallel.
package pluginmain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sort"
	"strings"
	"unicode"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"linen.dev/linen/internal/netns"
)

// Args are the protocol parameters of one invocation.
type Args struct {
	Command       string // CNI_COMMAND
	ContainerID   string // CNI_CONTAINERID
	Netns         string // CNI_NETNS
	IfName        string // CNI_IFNAME
	Args          string // CNI_ARGS
	Path          string // CNI_PATH
	NetnsOverride string // CNI_NETNS_OVERRIDE
	StdinData     []byte

	// NS is the opened CNI_NETNS, set by Invoke for ADD and CHECK and for
	// DEL when the namespace still exists; nil otherwise. Invoke closes it.
	NS *netns.NS
	// ConfVersion is the configuration's cniVersion, set by Invoke.
	ConfVersion string
}

// Env is what a plugin may use besides its arguments.
type Env struct {
	Stderr   io.Writer
	Log      *slog.Logger
	Registry *Registry
	// InProcess decides whether a delegate found at bin in CNI_PATH runs in
	// this process; nil means "when bin is this very executable".
	InProcess func(pluginType, bin string) bool
	// Detach lets DEL hand the kernel's grace-period waits (link deletion,
	// netfilter socket release) to a detached helper process; set only in
	// plugin processes (see package reaper).
	Detach bool
}

// Plugin is one CNI plugin. Nil GC and Status mean "nothing to do".
type Plugin struct {
	Name     string
	About    string
	Versions []string // supported cniVersions; nil means all (0.1.0 to 1.1.0)
	Add      func(ctx context.Context, env *Env, a *Args) (types.Result, error)
	Del      func(ctx context.Context, env *Env, a *Args) error
	Check    func(ctx context.Context, env *Env, a *Args) error
	GC       func(ctx context.Context, env *Env, a *Args) error
	Status   func(ctx context.Context, env *Env, a *Args) error
}

// SupportedVersions lists the configuration versions the plugin accepts.
func (p *Plugin) SupportedVersions() []string {
	if p.Versions != nil {
		return p.Versions
	}
	return version.All.SupportedVersions()
}

// Registry maps plugin names to plugins. It is a value built by the binary's
// main, not a global filled by init functions.
type Registry struct {
	byName map[string]*Plugin
}

// NewRegistry builds a registry of the given plugins.
func NewRegistry(ps ...*Plugin) *Registry {
	r := &Registry{byName: make(map[string]*Plugin, len(ps))}
	for _, p := range ps {
		r.byName[p.Name] = p
	}
	return r
}

// Add registers p (possibly under an alias name).
func (r *Registry) Add(name string, p *Plugin) { r.byName[name] = p }

// Lookup returns the plugin registered under name, or nil.
func (r *Registry) Lookup(name string) *Plugin {
	if r == nil {
		return nil
	}
	return r.byName[name]
}

// Names lists the registered names, sorted.
func (r *Registry) Names() []string {
	var out []string
	for n := range r.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// validName reports whether s matches ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$, the
// specification's rule for network names and container IDs (written out:
// compiling a regexp costs every plugin exec at start-up).
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '_' && c != '.' && c != '-')) {
			return false
		}
	}
	return true
}

// required lists the variables each verb needs. CNI_NETNS is optional for DEL
// (the namespace may be gone); CNI_PATH is needed wherever a plugin may
// delegate.
var required = map[string][]string{
	"ADD":    {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"},
	"CHECK":  {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"},
	"DEL":    {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"},
	"GC":     {"CNI_PATH"},
	"STATUS": {},
}

// minVersion is the lowest configuration version that allows a verb.
var minVersion = map[string]string{"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}

func (a *Args) get(name string) string {
	switch name {
	case "CNI_CONTAINERID":
		return a.ContainerID
	case "CNI_NETNS":
		return a.Netns
	case "CNI_IFNAME":
		return a.IfName
	case "CNI_PATH":
		return a.Path
	}
	return ""
}

// ValidateIfName checks an interface name as the kernel would accept it.
func ValidateIfName(name string) string {
	switch {
	case name == "":
		return "is empty"
	case len(name) > 15:
		return "is longer than 15 bytes"
	case name == "." || name == "..":
		return "must not be . or .."
	}
	for _, r := range name {
		if r == '/' || r == ':' || unicode.IsSpace(r) || r == 0 {
			return "must not contain '/', ':', NUL or whitespace"
		}
	}
	return ""
}

// Invoke validates a and runs its verb on p. On success it returns what a
// plugin process prints on stdout (the result in the configuration's
// version, the VERSION answer, or nothing); on failure a CNI error. The
// version the error should be printed in is returned too (may be "").
func Invoke(ctx context.Context, env *Env, p *Plugin, a *Args) (out []byte, confVersion string, err *types.Error) {
	cmd := a.Command
	if cmd == "VERSION" {
		b, jerr := json.Marshal(map[string]any{"cniVersion": version.Current(), "supportedVersions": p.SupportedVersions()})
		if jerr != nil {
			return nil, "", Errorf(CodeIOFailure, "encode version: %v", jerr)
		}
		return b, "", nil
	}
	req, ok := required[cmd]
	if !ok {
		if cmd == "" {
			return nil, "", Errorf(CodeInvalidEnv, "CNI_COMMAND: missing (want ADD, DEL, CHECK, GC, STATUS or VERSION)")
		}
		return nil, "", Errorf(CodeInvalidEnv, "CNI_COMMAND: unknown command %q (want ADD, DEL, CHECK, GC, STATUS or VERSION)", cmd)
	}
	var missing []string
	for _, name := range req {
		if a.get(name) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, "", Errorf(CodeInvalidEnv, "required environment variables missing for %s: %s", cmd, strings.Join(missing, ", "))
	}
	if a.ContainerID != "" && cmd != "GC" && cmd != "STATUS" && !validName(a.ContainerID) {
		return nil, "", Errorf(CodeInvalidEnv, "CNI_CONTAINERID: %q must start with a letter or digit and contain only letters, digits, '_', '.' and '-'", a.ContainerID)
	}
	if a.IfName != "" && cmd != "GC" && cmd != "STATUS" {
		if why := ValidateIfName(a.IfName); why != "" {
			return nil, "", Errorf(CodeInvalidEnv, "CNI_IFNAME: %q %s", a.IfName, why)
		}
	}

	// The configuration: JSON, a valid network name, a supported version.
	var head struct {
		CNIVersion *string `json:"cniVersion"`
		Name       *string `json:"name"`
	}
	if len(bytes.TrimSpace(a.StdinData)) == 0 {
		return nil, "", Errorf(CodeDecoding, "stdin: empty network configuration")
	}
	if jerr := json.Unmarshal(a.StdinData, &head); jerr != nil {
		var te *json.UnmarshalTypeError
		if errors.As(jerr, &te) && te.Field == "" {
			return nil, "", Errorf(CodeDecoding, "stdin: network configuration must be a JSON object, got JSON %s", te.Value)
		}
		return nil, "", DecodeError(jerr, "stdin")
	}
	if head.CNIVersion != nil {
		confVersion = *head.CNIVersion
	}
	if head.Name == nil || *head.Name == "" {
		return nil, confVersion, Errorf(CodeInvalidConfig, "name: missing network name")
	}
	if !validName(*head.Name) {
		return nil, confVersion, Errorf(CodeInvalidConfig, "name: %q must start with a letter or digit and contain only letters, digits, '_', '.' and '-'", *head.Name)
	}
	cv := confVersion
	if cv == "" {
		cv = "0.1.0"
	}
	if _, _, _, perr := version.ParseVersion(cv); perr != nil {
		return nil, "", Errorf(CodeIncompatibleVersion, "cniVersion: %q is not a version (%v)", confVersion, perr)
	}
	supported := p.SupportedVersions()
	if !contains(supported, cv) {
		return nil, "", &types.Error{Code: CodeIncompatibleVersion,
			Msg:     "cniVersion: " + cv + " is not supported by the " + p.Name + " plugin",
			Details: "supported versions: " + strings.Join(supported, ", ")}
	}
	if mv, ok := minVersion[cmd]; ok {
		if ge, _ := version.GreaterThanOrEqualTo(cv, mv); !ge {
			return nil, confVersion, Errorf(CodeIncompatibleVersion, "cniVersion: %s does not allow %s (needs %s or later)", cv, cmd, mv)
		}
	}
	a.ConfVersion = cv

	// The namespace: it must be a network namespace and not our own.
	if cmd == "ADD" || cmd == "CHECK" || (cmd == "DEL" && a.Netns != "") {
		ns, nerr := netns.Open(a.Netns)
		switch {
		case nerr == nil:
			a.NS = ns
			defer func() { ns.Close(); a.NS = nil }()
			if !overridden(a.NetnsOverride) {
				self, serr := netns.Current()
				if serr != nil {
					return nil, confVersion, Errorf(CodeInvalidNetNS, "CNI_NETNS: cannot read the plugin's own network namespace: %v", serr)
				}
				same := self.Same(ns)
				self.Close()
				if same {
					return nil, confVersion, Errorf(CodeInvalidNetNS, "CNI_NETNS: %q is the plugin's own network namespace", a.Netns)
				}
			}
		case cmd == "DEL" && (errors.Is(nerr, netns.ErrNotExist) || errors.Is(nerr, netns.ErrNotNetNS)):
			// Gone already (or unmounted, its file left behind, which
			// is no namespace any more): DEL still releases what it can.
		case errors.Is(nerr, netns.ErrNotExist):
			return nil, confVersion, Errorf(CodeInvalidEnv, "CNI_NETNS: %q does not exist", a.Netns)
		case errors.Is(nerr, netns.ErrNotNetNS):
			return nil, confVersion, Errorf(CodeInvalidEnv, "CNI_NETNS: %q is not a network namespace", a.Netns)
		default:
			return nil, confVersion, Errorf(CodeInvalidEnv, "CNI_NETNS: %v", nerr)
		}
	}

	var res types.Result
	var ferr error
	switch cmd {
	case "ADD":
		res, ferr = p.Add(ctx, env, a)
		if ferr == nil && res == nil {
			ferr = errors.New("plugin returned no result")
		}
	case "DEL":
		ferr = p.Del(ctx, env, a)
	case "CHECK":
		if p.Check != nil {
			ferr = p.Check(ctx, env, a)
		}
	case "GC":
		if p.GC != nil {
			ferr = p.GC(ctx, env, a)
		}
	case "STATUS":
		if p.Status != nil {
			ferr = p.Status(ctx, env, a)
		}
	}
	if ferr != nil {
		return nil, confVersion, ToCNI(ferr)
	}
	if res == nil {
		return nil, confVersion, nil
	}
	conv, cerr := res.GetAsVersion(cv)
	if cerr != nil {
		if cmd == "ADD" {
			// The attachment exists but cannot be reported: undo it, as
			// any other failed ADD leaves nothing behind.
			if derr := p.Del(ctx, env, a); derr != nil && env.Log != nil {
				env.Log.Warn("undo of an ADD whose result could not be converted", "error", derr)
			}
		}
		return nil, confVersion, Errorf(CodeIncompatibleVersion, "convert result to cniVersion %s: %v", cv, cerr)
	}
	b, jerr := json.Marshal(conv)
	if jerr != nil {
		return nil, confVersion, Errorf(CodeInternal, "encode result: %v", jerr)
	}
	return b, confVersion, nil
}

func overridden(v string) bool {
	return v == "1" || strings.EqualFold(v, "true")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ErrorJSON renders err as the specification's error object.
func ErrorJSON(err *types.Error, confVersion string) []byte {
	if confVersion == "" {
		confVersion = version.Current()
	}
	obj := struct {
		CNIVersion string `json:"cniVersion"`
		Code       uint   `json:"code"`
		Msg        string `json:"msg"`
		Details    string `json:"details,omitempty"`
	}{confVersion, err.Code, err.Msg, err.Details}
	b, _ := json.Marshal(obj)
	return b
}
