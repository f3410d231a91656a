package pluginmain

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
)

// TestValidAttachments: both keys merge; a null or empty list is a
// present, empty one (libcni writes a runtime's empty list as null); no
// key at all is a configuration error naming the key, not "nothing is
// valid".
func TestValidAttachments(t *testing.T) {
	cases := []struct {
		in   string
		want Attachments
	}{
		{`{"cni.dev/valid-attachments":null,"cni.dev/attachments":null}`, Attachments{}},
		{`{"cni.dev/valid-attachments":[]}`, Attachments{}},
		{`{"cni.dev/attachments":[]}`, Attachments{}},
		{`{"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`, Attachments{{"a", "eth0"}: true}},
		{`{"cni.dev/attachments":[{"containerID":"b","ifname":"eth1"}]}`, Attachments{{"b", "eth1"}: true}},
		{`{"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"b","ifname":"eth1"}]}`,
			Attachments{{"a", "eth0"}: true, {"b", "eth1"}: true}},
	}
	for _, tc := range cases {
		got, err := ValidAttachments([]byte(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if !cmp.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.in, got, tc.want)
		}
		if got.Keep("a", "eth1") {
			t.Errorf("%s: keeps an attachment it does not list", tc.in)
		}
	}
	_, err := ValidAttachments([]byte(`{"name":"n"}`))
	if e := ToCNI(err); err == nil || e.Code != CodeInvalidConfig || !strings.Contains(e.Msg, "cni.dev/valid-attachments") {
		t.Errorf("no list at all: %v, want code %d naming the key", err, CodeInvalidConfig)
	}
	if _, err := ValidAttachments([]byte(`{"cni.dev/valid-attachments":"a"}`)); err == nil {
		t.Error("a list of the wrong type decoded")
	}
}

// TestGCListBesideNetConf: a plugin's wire configuration that embeds
// types.NetConf and declares the keys itself reads them, null included.
func TestGCListBesideNetConf(t *testing.T) {
	var w struct {
		types.NetConf
		ValidAttachments  GCList `json:"cni.dev/valid-attachments"`
		LegacyAttachments GCList `json:"cni.dev/attachments"`
	}
	for in, want := range map[string]bool{
		`{"name":"n","cni.dev/valid-attachments":null}`:                                  true,
		`{"name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`: true,
		`{"name":"n","cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}`:       true,
		`{"name":"n"}`: false,
	} {
		w.ValidAttachments, w.LegacyAttachments = GCList{}, GCList{}
		if err := DecodeConf([]byte(in), &w); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		got, present := GCAttachments(w.ValidAttachments, w.LegacyAttachments)
		if present != want {
			t.Errorf("%s: present %v, want %v", in, present, want)
		}
		if strings.Contains(in, `"a"`) && !got.Keep("a", "eth0") {
			t.Errorf("%s: lost the listed attachment", in)
		}
	}
}

func TestNetworkName(t *testing.T) {
	cases := []struct {
		in   string
		want string
		ok   bool
	}{
		{`{"name":"net1","ingressPolicy":42}`, "net1", true},
		{`{"name":""}`, "", false},
		{`{"type":"portmap"}`, "", false},
		{`{"name":7}`, "", false},
		{`not json`, "", false},
	}
	for _, tc := range cases {
		got, ok := NetworkName([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: got %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRequestedMAC(t *testing.T) {
	fe := NewFieldErrors(7)
	m, field := RequestedMAC(fe, MACSource{"a", ""}, MACSource{"b", "02:00:00:00:00:01"}, MACSource{"c", "zz"})
	if m.String() != "02:00:00:00:00:01" || field != "b" || fe.Len() != 0 {
		t.Errorf("first set source: %v %q %v", m, field, fe.Err())
	}
	for _, bad := range []struct{ value, why string }{
		{"03:00:00:00:00:01", "multicast"},
		{"00:00:00:00:00:00", "all-zero"},
		{"zz", "not an Ethernet MAC"},
		{"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "not an Ethernet MAC"}, // InfiniBand
	} {
		fe := NewFieldErrors(7)
		m, field := RequestedMAC(fe, MACSource{"a", bad.value}, MACSource{"b", "02:00:00:00:00:01"})
		if m != nil || field != "" || fe.Err() == nil || !strings.Contains(fe.Err().Error(), "a: ") || !strings.Contains(fe.Err().Error(), bad.why) {
			t.Errorf("%s: a bad higher source must be an error, not skipped: %v %q %v", bad.value, m, field, fe.Err())
		}
	}
	if m, field := RequestedMAC(NewFieldErrors(7)); m != nil || field != "" {
		t.Errorf("no source: %v %q", m, field)
	}
}

func TestDelFallback(t *testing.T) {
	cases := []struct {
		in, name, ipam string
		ok             bool
	}{
		{`{"name":"n","vlan":5000,"ipam":{"type":"host-local","ranges":"x"}}`, "n", "host-local", true},
		{`{"name":"n","mtu":"1500"}`, "n", "", true},
		{`{"name":"n","ipam":"host-local"}`, "n", "", true},
		{`{"name":"n","ipam":{"type":7}}`, "n", "", true},
		{`{"type":"bridge"}`, "", "", false},
		{`not json`, "", "", false},
	}
	for _, tc := range cases {
		name, ipam, ok := DelFallback([]byte(tc.in))
		if name != tc.name || ipam != tc.ipam || ok != tc.ok {
			t.Errorf("%s: got %q %q %v; want %q %q %v", tc.in, name, ipam, ok, tc.name, tc.ipam, tc.ok)
		}
	}
}
