package linen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"linen.dev/linen/internal/plugins/pluginmain"
	"linen.dev/linen/internal/subnetenv"
)

// Defaults of the configuration, flannel's.
const (
	DefaultSubnetFile = subnetenv.DefaultPath
	DefaultDataDir    = "/var/lib/cni/flannel"
	DefaultDelegate   = "bridge"
	DefaultIPAM       = "host-local"
	DefaultBridge     = "cni0"
)

// Keys of the GC request that name the valid attachments (current and
// earlier name); forwarded to the delegate as they came.
var attachmentKeys = []string{"cni.dev/valid-attachments", "cni.dev/attachments"}

// Config is the validated configuration. Delegate and IPAM hold the user's
// objects key by key, values verbatim, so that every key the plugin does
// not set reaches the delegate exactly as written.
type Config struct {
	Network      string
	CNIVersion   string
	SubnetFile   string
	DataDir      string
	DelegateType string
	Delegate     map[string]json.RawMessage
	IPAM         map[string]json.RawMessage
	// Routes are ipam.routes as given, and their destinations.
	Routes    []json.RawMessage
	RouteDsts []netip.Prefix
	// RuntimeConfig, Args and PrevResult pass through to the delegate;
	// nil when absent.
	RuntimeConfig json.RawMessage
	Args          json.RawMessage
	PrevResult    json.RawMessage
	// Attachments holds the GC request's attachment lists by key.
	Attachments map[string]json.RawMessage
}

// problems collects every configuration problem with its field path. A
// value of the wrong JSON type makes the error code 6 (decoding), anything
// else 7 (invalid configuration).
type problems struct {
	decoding bool
	list     []string
}

func (p *problems) typ(field, format string, args ...any) {
	p.decoding = true
	p.list = append(p.list, field+": "+fmt.Sprintf(format, args...))
}

func (p *problems) add(field, format string, args ...any) {
	p.list = append(p.list, field+": "+fmt.Sprintf(format, args...))
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	code := uint(pluginmain.CodeInvalidConfig)
	if p.decoding {
		code = pluginmain.CodeDecoding
	}
	return pluginmain.Errorf(code, "%s", strings.Join(p.list, "; "))
}

// jsonKind names the JSON type of a raw value, for messages.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func isNull(raw json.RawMessage) bool {
	return raw == nil || string(bytes.TrimSpace(raw)) == "null"
}

// object decodes raw as a JSON object (nil for null or absent).
func object(p *problems, field string, raw json.RawMessage) map[string]json.RawMessage {
	if isNull(raw) {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		p.typ(field, "must be an object, not %s", jsonKind(raw))
		return nil
	}
	return m
}

// str decodes raw as a JSON string; ok is false when absent or null.
func str(p *problems, field string, raw json.RawMessage) (s string, ok bool) {
	if isNull(raw) {
		return "", false
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		p.typ(field, "must be a string, not %s", jsonKind(raw))
		return "", false
	}
	return s, true
}

// parseConfig decodes and validates stdin, reporting every problem at
// once. It returns a Config even with an error: SubnetFile and DataDir are
// then the configured values where those were usable, else the defaults,
// so that DEL can still find what ADD saved.
func parseConfig(stdin []byte) (*Config, error) {
	c := &Config{SubnetFile: DefaultSubnetFile, DataDir: DefaultDataDir, DelegateType: DefaultDelegate}
	var top map[string]json.RawMessage
	if err := pluginmain.DecodeConf(stdin, &top); err != nil {
		return c, err
	}
	p := &problems{}
	c.Network, _ = str(p, "name", top["name"])
	c.CNIVersion, _ = str(p, "cniVersion", top["cniVersion"])
	for _, f := range []struct {
		key string
		dst *string
	}{{"subnetFile", &c.SubnetFile}, {"dataDir", &c.DataDir}} {
		s, ok := str(p, f.key, top[f.key])
		switch {
		case !ok:
		case s == "":
			// Empty means the default, as in flannel.
		case !filepath.IsAbs(s):
			p.add(f.key, "%q must be an absolute path", s)
		default:
			*f.dst = filepath.Clean(s)
		}
	}

	c.Delegate = object(p, "delegate", top["delegate"])
	if raw, ok := c.Delegate["type"]; ok {
		if s, ok := str(p, "delegate.type", raw); ok {
			switch s {
			case "":
				p.add("delegate.type", "must not be empty (leave it out for %q)", DefaultDelegate)
			case "linen", "flannel":
				p.add("delegate.type", "%q would delegate to this plugin itself", s)
			default:
				c.DelegateType = s
			}
		}
	}
	if _, ok := c.Delegate["name"]; ok {
		p.add("delegate.name", "must not be set: the delegate gets the network's name")
	}
	if _, ok := c.Delegate["ipam"]; ok {
		p.add("delegate.ipam", "must not be set: the plugin builds it from subnet.env and the top-level ipam")
	}
	for _, k := range []string{"isGateway", "ipMasq"} {
		if raw, ok := c.Delegate[k]; ok && !isNull(raw) {
			var b bool
			if json.Unmarshal(raw, &b) != nil {
				p.typ("delegate."+k, "must be a boolean, not %s", jsonKind(raw))
			}
		}
	}
	if raw, ok := c.Delegate["mtu"]; ok && !isNull(raw) {
		var n int
		if json.Unmarshal(raw, &n) != nil {
			p.typ("delegate.mtu", "must be an integer, not %s", jsonKind(raw))
		}
	}
	if raw, ok := c.Delegate["bridge"]; ok {
		str(p, "delegate.bridge", raw)
	}

	c.IPAM = object(p, "ipam", top["ipam"])
	if raw, ok := c.IPAM["type"]; ok {
		if s, ok := str(p, "ipam.type", raw); ok && s == "" {
			p.add("ipam.type", "must not be empty (leave it out for %q)", DefaultIPAM)
		}
	}
	for _, k := range []string{"ranges", "subnet", "rangeStart", "rangeEnd", "gateway"} {
		if _, ok := c.IPAM[k]; ok {
			p.add("ipam."+k, "must not be set: the ranges come from subnet.env (FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET)")
		}
	}
	if raw, ok := c.IPAM["routes"]; ok && !isNull(raw) {
		var routes []json.RawMessage
		if json.Unmarshal(raw, &routes) != nil {
			p.typ("ipam.routes", "must be an array, not %s", jsonKind(raw))
		}
		for i, r := range routes {
			f := pluginmain.Idx("ipam.routes", i)
			m := object(p, f, r)
			if m == nil {
				if isNull(r) {
					p.add(f, "must be an object, not null")
				}
				continue
			}
			dst, ok := str(p, f+".dst", m["dst"])
			if !ok {
				if _, has := m["dst"]; !has || isNull(m["dst"]) {
					p.add(f+".dst", "missing")
				}
				continue
			}
			pfx, err := netip.ParsePrefix(dst)
			if err != nil {
				p.add(f+".dst", "%q is not a CIDR prefix", dst)
				continue
			}
			c.Routes = append(c.Routes, r)
			c.RouteDsts = append(c.RouteDsts, pfx.Masked())
		}
	}

	for _, f := range []struct {
		key string
		dst *json.RawMessage
	}{{"runtimeConfig", &c.RuntimeConfig}, {"args", &c.Args}} {
		if raw := top[f.key]; object(p, f.key, raw) != nil {
			*f.dst = raw
		}
	}
	if raw, ok := top["prevResult"]; ok && !isNull(raw) {
		if object(p, "prevResult", raw) != nil {
			c.PrevResult = raw
		}
	}
	for _, k := range attachmentKeys {
		if raw, ok := top[k]; ok {
			if c.Attachments == nil {
				c.Attachments = map[string]json.RawMessage{}
			}
			c.Attachments[k] = raw
		}
	}
	return c, p.err()
}

