package subnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
)

// wireAttrs has the shape (field order, tags) of flannel's LeaseAttrs, so
// that encoding/json produces flannel's bytes: PublicIP always (dotted
// quad, "0.0.0.0" when unset), PublicIPv6 always (string or null), the
// rest omitted when empty; raw messages compacted.
type wireAttrs struct {
	PublicIP      string
	PublicIPv6    *string
	BackendType   string          `json:",omitempty"`
	BackendData   json.RawMessage `json:",omitempty"`
	BackendV6Data json.RawMessage `json:",omitempty"`
}

// MarshalJSON encodes the attrs exactly as flannel does, e.g.
// {"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}.
func (a LeaseAttrs) MarshalJSON() ([]byte, error) {
	w := wireAttrs{PublicIP: "0.0.0.0", BackendType: a.BackendType,
		BackendData: nonNull(a.BackendData), BackendV6Data: nonNull(a.BackendV6Data)}
	if a.PublicIP.IsValid() {
		if !a.PublicIP.Is4() {
			return nil, fmt.Errorf("lease attrs: PublicIP %s is not IPv4", a.PublicIP)
		}
		w.PublicIP = a.PublicIP.String()
	}
	if a.PublicIPv6.IsValid() {
		if !a.PublicIPv6.Is6() || a.PublicIPv6.Is4In6() {
			return nil, fmt.Errorf("lease attrs: PublicIPv6 %s is not IPv6", a.PublicIPv6)
		}
		s := a.PublicIPv6.String()
		w.PublicIPv6 = &s
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes flannel's attrs JSON (keys matched
// case-insensitively, unknown keys ignored). "0.0.0.0" and null decode to
// the zero address; a null BackendData to nil.
func (a *LeaseAttrs) UnmarshalJSON(b []byte) error {
	var w struct {
		PublicIP, PublicIPv6       *string
		BackendType                string
		BackendData, BackendV6Data json.RawMessage
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("lease attrs: %w", err)
	}
	var out LeaseAttrs
	if w.PublicIP != nil && *w.PublicIP != "" {
		ip, err := netip.ParseAddr(*w.PublicIP)
		if err != nil || !ip.Is4() {
			return fmt.Errorf("lease attrs: PublicIP %q is not an IPv4 address", *w.PublicIP)
		}
		if !ip.IsUnspecified() {
			out.PublicIP = ip
		}
	}
	if w.PublicIPv6 != nil && *w.PublicIPv6 != "" {
		ip, err := netip.ParseAddr(*w.PublicIPv6)
		if err != nil || !ip.Is6() || ip.Is4In6() || ip.Zone() != "" {
			return fmt.Errorf("lease attrs: PublicIPv6 %q is not an IPv6 address", *w.PublicIPv6)
		}
		if !ip.IsUnspecified() {
			out.PublicIPv6 = ip
		}
	}
	out.BackendType = w.BackendType
	out.BackendData = compactRaw(nonNull(w.BackendData))
	out.BackendV6Data = compactRaw(nonNull(w.BackendV6Data))
	*a = out
	return nil
}

func nonNull(r json.RawMessage) json.RawMessage {
	if len(r) == 0 || string(bytes.TrimSpace(r)) == "null" {
		return nil
	}
	return r
}

func compactRaw(r json.RawMessage) json.RawMessage {
	if r == nil {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, r); err != nil {
		return append(json.RawMessage(nil), r...)
	}
	return buf.Bytes()
}
