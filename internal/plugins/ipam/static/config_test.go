package static

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"linen.dev/linen/internal/plugins/ipam/hostlocal"
)

func addr(field, prefix, gw string) Address {
	a := Address{Prefix: netip.MustParsePrefix(prefix), Field: field}
	if gw != "" {
		a.Gateway = netip.MustParseAddr(gw)
	}
	return a
}

var netipCmp = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmpopts.IgnoreFields(Config{}, "PrevResult"),
}

func TestParseConfigValid(t *testing.T) {
	tests := []struct {
		name    string
		conf    string
		cniArgs string
		want    *Config
	}{
		{
			name: "configured addresses, routes, dns",
			conf: `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"static",
				"addresses":[{"address":"10.10.0.1/24","gateway":"10.10.0.254"},{"address":"3ffe:ffff:0:01ff::1/64","gateway":"3ffe:ffff:0::1"}],
				"routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.10.5.1"}],
				"dns":{"nameservers":["8.8.8.8"],"domain":"example.com","search":["example.com"]}}}`,
			want: &Config{Network: "n", CNIVersion: "1.0.0",
				Addresses: []Address{
					addr("ipam.addresses[0]", "10.10.0.1/24", "10.10.0.254"),
					addr("ipam.addresses[1]", "3ffe:ffff:0:1ff::1/64", "3ffe:ffff::1"),
				},
				Routes: []hostlocal.Route{{Dst: netip.MustParsePrefix("0.0.0.0/0")}, {Dst: netip.MustParsePrefix("192.168.0.0/16"), GW: netip.MustParseAddr("10.10.5.1")}},
				DNS:    types.DNS{Nameservers: []string{"8.8.8.8"}, Domain: "example.com", Search: []string{"example.com"}},
			},
		},
		{
			name:    "runtimeConfig ips replace everything below them",
			conf:    `{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["10.1.0.5/24","2001:db8::5/64"]},"args":{"cni":{"ips":["10.2.0.5/24"]}},"ipam":{"addresses":[{"address":"10.3.0.5/24"}]}}`,
			cniArgs: "IP=10.4.0.5/24;GATEWAY=10.1.0.1,2001:db8::1",
			want: &Config{Network: "n", CNIVersion: "1.1.0", Addresses: []Address{
				addr("runtimeConfig.ips[0]", "10.1.0.5/24", "10.1.0.1"),
				addr("runtimeConfig.ips[1]", "2001:db8::5/64", "2001:db8::1"),
			}},
		},
		{
			name:    "args beat CNI_ARGS",
			conf:    `{"cniVersion":"1.1.0","name":"n","args":{"cni":{"ips":["10.2.0.5/24"]}},"ipam":{"addresses":[{"address":"10.3.0.5/24"}]}}`,
			cniArgs: "IP=10.4.0.5/24",
			want:    &Config{Network: "n", CNIVersion: "1.1.0", Addresses: []Address{addr("args.cni.ips[0]", "10.2.0.5/24", "")}},
		},
		{
			name:    "CNI_ARGS IP and GATEWAY, comma separated",
			conf:    `{"cniVersion":"0.4.0","name":"n","ipam":{"addresses":[{"address":"10.3.0.5/24"}]}}`,
			cniArgs: "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.4.0.5/24, 10.5.0.5/16;GATEWAY=10.5.0.1",
			want: &Config{Network: "n", CNIVersion: "0.4.0", Addresses: []Address{
				addr("CNI_ARGS IP", "10.4.0.5/24", ""),
				addr("CNI_ARGS IP", "10.5.0.5/16", "10.5.0.1"),
			}},
		},
		{
			name:    "GATEWAY applies to configured addresses too",
			conf:    `{"name":"n","ipam":{"addresses":[{"address":"10.3.0.5/24","gateway":"10.3.0.1"}]}}`,
			cniArgs: "GATEWAY=10.3.0.254",
			want:    &Config{Network: "n", CNIVersion: "0.1.0", Addresses: []Address{addr("ipam.addresses[0]", "10.3.0.5/24", "10.3.0.254")}},
		},
		{
			name: "run directly: the top level is the ipam section",
			conf: `{"cniVersion":"1.0.0","name":"n","type":"static","addresses":[{"address":"10.9.0.1/24"}]}`,
			want: &Config{Network: "n", CNIVersion: "1.0.0", Addresses: []Address{addr("addresses[0]", "10.9.0.1/24", "")}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.conf), tt.cniArgs)
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, netipCmp...); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseConfigInvalid(t *testing.T) {
	tests := []struct {
		name    string
		conf    string
		cniArgs string
		code    uint
		want    []string
	}{
		{"no ipam", `{"cniVersion":"1.0.0","name":"n"}`, "", 7, []string{"ipam: missing"}},
		{"no address", `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"static"}}`, "", 7, []string{"ipam.addresses: no address"}},
		{"wrong type", `{"cniVersion":"1.0.0","name":"n","ipam":{"addresses":[{"address":["x"]}]}}`, "", 6, []string{"ipam.addresses.address"}},
		{"wrong type dns", `{"cniVersion":"1.0.0","name":"n","ipam":{"dns":{"nameservers":"8.8.8.8"},"addresses":[{"address":"10.0.0.1/24"}]}}`, "", 6, []string{"ipam.dns.nameservers"}},
		{
			name: "every problem at once",
			conf: `{"cniVersion":"1.0.0","name":"n","ipam":{"addresses":[
				{"address":"10.0.0.1"},{"gateway":"10.0.0.1"},{"address":"10.0.0.2/24","gateway":"2001:db8::1"},
				{"address":"10.0.0.3/24","gateway":"nope"},{"address":"10.0.0.2/16"}],
				"routes":[{"dst":"10.0.0.0/33"}],"dns":{"nameservers":["dns.example"]}}}`,
			code: 7,
			want: []string{
				`ipam.addresses[0].address: "10.0.0.1" is not an address in CIDR notation`,
				`ipam.addresses[1].address: missing`,
				`ipam.addresses[2].gateway: 2001:db8::1 is IPv6 but the address 10.0.0.2/24 is IPv4`,
				`ipam.addresses[3].gateway: "nope" is not an IP address`,
				`ipam.addresses[4].address: 10.0.0.2/16 repeats the address of ipam.addresses[2]`,
				`ipam.routes[0].dst: "10.0.0.0/33" is not a CIDR`,
				`ipam.dns.nameservers[0]: "dns.example" is not an IP address`,
			},
		},
		{
			name: "two v4 addresses below 0.3.0",
			conf: `{"cniVersion":"0.2.0","name":"n","ipam":{"addresses":[{"address":"10.0.0.1/24"},{"address":"2001:db8::1/64"},{"address":"10.1.0.1/24"}]}}`,
			code: 7,
			want: []string{"ipam.addresses[2]: a second IPv4 address needs cniVersion 0.3.0 or later (this configuration is 0.2.0)"},
		},
		{
			name:    "bad overrides",
			conf:    `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":["10.0.0.1","10.0.0.2/24"]},"ipam":{}}`,
			cniArgs: "GATEWAY=192.0.2.1,x",
			code:    7,
			want: []string{
				`runtimeConfig.ips[0]: "10.0.0.1" is not an address in CIDR notation`,
				`CNI_ARGS GATEWAY: 192.0.2.1 is in none of the addresses' subnets`,
				`CNI_ARGS GATEWAY: "x" is not an IP address`,
			},
		},
		{"run directly, top-level keys", `{"cniVersion":"1.0.0","name":"badnet","type":"static","addresses":[{"address":"10.0.0.1"}]}`, "", 7, []string{`addresses[0].address: "10.0.0.1" is not an address in CIDR notation`}},
		{"delegated without ipam", `{"cniVersion":"1.0.0","name":"n","type":"macvlan","addresses":[{"address":"10.0.0.1/24"}]}`, "", 7, []string{"ipam: missing"}},
		{"bad CNI_ARGS", `{"cniVersion":"1.0.0","name":"n","ipam":{"addresses":[{"address":"10.0.0.1/24"}]}}`, "IP", 4, []string{`CNI_ARGS: entry "IP" is not KEY=VALUE`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.conf), tt.cniArgs)
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("ParseConfig error = %v, want a CNI error", err)
			}
			if te.Code != tt.code {
				t.Errorf("code = %d, want %d (%s)", te.Code, tt.code, te.Msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(te.Msg, w) {
					t.Errorf("message lacks %q:\n%s", w, strings.ReplaceAll(te.Msg, "; ", "\n"))
				}
			}
		})
	}
}
