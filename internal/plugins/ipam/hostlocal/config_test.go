package hostlocal

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
)

func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func rng(field, subnet, start, end, gw string) Range {
	return Range{Subnet: mustPrefix(subnet), Start: mustAddr(start), End: mustAddr(end), Gateway: mustAddr(gw), Field: field}
}

func TestParseConfigValid(t *testing.T) {
	intp := func(i int) *int { return &i }
	tests := []struct {
		name    string
		conf    string
		cniArgs string
		want    *Config
	}{
		{
			name: "defaults v4",
			conf: `{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.2.0/24"}]]}}`,
			want: &Config{Network: "n", CNIVersion: "1.0.0", DataDir: DefaultDataDir, Sets: []RangeSet{{
				Field:  "ipam.ranges[0]",
				Ranges: []Range{rng("ipam.ranges[0][0]", "10.1.2.0/24", "10.1.2.1", "10.1.2.254", "10.1.2.1")},
			}}},
		},
		{
			name: "defaults v6 and explicit fields",
			conf: `{"cniVersion":"0.4.0","name":"n","ipam":{"dataDir":"/tmp/x/","ranges":[
				[{"subnet":"2001:db8::/64"}],
				[{"subnet":"10.0.0.0/16","rangeStart":"10.0.1.10","rangeEnd":"10.0.1.20","gateway":"10.0.0.254"},{"subnet":"172.16.5.0/24"}]],
				"routes":[{"dst":"0.0.0.0/0"},{"dst":"3ffe:ffff:0:01ff::1/64","gw":"2001:db8::1","priority":5,"table":100,"scope":0}]}}`,
			want: &Config{Network: "n", CNIVersion: "0.4.0", DataDir: "/tmp/x", Sets: []RangeSet{
				{Field: "ipam.ranges[0]", Ranges: []Range{rng("ipam.ranges[0][0]", "2001:db8::/64", "2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::1")}},
				{Field: "ipam.ranges[1]", Ranges: []Range{
					rng("ipam.ranges[1][0]", "10.0.0.0/16", "10.0.1.10", "10.0.1.20", "10.0.0.254"),
					rng("ipam.ranges[1][1]", "172.16.5.0/24", "172.16.5.1", "172.16.5.254", "172.16.5.1"),
				}},
			}, Routes: []Route{
				{Dst: mustPrefix("0.0.0.0/0")},
				{Dst: mustPrefix("3ffe:ffff:0:1ff::/64"), GW: mustAddr("2001:db8::1"), Priority: 5, Table: intp(100), Scope: intp(0)},
			}},
		},
		{
			name: "runtime ipRanges, then legacy, then ranges",
			conf: `{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ipRanges":[[{"subnet":"10.9.0.0/24"}]]},
				"ipam":{"subnet":"10.8.0.0/24","rangeStart":"10.8.0.100","ranges":[[{"subnet":"2001:db8::/120"}]]}}`,
			want: &Config{Network: "n", CNIVersion: "1.1.0", DataDir: DefaultDataDir, Sets: []RangeSet{
				{Field: "runtimeConfig.ipRanges[0]", Ranges: []Range{rng("runtimeConfig.ipRanges[0][0]", "10.9.0.0/24", "10.9.0.1", "10.9.0.254", "10.9.0.1")}},
				{Field: "ipam.subnet", Ranges: []Range{rng("ipam.subnet", "10.8.0.0/24", "10.8.0.100", "10.8.0.254", "10.8.0.1")}},
				{Field: "ipam.ranges[0]", Ranges: []Range{rng("ipam.ranges[0][0]", "2001:db8::/120", "2001:db8::1", "2001:db8::ff", "2001:db8::1")}},
			}},
		},
		{
			name: "runtimeConfig ips win over args and CNI_ARGS",
			conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":["10.1.0.7/24","2001:db8::7"]},"args":{"cni":{"ips":["10.1.0.8"]}},
				"ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"2001:db8::/64"}]]}}`,
			cniArgs: "IgnoreUnknown=1;IP=10.1.0.9",
			want: &Config{Network: "n", CNIVersion: "1.0.0", DataDir: DefaultDataDir, Sets: []RangeSet{
				{Field: "ipam.ranges[0]", Requested: mustAddr("10.1.0.7"), Ranges: []Range{rng("ipam.ranges[0][0]", "10.1.0.0/24", "10.1.0.1", "10.1.0.254", "10.1.0.1")}},
				{Field: "ipam.ranges[1]", Requested: mustAddr("2001:db8::7"), Ranges: []Range{rng("ipam.ranges[1][0]", "2001:db8::/64", "2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::1")}},
			}},
		},
		{
			name:    "args win over CNI_ARGS",
			conf:    `{"cniVersion":"1.0.0","name":"n","args":{"cni":{"ips":["10.1.0.8"]}},"ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}]]}}`,
			cniArgs: "IP=10.1.0.9",
			want: &Config{Network: "n", CNIVersion: "1.0.0", DataDir: DefaultDataDir, Sets: []RangeSet{
				{Field: "ipam.ranges[0]", Requested: mustAddr("10.1.0.8"), Ranges: []Range{rng("ipam.ranges[0][0]", "10.1.0.0/24", "10.1.0.1", "10.1.0.254", "10.1.0.1")}},
			}},
		},
		{
			name:    "CNI_ARGS IP, comma separated",
			conf:    `{"cniVersion":"0.3.1","name":"n","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}]]}}`,
			cniArgs: "K8S_POD_NAME=x;IP=10.2.0.5, 10.1.0.5/24",
			want: &Config{Network: "n", CNIVersion: "0.3.1", DataDir: DefaultDataDir, Sets: []RangeSet{
				{Field: "ipam.ranges[0]", Requested: mustAddr("10.1.0.5"), Ranges: []Range{rng("ipam.ranges[0][0]", "10.1.0.0/24", "10.1.0.1", "10.1.0.254", "10.1.0.1")}},
				{Field: "ipam.ranges[1]", Requested: mustAddr("10.2.0.5"), Ranges: []Range{rng("ipam.ranges[1][0]", "10.2.0.0/24", "10.2.0.1", "10.2.0.254", "10.2.0.1")}},
			}},
		},
		{
			name: "prevResult addresses",
			conf: `{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}]]},
				"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.3/24","interface":0}],"interfaces":[{"name":"eth0"}]}}`,
			want: &Config{Network: "n", CNIVersion: "1.0.0", DataDir: DefaultDataDir, Sets: []RangeSet{
				{Field: "ipam.ranges[0]", Ranges: []Range{rng("ipam.ranges[0][0]", "10.1.0.0/24", "10.1.0.1", "10.1.0.254", "10.1.0.1")}},
			}, PrevIPs: []netip.Addr{mustAddr("10.1.0.3")}},
		},
		{
			name: "missing cniVersion is 0.1.0 and allows one set per family",
			conf: `{"name":"n","ipam":{"subnet":"10.1.0.0/30","routes":[{"dst":"10.0.0.1/8"}]}}`,
			want: &Config{Network: "n", CNIVersion: "0.1.0", DataDir: DefaultDataDir, Sets: []RangeSet{
				{Field: "ipam.subnet", Ranges: []Range{rng("ipam.subnet", "10.1.0.0/30", "10.1.0.1", "10.1.0.2", "10.1.0.1")}},
			}, Routes: []Route{{Dst: mustPrefix("10.0.0.0/8")}}},
		},
		{
			name: "run directly: the top level is the ipam section",
			conf: `{"cniVersion":"1.0.0","name":"n","type":"host-local","dataDir":"/tmp/d","ranges":[[{"subnet":"10.1.2.0/24"}]]}`,
			want: &Config{Network: "n", CNIVersion: "1.0.0", DataDir: "/tmp/d", Sets: []RangeSet{{
				Field:  "ranges[0]",
				Ranges: []Range{rng("ranges[0][0]", "10.1.2.0/24", "10.1.2.1", "10.1.2.254", "10.1.2.1")},
			}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tt.conf), tt.cniArgs)
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
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
		want    []string // every substring must appear in the message
	}{
		{"no ipam", `{"cniVersion":"1.0.0","name":"n"}`, "", 7, []string{"ipam: missing"}},
		{"no ranges", `{"cniVersion":"1.0.0","name":"n","ipam":{}}`, "", 7, []string{"ipam.ranges: no range set"}},
		{"wrong type subnet", `{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":5}]]}}`, "", 6, []string{"ipam.ranges.subnet", "number"}},
		{"wrong type ranges", `{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":{"a":1}}}`, "", 6, []string{"ipam.ranges"}},
		{"wrong type dataDir", `{"cniVersion":"1.0.0","name":"n","ipam":{"dataDir":1,"ranges":[[{"subnet":"10.0.0.0/24"}]]}}`, "", 6, []string{"ipam.dataDir"}},
		{
			name: "every range problem at once",
			conf: `{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[
				[{"subnet":"10.0.0.0/24"},{"subnet":"bogus"}],
				[{"subnet":"10.1.0.1/24"},{"subnet":"10.2.0.0/31"},{"subnet":"2001:db8::/127"},{}],
				[{"subnet":"10.3.0.0/24","rangeStart":"10.4.0.1","rangeEnd":"10.3.0.300","gateway":"10.5.0.1"}],
				[{"subnet":"10.6.0.0/24","rangeStart":"10.6.0.50","rangeEnd":"10.6.0.40"}],
				[]],
				"routes":[{"dst":"nope"},{"dst":"10.0.0.0/8","gw":"2001:db8::1"},{"gw":"1.2.3.4"}],
				"dataDir":"relative/dir"}}`,
			code: 7,
			want: []string{
				`ipam.ranges[0][1].subnet: "bogus" is not a CIDR`,
				`ipam.ranges[1][0].subnet: 10.1.0.1/24 has host bits set (the network is 10.1.0.0/24)`,
				`ipam.ranges[1][1].subnet: 10.2.0.0/31 is too small to allocate from (needs /30 or shorter)`,
				`ipam.ranges[1][2].subnet: 2001:db8::/127 is too small`,
				`ipam.ranges[1][3].subnet: missing`,
				`ipam.ranges[2][0].rangeStart: 10.4.0.1 is outside the subnet 10.3.0.0/24`,
				`ipam.ranges[2][0].rangeEnd: "10.3.0.300" is not an IP address`,
				`ipam.ranges[2][0].gateway: 10.5.0.1 is outside the subnet 10.3.0.0/24`,
				`ipam.ranges[3][0].rangeEnd: 10.6.0.40 is before rangeStart 10.6.0.50`,
				`ipam.ranges[4]: empty range set`,
				`ipam.routes[0].dst: "nope" is not a CIDR`,
				`ipam.routes[1].gw: 2001:db8::1 is IPv6 but dst 10.0.0.0/8 is IPv4`,
				`ipam.routes[2].dst: missing`,
				`ipam.dataDir: "relative/dir" must be an absolute path`,
			},
		},
		{
			name: "overlap within a set",
			conf: `{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/16"},{"subnet":"10.0.5.0/24"}]]}}`,
			code: 7,
			want: []string{"ipam.ranges[0][1]: 10.0.5.0/24 overlaps ipam.ranges[0][0] 10.0.0.0/16"},
		},
		{
			name: "overlap across sets and with legacy and runtime ranges",
			conf: `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ipRanges":[[{"subnet":"10.0.0.0/24"}]]},
				"ipam":{"subnet":"10.0.0.0/25","ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.200"}]]}}`,
			code: 7,
			want: []string{
				"ipam.subnet: 10.0.0.0/25 overlaps runtimeConfig.ipRanges[0][0] 10.0.0.0/24",
				"ipam.ranges[0][0]: 10.0.0.0/24 (10.0.0.200-10.0.0.254) overlaps runtimeConfig.ipRanges[0][0]",
			},
		},
		{
			name: "disjoint ranges of one subnet are fine but mixed families are not",
			conf: `{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[
				{"subnet":"10.0.0.0/24","rangeEnd":"10.0.0.9"},{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.10"},{"subnet":"2001:db8::/64"}]]}}`,
			code: 7,
			want: []string{"ipam.ranges[0][2].subnet: 2001:db8::/64 is IPv6 but ipam.ranges[0][0] is IPv4"},
		},
		{
			name: "two v4 sets below 0.3.0",
			conf: `{"cniVersion":"0.2.0","name":"n","ipam":{"subnet":"10.9.0.0/24","ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"2001:db8::/64"}],[{"subnet":"2001:db9::/64"}]]}}`,
			code: 7,
			want: []string{
				"ipam.ranges[0]: a second IPv4 range set needs cniVersion 0.3.0 or later (this configuration is 0.2.0)",
				"ipam.ranges[2]: a second IPv6 range set needs cniVersion 0.3.0",
			},
		},
		{
			name:    "requested addresses",
			conf:    `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":["10.0.0.1","10.9.9.9","x","10.0.0.5","10.0.0.6/24","10.1.0.0","10.1.0.255"]},"ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.0","rangeEnd":"10.1.0.255"}]]}}`,
			cniArgs: "IP=10.0.0.7",
			code:    7,
			want: []string{
				"runtimeConfig.ips[0]: requested address 10.0.0.1 is the gateway of ipam.ranges[0][0]",
				"runtimeConfig.ips[1]: requested address 10.9.9.9 is in no configured range",
				`runtimeConfig.ips[2]: "x" is not an IP address`,
				"runtimeConfig.ips[4]: requested address 10.0.0.6 is in range set ipam.ranges[0], which already has the requested address 10.0.0.5",
				"runtimeConfig.ips[5]: requested address 10.1.0.0 is the network or broadcast address of 10.1.0.0/24",
				"runtimeConfig.ips[6]: requested address 10.1.0.255 is the network or broadcast address",
			},
		},
		{"run directly, bad subnet", `{"cniVersion":"1.0.0","name":"n","type":"host-local","ranges":[[{"subnet":"10.0.0.1/24"}]]}`, "", 7, []string{"ranges[0][0].subnet: 10.0.0.1/24 has host bits set"}},
		{"delegated without ipam", `{"cniVersion":"1.0.0","name":"n","type":"bridge","ranges":[[{"subnet":"10.0.0.0/24"}]]}`, "", 7, []string{"ipam: missing"}},
		{"malformed CNI_ARGS", `{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]]}}`, "IP", 4, []string{`CNI_ARGS: entry "IP" is not KEY=VALUE`}},
		{"bad CNI_ARGS IP", `{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]]}}`, "IP=10.0.0.300", 7, []string{`CNI_ARGS IP: "10.0.0.300" is not an IP address`}},
		{"bad prevResult", `{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]]},"prevResult":{"ips":[{"address":"junk"}]}}`, "", 6, []string{"prevResult"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.conf), tt.cniArgs)
			if err == nil {
				t.Fatal("ParseConfig succeeded, want an error")
			}
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("error %v is not a CNI error", err)
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

func TestParseResolvConf(t *testing.T) {
	got := parseResolvConfData([]byte(`# comment
nameserver 192.0.2.53
nameserver 2001:db8::53 ; trailing
domain example.com
search a.example b.example
search c.example d.example
options ndots:5 timeout:1
options rotate
garbage
`))
	want := types.DNS{
		Nameservers: []string{"192.0.2.53", "2001:db8::53"},
		Domain:      "example.com",
		Search:      []string{"c.example", "d.example"},
		Options:     []string{"ndots:5", "timeout:1", "rotate"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dns (-want +got):\n%s", diff)
	}
}
