package pluginmain

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
)

func TestGCAttachments(t *testing.T) {
	a := types.GCAttachment{ContainerID: "a", IfName: "eth0"}
	b := types.GCAttachment{ContainerID: "b", IfName: "net1"}
	cases := []struct {
		name          string
		valid, legacy []types.GCAttachment
		want          Attachments
		present       bool
	}{
		{"absent", nil, nil, nil, false},
		{"empty list", []types.GCAttachment{}, nil, Attachments{}, true},
		{"empty legacy list", nil, []types.GCAttachment{}, Attachments{}, true},
		{"valid", []types.GCAttachment{a}, nil, Attachments{{"a", "eth0"}: true}, true},
		{"legacy", nil, []types.GCAttachment{b}, Attachments{{"b", "net1"}: true}, true},
		{"both keys", []types.GCAttachment{a}, []types.GCAttachment{b}, Attachments{{"a", "eth0"}: true, {"b", "net1"}: true}, true},
	}
	for _, tc := range cases {
		got, present := GCAttachments(tc.valid, tc.legacy)
		if present != tc.present || !cmp.Equal(got, tc.want) {
			t.Errorf("%s: got %v, %v; want %v, %v", tc.name, got, present, tc.want, tc.present)
		}
	}
}

func TestValidAttachments(t *testing.T) {
	cases := []struct {
		in   string
		want Attachments
	}{
		{`{"name":"n"}`, Attachments{}},
		{`{"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`, Attachments{{"a", "eth0"}: true}},
		{`{"cni.dev/attachments":[{"containerID":"b","ifname":"eth1"}]}`, Attachments{{"b", "eth1"}: true}},
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
	if _, err := ValidAttachments([]byte(`{"cni.dev/valid-attachments":"a"}`)); err == nil {
		t.Error("a list of the wrong type decoded")
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
