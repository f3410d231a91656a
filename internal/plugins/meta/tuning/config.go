package tuning

import (
	"fmt"
	"math"
	"net"
	"path/filepath"
	"sort"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// DefaultDataDir holds the saved original values, one file per attachment
// (the reference plugin's directory and file names).
const DefaultDataDir = "/run/cni/tuning"

// knobs are the interface settings, as they arrive in the configuration
// and in args.cni.
type knobs struct {
	SysCtl   map[string]string `json:"sysctl,omitempty"`
	Mac      *string           `json:"mac,omitempty"`
	Promisc  *bool             `json:"promisc,omitempty"`
	Mtu      *int              `json:"mtu,omitempty"`
	Allmulti *bool             `json:"allmulti,omitempty"`
	TxQLen   *int              `json:"txQLen,omitempty"`
}

// wireConf is the configuration as it arrives on stdin.
type wireConf struct {
	types.NetConf
	knobs
	DataDir       string `json:"dataDir,omitempty"`
	RuntimeConfig *struct {
		Mac *string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`
	Args *struct {
		CNI *knobs `json:"cni,omitempty"`
	} `json:"args,omitempty"`
}

// Sysctl is one requested sysctl.
type Sysctl struct {
	key   sysctlKey
	Field string // where it was given, for messages: sysctl["..."]
	Value string
}

// Key is the key as written.
func (s Sysctl) Key() string { return s.key.written }

// Config is the validated configuration.
type Config struct {
	Network    string
	CNIVersion string
	DataDir    string
	// Nil means "leave as is".
	MAC      net.HardwareAddr
	MTU      *int
	Promisc  *bool
	Allmulti *bool
	TxQLen   *int
	Sysctls  []Sysctl // sorted by key as written
	// Where the MAC and the MTU came from, for messages.
	macField, mtuField string
	PrevResult         *current.Result
}

// parseConfig decodes and validates stdin, reporting every problem at
// once. Precedence, highest first: runtimeConfig.mac, args.cni.*, CNI_ARGS
// MAC, the configuration. args.cni.sysctl adds to the configured sysctls,
// replacing a key that both give.
func parseConfig(stdin []byte, cniArgs string) (*Config, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	c := &Config{Network: w.Name, CNIVersion: w.CNIVersion, DataDir: w.DataDir}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	} else if !filepath.IsAbs(c.DataDir) {
		fe.Add("dataDir", "%q is not an absolute path", c.DataDir)
	}

	ca, err := pluginmain.ParseCNIArgs(cniArgs)
	if err != nil {
		return nil, err
	}
	c.MTU, c.Promisc, c.Allmulti, c.TxQLen = w.Mtu, w.Promisc, w.Allmulti, w.TxQLen
	mtuField, txqField := "mtu", "txQLen"
	sysctls := collectSysctls(w.SysCtl, "sysctl", fe)
	if w.Args != nil && w.Args.CNI != nil {
		a := w.Args.CNI
		if a.Mtu != nil {
			c.MTU, mtuField = a.Mtu, "args.cni.mtu"
		}
		if a.Promisc != nil {
			c.Promisc = a.Promisc
		}
		if a.Allmulti != nil {
			c.Allmulti = a.Allmulti
		}
		if a.TxQLen != nil {
			c.TxQLen, txqField = a.TxQLen, "args.cni.txQLen"
		}
		for t, s := range collectSysctls(a.SysCtl, "args.cni.sysctl", fe) {
			sysctls[t] = s
		}
	}
	var macs []pluginmain.MACSource // highest precedence first
	if w.RuntimeConfig != nil && w.RuntimeConfig.Mac != nil {
		macs = append(macs, pluginmain.MACSource{Field: "runtimeConfig.mac", Value: *w.RuntimeConfig.Mac})
	}
	if w.Args != nil && w.Args.CNI != nil && w.Args.CNI.Mac != nil {
		macs = append(macs, pluginmain.MACSource{Field: "args.cni.mac", Value: *w.Args.CNI.Mac})
	}
	macs = append(macs, pluginmain.MACSource{Field: "CNI_ARGS MAC", Value: ca.Get("MAC")})
	if w.Mac != nil {
		macs = append(macs, pluginmain.MACSource{Field: "mac", Value: *w.Mac})
	}
	c.MAC, c.macField = pluginmain.RequestedMAC(fe, macs...)
	if c.MTU != nil && *c.MTU == 0 {
		c.MTU = nil // as in the reference plugin: 0 is "not set"
	}
	c.mtuField = mtuField
	if c.MTU != nil && (*c.MTU < 68 || *c.MTU > 65535) {
		fe.Add(mtuField, "%d is outside 68..65535", *c.MTU)
	}
	if c.TxQLen != nil && (*c.TxQLen < 0 || *c.TxQLen > math.MaxInt32) {
		fe.Add(txqField, "%d is outside 0..%d", *c.TxQLen, math.MaxInt32)
	}
	for _, s := range sysctls {
		c.Sysctls = append(c.Sysctls, s)
	}
	sort.Slice(c.Sysctls, func(i, j int) bool { return c.Sysctls[i].key.written < c.Sysctls[j].key.written })

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

// collectSysctls validates one source's sysctls, keyed by their template
// (the dotted form with the placeholder), so that one key written twice
// ("net.core.somaxconn" and "net/core/somaxconn") is found: with different
// values it is an error.
func collectSysctls(m map[string]string, field string, fe *pluginmain.FieldErrors) map[string]Sysctl {
	out := map[string]Sysctl{}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fmt.Sprintf("%s[%q]", field, k)
		key, why := parseKey(k)
		if why != "" {
			fe.Add(f, "%s", why)
			continue
		}
		v := m[k]
		if why := validValue(v); why != "" {
			fe.Add(f, "value %q %s", v, why)
			continue
		}
		t := key.template()
		if prev, dup := out[t]; dup {
			if normValue(prev.Value) != normValue(v) {
				fe.Add(f, "sets the same sysctl as %s[%q] to a different value (%q, %q)", field, prev.key.written, v, prev.Value)
			}
			continue
		}
		out[t] = Sysctl{key: key, Field: f, Value: v}
	}
	return out
}

// resolved is a sysctl with the interface name put in.
type resolved struct {
	Sysctl
	Path string // relative to /proc/sys
}

// sysctlsFor resolves the sysctls for an interface and checks them against
// the allow-list. Keys that meet only once the interface name is in
// ("net.ipv4.conf.IFNAME.x" and "net.ipv4.conf.eth0.x") must agree.
func (c *Config) sysctlsFor(ifName string, al *allowlist) ([]resolved, error) {
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	seen := map[string]resolved{}
	var out []resolved
	for _, s := range c.Sysctls {
		p := s.key.resolve(ifName)
		if !validPath(p) {
			fe.Add(s.Field, "resolves to %q, outside /proc/sys/net", p)
			continue
		}
		if !al.allows(s.key, ifName) {
			fe.Add(s.Field, "is not allowed by the node's sysctl allow-list %s", al.path)
			continue
		}
		if prev, dup := seen[p]; dup {
			if normValue(prev.Value) != normValue(s.Value) {
				fe.Add(s.Field, "sets %s, as %s does, to a different value (%q, %q)", p, prev.Field, s.Value, prev.Value)
			}
			continue
		}
		r := resolved{Sysctl: s, Path: p}
		seen[p] = r
		out = append(out, r)
	}
	if err := fe.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
