package subnetenv

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var prefixEq = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *Env
	}{
		{"flanneld vxlan", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
			&Env{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.7.1/24"), MTU: 1450, IPMasq: true}},
		{"flanneld dual stack", "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.3.1/24\nFLANNEL_IPV6_NETWORK=2001:db8:42::/56\nFLANNEL_IPV6_SUBNET=2001:db8:42:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
			&Env{Network: pfx("10.42.0.0/16"), Subnet: pfx("10.42.3.1/24"), IPv6Network: pfx("2001:db8:42::/56"),
				IPv6Subnet: pfx("2001:db8:42:3::1/64"), MTU: 1450}},
		{"IPv6 only", "FLANNEL_IPV6_NETWORK=2001:db8::/48\nFLANNEL_IPV6_SUBNET=2001:db8:0:5::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n",
			&Env{IPv6Network: pfx("2001:db8::/48"), IPv6Subnet: pfx("2001:db8:0:5::1/64"), MTU: 1430, IPMasq: true}},
		{"CRLF", "FLANNEL_NETWORK=10.1.0.0/16\r\nFLANNEL_SUBNET=10.1.17.1/24\r\nFLANNEL_MTU=1500\r\nFLANNEL_IPMASQ=true\r\n",
			&Env{Network: pfx("10.1.0.0/16"), Subnet: pfx("10.1.17.1/24"), MTU: 1500, IPMasq: true}},
		{"comments blanks export quotes", "# written by hand\n\n  export FLANNEL_NETWORK=\"10.1.0.0/16\"\nFLANNEL_SUBNET = '10.1.17.1/24'\n\t# indented comment\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=TRUE",
			&Env{Network: pfx("10.1.0.0/16"), Subnet: pfx("10.1.17.1/24"), MTU: 1500, IPMasq: true}},
		{"network list deduplicated and masked", "FLANNEL_NETWORK=10.1.0.0/16,10.2.0.0/16, 10.1.5.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n",
			&Env{Network: pfx("10.1.0.0/16"), ExtraNetworks: []netip.Prefix{pfx("10.2.0.0/16")}, Subnet: pfx("10.1.17.1/24"), MTU: 1500}},
		{"unknown keys ignored, last value wins", "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.16.1/24\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\nFLANNEL_FUTURE=x\nOTHER=1",
			&Env{Network: pfx("10.1.0.0/16"), Subnet: pfx("10.1.17.1/24"), MTU: 1500}},
		{"empty v6 values are absent", "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_IPV6_NETWORK=\nFLANNEL_IPV6_SUBNET=\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n",
			&Env{Network: pfx("10.1.0.0/16"), Subnet: pfx("10.1.17.1/24"), MTU: 1500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, prefixEq); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// Every problem is reported at once, each naming its key.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty file", "", []string{"FLANNEL_NETWORK (or FLANNEL_IPV6_NETWORK): missing", "FLANNEL_SUBNET (or FLANNEL_IPV6_SUBNET): missing", "FLANNEL_MTU: missing", "FLANNEL_IPMASQ: missing"}},
		{"no mtu, no ipmasq", "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\n", []string{"FLANNEL_MTU: missing", "FLANNEL_IPMASQ: missing"}},
		{"no subnet", "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n", []string{"FLANNEL_SUBNET (or FLANNEL_IPV6_SUBNET): missing"}},
		{"subnet without its network", "FLANNEL_IPV6_NETWORK=2001:db8::/48\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n", []string{"FLANNEL_NETWORK: missing, but FLANNEL_SUBNET is set"}},
		{"bad values", "FLANNEL_NETWORK=10.1.0.0/16,nope\nFLANNEL_SUBNET=10.1.17.1\nFLANNEL_IPV6_NETWORK=10.9.0.0/16\nFLANNEL_IPV6_SUBNET=2001:db8::1/64\nFLANNEL_MTU=big\nFLANNEL_IPMASQ=yes\n",
			[]string{`FLANNEL_NETWORK: "nope" is not a CIDR prefix`, `FLANNEL_SUBNET: "10.1.17.1" is not a CIDR prefix`, "FLANNEL_IPV6_NETWORK: 10.9.0.0/16 is not an IPv6 prefix",
				`FLANNEL_MTU: "big" is not a number`, `FLANNEL_IPMASQ: "yes" is not true or false`}},
		{"mtu range", "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=0\nFLANNEL_IPMASQ=true\n", []string{"FLANNEL_MTU: 0 is outside 68..65535"}},
		{"v6 in the v4 key", "FLANNEL_NETWORK=2001:db8::/48\nFLANNEL_SUBNET=2001:db8::1/64\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n",
			[]string{"FLANNEL_NETWORK: 2001:db8::/48 is not an IPv4 prefix", "FLANNEL_SUBNET: 2001:db8::1/64 is not an IPv4 prefix"}},
		{"garbage line", "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\nhello world\n", []string{`line 5: "hello world" is not KEY=VALUE`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			got := strings.Split(err.Error(), "; ")
			if diff := cmp.Diff(sorted(tt.want), sorted(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestNetworksAndSubnets(t *testing.T) {
	e := &Env{Network: pfx("10.1.0.0/16"), ExtraNetworks: []netip.Prefix{pfx("10.2.0.0/16")}, Subnet: pfx("10.1.17.1/24"),
		IPv6Network: pfx("2001:db8::/48"), IPv6Subnet: pfx("2001:db8:0:5::1/64")}
	if diff := cmp.Diff([]netip.Prefix{pfx("10.1.0.0/16"), pfx("10.2.0.0/16"), pfx("2001:db8::/48")}, e.Networks(), prefixEq); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff([]netip.Prefix{pfx("10.1.17.0/24"), pfx("2001:db8:0:5::/64")}, e.Subnets(), prefixEq); diff != "" {
		t.Error(diff)
	}
}

func TestReadMissing(t *testing.T) {
	_, err := Read(filepath.Join(t.TempDir(), "subnet.env"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want a not-exist error", err)
	}
}

func TestReadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "subnet.env")
	if err := os.WriteFile(p, []byte("FLANNEL_MTU=1500\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Read(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+": ") {
		t.Fatalf("got %v, want an error starting with the path", err)
	}
}

// Write creates the directory, leaves a 0644 file in flanneld's layout and
// no temporary file, and replaces an existing file.
func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "flannel")
	p := filepath.Join(dir, "subnet.env")
	e := &Env{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.7.1/24"), IPv6Network: pfx("2001:db8:244::/56"),
		IPv6Subnet: pfx("2001:db8:244:7::1/64"), MTU: 1450, IPMasq: true}
	if err := Write(p, e); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_IPV6_NETWORK=2001:db8:244::/56\nFLANNEL_IPV6_SUBNET=2001:db8:244:7::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	if diff := cmp.Diff(want, string(data)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for path, mode := range map[string]os.FileMode{p: 0o644, dir: 0o755} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}

	// Replace with an IPv4-only lease: the v6 lines go.
	e2 := &Env{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.9.1/24"), MTU: 1450}
	if err := Write(p, e2); err != nil {
		t.Fatal(err)
	}
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e2, got, prefixEq); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only subnet.env", len(ents))
	}

	// An invalid Env is refused and the file stays as it was.
	if err := Write(p, &Env{Subnet: pfx("10.1.17.1/24")}); err == nil {
		t.Error("Write accepted an Env without network, MTU")
	}
	if again, _ := Read(p); !cmp.Equal(e2, again, prefixEq) {
		t.Error("a refused Write changed the file")
	}
}

// FuzzParse: Parse never panics; whatever it accepts is valid and survives
// Marshal and Parse unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	f.Add([]byte("FLANNEL_NETWORK=10.42.0.0/16,10.43.0.0/16\r\nFLANNEL_SUBNET=10.42.3.1/24\r\nFLANNEL_IPV6_NETWORK=2001:db8:42::/56\r\nFLANNEL_IPV6_SUBNET=2001:db8:42:3::1/64\r\nFLANNEL_MTU=1450\r\nFLANNEL_IPMASQ=false\r\n"))
	f.Add([]byte("# c\nexport FLANNEL_IPV6_NETWORK='2001:db8::/48'\nFLANNEL_IPV6_SUBNET=\"2001:db8::1/64\"\nFLANNEL_MTU=1280\nFLANNEL_IPMASQ=1"))
	f.Add([]byte("=\n==\nFLANNEL_MTU=-1\nFLANNEL_NETWORK=,,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data)
		if err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate rejects: %v\n%q", err, data)
		}
		again, err := Parse(e.Marshal())
		if err != nil {
			t.Fatalf("Marshal output does not parse: %v\n%s", err, e.Marshal())
		}
		if !cmp.Equal(e, again, prefixEq) {
			t.Fatalf("round trip changed the Env:\n%s", cmp.Diff(e, again, prefixEq))
		}
	})
}
