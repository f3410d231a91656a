package runtime

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePortMapping(t *testing.T) {
	tests := []struct {
		in      string
		want    PortMapping
		wantErr string
	}{
		{in: "8080:80", want: PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}},
		{in: "8080:80/udp", want: PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "udp"}},
		{in: "8080:80/SCTP", want: PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "sctp"}},
		{in: "127.0.0.1:8080:80/tcp", want: PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "127.0.0.1"}},
		{in: "[2001:db8::1]:8080:80", want: PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "2001:db8::1"}},
		{in: "[2001:DB8:0::1]:1:65535/udp", want: PortMapping{HostPort: 1, ContainerPort: 65535, Protocol: "udp", HostIP: "2001:db8::1"}},
		{in: "[192.0.2.1]:80:80", want: PortMapping{HostPort: 80, ContainerPort: 80, Protocol: "tcp", HostIP: "192.0.2.1"}},
		{in: "80", wantErr: "want [hostIP:]hostPort:containerPort"},
		{in: "", wantErr: "want [hostIP:]hostPort:containerPort"},
		{in: "1:2:3:4", wantErr: "want [hostIP:]hostPort:containerPort"},
		{in: "2001:db8::1:80:80", wantErr: "want [hostIP:]hostPort:containerPort"},
		{in: "[2001:db8::1]80:80", wantErr: "want [hostIP]:hostPort"},
		{in: "[2001:db8::1:80:80", wantErr: "want [hostIP]:hostPort"},
		{in: "0:80", wantErr: "host port: \"0\" is not a port number"},
		{in: "80:65536", wantErr: "container port: \"65536\" is not a port number"},
		{in: "x:y", wantErr: "host port: \"x\" is not a port number"},
		{in: "80:80/icmp", wantErr: `protocol "icmp"`},
		{in: "host:80:80", wantErr: `host IP "host" is not an IP address`},
		{in: "[fe80::1%eth0]:80:80", wantErr: `host IP "fe80::1%eth0" is not an IP address`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePortMapping(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParsePortMapping(%q) = %+v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePortMapping(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParsePortMapping(%q) (-want +got):\n%s", tc.in, diff)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			// String gives back something that parses to the same mapping.
			again, err := ParsePortMapping(got.String())
			if err != nil || again != got {
				t.Errorf("ParsePortMapping(%q) = %+v, %v; want %+v", got.String(), again, err, got)
			}
		})
	}
}