// delegateConf builds the delegate's configuration from the node's
// subnet.env. The result is compact JSON with sorted keys.
func (c *Config) delegateConf(env *subnetenv.Env) ([]byte, error) {
	d := make(map[string]json.RawMessage, len(c.Delegate)+8)
	for k, v := range c.Delegate {
		d[k] = v
	}
	set := func(k string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err) // only plain values are set
		}
		d[k] = b
	}
	setDefault := func(k string, v any) {
		if raw, ok := d[k]; !ok || isNull(raw) {
			set(k, v)
		}
	}
	set("name", c.Network)
	if c.CNIVersion != "" {
		set("cniVersion", c.CNIVersion)
	} else {
		delete(d, "cniVersion")
	}
	set("type", c.DelegateType)
	if c.DelegateType == "bridge" {
		setDefault("bridge", DefaultBridge)
		setDefault("isGateway", true)
	}
	setDefault("ipMasq", !env.IPMasq)
	setDefault("mtu", env.MTU)
	// runtimeConfig and args of the request reach the delegate; keys the
	// delegate object sets itself stay unless the request sets them too.
	for k, v := range map[string]json.RawMessage{"runtimeConfig": c.RuntimeConfig, "args": c.Args} {
		if v != nil {
			d[k] = mergeObjects(d[k], v)
		}
	}

	ipam := make(map[string]json.RawMessage, len(c.IPAM)+3)
	for k, v := range c.IPAM {
		ipam[k] = v
	}
	if raw, ok := ipam["type"]; !ok || isNull(raw) {
		ipam["type"] = json.RawMessage(`"` + DefaultIPAM + `"`)
	}
	type rng struct {
		Subnet string `json:"subnet"`
	}
	var ranges [][]rng
	for _, s := range env.Subnets() {
		ranges = append(ranges, []rng{{Subnet: s.String()}})
	}
	rb, err := json.Marshal(ranges)
	if err != nil {
		return nil, err
	}
	ipam["ranges"] = rb

	routes := append([]json.RawMessage(nil), c.Routes...)
	have := map[netip.Prefix]bool{}
	for _, p := range c.RouteDsts {
		have[p] = true
	}
	for _, n := range env.Networks() {
		if have[n] {
			continue
		}
		have[n] = true
		routes = append(routes, json.RawMessage(`{"dst":"`+n.String()+`"}`))
	}
	if len(routes) > 0 {
		b, err := json.Marshal(routes)
		if err != nil {
			return nil, err
		}
		ipam["routes"] = b
	}
	b, err := json.Marshal(ipam)
	if err != nil {
		return nil, err
	}
	d["ipam"] = b
	return json.Marshal(d)
}

// mergeObjects returns the JSON object base with the keys of over set on
// it; when base is not an object, over.
func mergeObjects(base, over json.RawMessage) json.RawMessage {
	var b, o map[string]json.RawMessage
	if json.Unmarshal(base, &b) != nil || b == nil || json.Unmarshal(over, &o) != nil {
		return over
	}
	for k, v := range o {
		b[k] = v
	}
	m, err := json.Marshal(b)
	if err != nil {
		return over
	}
	return m
}
