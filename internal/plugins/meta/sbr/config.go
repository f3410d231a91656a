package sbr

import (
	"bytes"
	"encoding/json"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// wireConf is the configuration as it arrives on stdin.
type wireConf struct {
	types.NetConf
	// Table, when set, is the table the rules point to; routes are then
	// left alone (the reference plugin's "table" option).
	Table json.RawMessage `json:"table,omitempty"`
	// Gateways are static default-route gateways, at most one per family.
	Gateways []string `json:"gateways,omitempty"`
	VRFName  string   `json:"vrfname,omitempty"`
}

// Config is the validated configuration.
type Config struct {
	Network    string
	CNIVersion string
	// Table is the configured table, 0 for "the first free one from
	// FirstTable upward, with the interface's routes".
	Table int
	// Gateway4 and Gateway6 override the gateways of the result for the
	// table's default routes; the zero Addr means none.
	Gateway4, Gateway6 netip.Addr
	PrevResult         *current.Result
}

// Tables the kernel reserves: unspec, default, main, local.
var reservedTables = map[int64]string{0: "unspecified", 253: "default", 254: "main", 255: "local"}

// parseConfig decodes and validates stdin, reporting every problem at once.
func parseConfig(stdin []byte) (*Config, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	if w.VRFName != "" {
		return nil, pluginmain.Errorf(pluginmain.CodeUnsupportedField,
			"vrfname: %q: source-based routing inside a VRF is not supported by linen's sbr (remove the key; the rules then apply in the namespace's default VRF)", w.VRFName)
	}
	c := &Config{Network: w.Name, CNIVersion: w.CNIVersion}
	var table json.Number
	if t := bytes.TrimSpace(w.Table); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
		if t[0] != '-' && (t[0] < '0' || t[0] > '9') || json.Unmarshal(t, &table) != nil {
			return nil, pluginmain.Errorf(pluginmain.CodeDecoding, "table: cannot use JSON %s as a routing table number", compact(t))
		}
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	if table != "" {
		n, err := table.Int64()
		switch {
		case err != nil || n < 1 || n > 1<<32-1:
			fe.Add("table", "%s is not a routing table number (an integer from 1 to 4294967295)", table)
		case reservedTables[n] != "":
			fe.Add("table", "%d is the kernel's %s table; choose another", n, reservedTables[n])
		default:
			c.Table = int(n)
		}
	}
	for i, s := range w.Gateways {
		f := pluginmain.Idx("gateways", i)
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			fe.Add(f, "%q is not an IP address", s)
			continue
		}
		a = a.Unmap()
		switch {
		case a.IsUnspecified() || a.IsMulticast():
			fe.Add(f, "%s cannot be a gateway", a)
		case a.Is4() && c.Gateway4.IsValid():
			fe.Add(f, "a second IPv4 gateway (%s after %s): give at most one per family", a, c.Gateway4)
		case a.Is6() && c.Gateway6.IsValid():
			fe.Add(f, "a second IPv6 gateway (%s after %s): give at most one per family", a, c.Gateway6)
		case a.Is4():
			c.Gateway4 = a
		default:
			c.Gateway6 = a
		}
	}
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

// compact renders a JSON value for a message, shortened.
func compact(v []byte) string {
	s := string(v)
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}