func TestParsePortMappingAllErrors(t *testing.T) {
	_, err := ParsePortMapping("host:0:0/icmp")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"host IP", "host port", "container port", "protocol"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestParseBandwidth(t *testing.T) {
	tests := []struct {
		in      string
		want    *Bandwidth
		wantErr string
	}{
		{in: "ingress=10M,egress=5M", want: &Bandwidth{IngressRate: 10e6, IngressBurst: DefaultBurst, EgressRate: 5e6, EgressBurst: DefaultBurst}},
		{in: "ingress=1.5G", want: &Bandwidth{IngressRate: 1.5e9, IngressBurst: DefaultBurst}},
		{in: "egress=100k,egress-burst=64Ki", want: &Bandwidth{EgressRate: 100e3, EgressBurst: 64 << 10}},
		{in: " ingress=1Mi , ingress-burst=2Mi", want: &Bandwidth{IngressRate: 1 << 20, IngressBurst: 2 << 20}},
		{in: "ingress=1000", want: &Bandwidth{IngressRate: 1000, IngressBurst: DefaultBurst}},
		{in: "ingress=1T,egress=1K", want: &Bandwidth{IngressRate: 1e12, IngressBurst: DefaultBurst, EgressRate: 1e3, EgressBurst: DefaultBurst}},
		{in: "", wantErr: "want key=value"},
		{in: "ingress", wantErr: "want key=value"},
		{in: "ingress=10m", wantErr: "did you mean M"},
		{in: "ingress=10X", wantErr: `unknown suffix "X"`},
		{in: "ingress=-1M", wantErr: "not a quantity"},
		{in: "ingress=1e6", wantErr: "not a quantity"},
		{in: "ingress=0.5", wantErr: "not a whole number"},
		{in: "ingress=0", wantErr: "must be positive"},
		{in: "ingress=1M,ingress=2M", wantErr: "ingress given twice"},
		{in: "upload=1M", wantErr: `unknown key "upload"`},
		{in: "ingress-burst=1M", wantErr: "ingress-burst without ingress"},
		{in: "egress=1M,egress-burst=40G", wantErr: "exceeds 4 GiB"},
		{in: "ingress=99999999999999999999T", wantErr: "too large"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseBandwidth(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseBandwidth(%q) = %+v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBandwidth(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseBandwidth(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestValidatePodName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"web-1", true},
		{"a", true},
		{"0", true},
		{"web.example", true},
		{strings.Repeat("a", 253), true},
		{strings.Repeat("a", 254), false},
		{"", false},
		{"Web", false},
		{"-web", false},
		{"web-", false},
		{".web", false},
		{"web.", false},
		{"a..b", false},
		{"a/b", false},
		{"a_b", false},
		{"a b", false},
		{"..", false},
		{"a;b", false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%.12s/len%d", tc.name, len(tc.name)), func(t *testing.T) {
			err := ValidatePodName(tc.name)
			if (err == nil) != tc.ok {
				t.Errorf("ValidatePodName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
			}
		})
	}
}

func TestValidateNamespaceAndUID(t *testing.T) {
	for _, ns := range []string{"default", "kube-system", "a"} {
		if err := ValidateNamespace(ns); err != nil {
			t.Errorf("ValidateNamespace(%q): %v", ns, err)
		}
	}
	for _, ns := range []string{"", "a.b", "A", strings.Repeat("a", 64), "a;b"} {
		if err := ValidateNamespace(ns); err == nil {
			t.Errorf("ValidateNamespace(%q) = nil, want an error", ns)
		}
	}
	for _, uid := range []string{newUID(), "uid-1", "A.b_c:d"} {
		if err := ValidateUID(uid); err != nil {
			t.Errorf("ValidateUID(%q): %v", uid, err)
		}
	}
	for _, uid := range []string{"", "a;b", "a=b", "-a", "a b"} {
		if err := ValidateUID(uid); err == nil {
			t.Errorf("ValidateUID(%q) = nil, want an error", uid)
		}
	}
}

func TestCapabilitiesArgs(t *testing.T) {
	if got := (Capabilities{}).Args(); len(got) != 0 {
		t.Errorf("empty capabilities: Args = %v, want no keys", got)
	}
	c := Capabilities{
		PortMappings: []PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}},
		Bandwidth:    &Bandwidth{IngressRate: 1e6, IngressBurst: 1e6},
		IPs:          []string{"10.1.2.3/24"},
		MAC:          "c2:11:22:33:44:55",
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(c.Args())
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"bandwidth":{"ingressRate":1000000,"ingressBurst":1000000},"ips":["10.1.2.3/24"],"mac":"c2:11:22:33:44:55","portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}`
	if string(b) != want {
		t.Errorf("Args JSON\n got %s\nwant %s", b, want)
	}
	bad := Capabilities{
		PortMappings: []PortMapping{{HostPort: 0, ContainerPort: 80, Protocol: "tcp"}},
		Bandwidth:    &Bandwidth{IngressRate: 1},
		IPs:          []string{"10.1.2.3/24", "nope"},
		MAC:          "zz",
	}
	err = bad.Validate()
	if err == nil {
		t.Fatal("Validate accepted bad capabilities")
	}
	for _, want := range []string{"portMappings[0]", "bandwidth", "ips[1]", "mac"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestParseIP(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.1.2.3", "10.1.2.3"},
		{"10.1.2.3/24", "10.1.2.3/24"},
		{"2001:DB8::5", "2001:db8::5"},
		{"2001:db8::5/64", "2001:db8::5/64"},
		{"x", ""},
		{"10.1.2.3/33", ""},
		{"fe80::1%eth0", ""},
	}
	for _, tc := range tests {
		got, err := ParseIP(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseIP(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseIP(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestNewContainerID(t *testing.T) {
	id := NewContainerID()
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("NewContainerID = %q, want 64 hex digits", id)
	}
	if id == NewContainerID() {
		t.Error("two equal container ids")
	}
}
