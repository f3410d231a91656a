package ipcfg

import (
	"net"
	"net/netip"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/go-cmp/cmp"
)

func ipConf(cidr string) *current.IPConfig {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return &current.IPConfig{Address: *n}
}

func TestRoutedAddrs(t *testing.T) {
	mapped := ipConf("10.0.0.9/24")
	mapped.Address.IP = mapped.Address.IP.To16() // IPv4 in its 16-byte form
	ips := []*current.IPConfig{
		ipConf("10.0.0.2/24"),
		nil,
		ipConf("fe80::1/64"),
		ipConf("169.254.1.1/16"),
		ipConf("fd00::2/64"),
		ipConf("10.0.0.2/16"), // the same address again
		mapped,
		{}, // no address at all
	}
	want := []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::2"), netip.MustParseAddr("10.0.0.9")}
	if diff := cmp.Diff(want, RoutedAddrs(ips), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := RoutedAddrs(nil); got != nil {
		t.Errorf("no IPs: got %v", got)
	}
}

func TestSandboxInterface(t *testing.T) {
	idx := func(i int) *int { return &i }
	res := &current.Result{
		Interfaces: []*current.Interface{
			{Name: "eth0"}, // the host side may share the name
			nil,
			{Name: "eth0", Sandbox: "/var/run/netns/a", Mac: "02:00:00:00:00:01"},
			{Name: "net1", Sandbox: "/var/run/netns/a"},
			{Name: "eth0", Sandbox: "/var/run/netns/a", Mac: "02:00:00:00:00:02"},
		},
		IPs: []*current.IPConfig{
			{Interface: idx(2), Address: ipConf("10.0.0.2/24").Address},
			{Interface: idx(3), Address: ipConf("10.1.0.2/24").Address},
			nil, // a null entry in prevResult's ips
			{Address: ipConf("10.2.0.2/24").Address},
		},
	}
	if in := SandboxInterface(res, "eth0"); in == nil || in.Mac != "02:00:00:00:00:01" {
		t.Errorf("eth0: got %+v, want the first sandbox interface of that name", in)
	}
	if in := SandboxInterface(res, "net1"); in != res.Interfaces[3] {
		t.Errorf("net1: got %+v", in)
	}
	if in := SandboxInterface(res, "net2"); in != nil {
		t.Errorf("net2: got %+v, want nil", in)
	}
	if got := IPsFor(res, "eth0"); len(got) != 1 || got[0] != res.IPs[0] {
		t.Errorf("IPsFor eth0: got %v", got)
	}
	// An interface the result does not name gets the IPs without an index.
	if got := IPsFor(res, "net2"); len(got) != 1 || got[0] != res.IPs[3] {
		t.Errorf("IPsFor net2: got %v", got)
	}
}
