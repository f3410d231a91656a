package subnet

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKeyRoundTrip(t *testing.T) {
	tests := []struct {
		key    string
		v4, v6 string
	}{
		{"10.5.52.0-24", "10.5.52.0/24", ""},
		{"10.5.52.0-24&fc00::-64", "10.5.52.0/24", "fc00::/64"},
		{"10.5.52.128-25&fc00:0:0:5::-64", "10.5.52.128/25", "fc00:0:0:5::/64"},
		{"fc00:0:0:5::-64", "", "fc00:0:0:5::/64"},
		{"0.0.0.0-0", "0.0.0.0/0", ""},
		{"10.0.0.0-8&2001:db8::-32", "10.0.0.0/8", "2001:db8::/32"},
	}
	for _, tt := range tests {
		var w4, w6 netip.Prefix
		if tt.v4 != "" {
			w4 = pfx(tt.v4)
		}
		if tt.v6 != "" {
			w6 = pfx(tt.v6)
		}
		v4, v6, err := ParseKey(tt.key)
		if err != nil {
			t.Errorf("ParseKey(%q): %v", tt.key, err)
			continue
		}
		if v4 != w4 || v6 != w6 {
			t.Errorf("ParseKey(%q) = %v, %v, want %v, %v", tt.key, v4, v6, w4, w6)
		}
		if got := (Lease{Subnet: w4, IPv6Subnet: w6}).Key(); got != tt.key {
			t.Errorf("Key() = %q, want %q", got, tt.key)
		}
	}
}

func TestParseKeyRejects(t *testing.T) {
	for _, key := range []string{
		"", "&", "10.5.52.0", "10.5.52.0-", "10.5.52.0-33", "10.5.52.1-24", "10.5.52.0-024", "10.5.52.0-+24",
		"010.5.52.0-24", "x10.5.52.0-24", "10.5.52.0-24&", "10.5.52.0-24&fc00::", "10.5.52.0-24&10.6.0.0-24",
		"fc00::-64&10.5.52.0-24", "FC00::-64", "fc00:0::-64", "fc00::1-64", "fc00::-129", "::ffff:10.0.0.0-104",
		"fe80::%eth0-64", "10.5.52.0-24&fc00::-64&fc01::-64", "10.5.52.0-24 ", "10.5.52.0-2-4",
	} {
		if v4, v6, err := ParseKey(key); err == nil {
			t.Errorf("ParseKey(%q) = %v, %v, want an error", key, v4, v6)
		}
	}
}

// FuzzParseKey: a key that parses formats back to itself.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"10.5.52.0-24", "10.5.52.0-24&fc00::-64", "fc00::-64", "1.2.3.4-32", "x", "-", "&-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		v4, v6, err := ParseKey(key)
		if err != nil {
			return
		}
		if got := MakeKey(v4, v6); got != key {
			t.Fatalf("ParseKey(%q) -> MakeKey = %q", key, got)
		}
		if v4.IsValid() && (!v4.Addr().Is4() || v4.Masked() != v4) || v6.IsValid() && (v6.Addr().Is4() || v6.Masked() != v6) {
			t.Fatalf("ParseKey(%q) = %v, %v: not masked subnets of the right family", key, v4, v6)
		}
	})
}

// Golden attrs: the bytes flannel writes (Go's encoding/json over its
// LeaseAttrs struct).
var goldenAttrs = []struct {
	name string
	json string
	want LeaseAttrs
}{
	{
		"vxlan",
		`{"PublicIP":"192.0.2.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`,
		LeaseAttrs{PublicIP: ip("192.0.2.10"), BackendType: "vxlan", BackendData: []byte(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`)},
	},
	{
		"udp (no BackendType)",
		`{"PublicIP":"192.0.2.11","PublicIPv6":null}`,
		LeaseAttrs{PublicIP: ip("192.0.2.11")},
	},
	{
		"host-gw",
		`{"PublicIP":"192.0.2.12","PublicIPv6":null,"BackendType":"host-gw"}`,
		LeaseAttrs{PublicIP: ip("192.0.2.12"), BackendType: "host-gw"},
	},
	{
		"dual-stack vxlan",
		`{"PublicIP":"192.0.2.13","PublicIPv6":"2001:db8::13","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}`,
		LeaseAttrs{PublicIP: ip("192.0.2.13"), PublicIPv6: ip("2001:db8::13"), BackendType: "vxlan",
			BackendData: []byte(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`), BackendV6Data: []byte(`{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}`)},
	},
	{
		"IPv6 only",
		`{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::14","BackendType":"host-gw"}`,
		LeaseAttrs{PublicIPv6: ip("2001:db8::14"), BackendType: "host-gw"},
	},
}

func TestLeaseAttrsGolden(t *testing.T) {
	for _, g := range goldenAttrs {
		t.Run(g.name, func(t *testing.T) {
			var got LeaseAttrs
			if err := json.Unmarshal([]byte(g.json), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(g.want, got, cmpNet); diff != "" {
				t.Errorf("decode (-want +got):\n%s", diff)
			}
			b, err := json.Marshal(g.want)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != g.json {
				t.Errorf("encode:\n got %s\nwant %s", b, g.json)
			}
		})
	}
}

func TestLeaseAttrsDecodeTolerance(t *testing.T) {
	var got LeaseAttrs
	in := `{"publicip":"192.0.2.1", "PublicIPv6": null, "BackendType":"vxlan", "BackendData": { "VNI": 1 }, "Extra": 5, "BackendV6Data": null}`
	if err := json.Unmarshal([]byte(in), &got); err != nil {
		t.Fatal(err)
	}
	want := LeaseAttrs{PublicIP: ip("192.0.2.1"), BackendType: "vxlan", BackendData: []byte(`{"VNI":1}`)}
	if diff := cmp.Diff(want, got, cmpNet); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{`{"PublicIP":"fc00::1"}`, `{"PublicIP":"x"}`, `{"PublicIPv6":"10.0.0.1"}`, `{"PublicIP":5}`, `[]`} {
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("decode %s: want an error", bad)
		}
	}
	if _, err := json.Marshal(LeaseAttrs{PublicIP: ip("fc00::1")}); err == nil {
		t.Error("encode of an IPv6 PublicIP: want an error")
	}
}

// FuzzLeaseAttrs: whatever decodes re-encodes to bytes that decode to the
// same attrs, and encoding is stable.
func FuzzLeaseAttrs(f *testing.F) {
	for _, g := range goldenAttrs {
		f.Add([]byte(g.json))
	}
	f.Add([]byte(`{"PublicIP":null,"BackendData":[1,2]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var a LeaseAttrs
		if err := json.Unmarshal(b, &a); err != nil {
			return
		}
		out, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("re-encode of %q: %v", b, err)
		}
		var a2 LeaseAttrs
		if err := json.Unmarshal(out, &a2); err != nil {
			t.Fatalf("decode of own output %s: %v", out, err)
		}
		out2, err := json.Marshal(a2)
		if err != nil || string(out2) != string(out) {
			t.Fatalf("unstable encoding: %s then %s (%v)", out, out2, err)
		}
		if a2.PublicIP != a.PublicIP || a2.PublicIPv6 != a.PublicIPv6 || a2.BackendType != a.BackendType {
			t.Fatalf("round trip changed %+v into %+v", a, a2)
		}
	})
}
