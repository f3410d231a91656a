package pluginmain

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/go-cmp/cmp"
)

// echo is a plugin that returns a fixed result and records its calls.
func echo(calls *[]string) *Plugin {
	add := func(_ context.Context, _ *Env, a *Args) (types.Result, error) {
		*calls = append(*calls, "ADD")
		return &current.Result{CNIVersion: current.ImplementedSpecVersion}, nil
	}
	rec := func(name string) func(context.Context, *Env, *Args) error {
		return func(context.Context, *Env, *Args) error { *calls = append(*calls, name); return nil }
	}
	return &Plugin{Name: "echo", Add: add, Del: rec("DEL"), Check: rec("CHECK"), GC: rec("GC"), Status: rec("STATUS")}
}

func TestInvokeValidation(t *testing.T) {
	good := `{"cniVersion":"1.1.0","name":"net","type":"echo"}`
	cases := []struct {
		name     string
		a        Args
		code     uint
		want     string
		reachedV bool
	}{
		{"unknown command", Args{Command: "X", StdinData: []byte(good)}, 4, "CNI_COMMAND", false},
		{"missing vars listed", Args{Command: "ADD", StdinData: []byte(good)}, 4, "CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH", false},
		{"bad container id", Args{Command: "DEL", ContainerID: "-x", IfName: "eth0", Path: "/p", StdinData: []byte(good)}, 4, "CNI_CONTAINERID", false},
		{"long ifname", Args{Command: "DEL", ContainerID: "c", IfName: "abcdefghijklmnop", Path: "/p", StdinData: []byte(good)}, 4, "CNI_IFNAME", false},
		{"empty stdin", Args{Command: "STATUS"}, 6, "stdin", false},
		{"array stdin", Args{Command: "STATUS", StdinData: []byte(`[]`)}, 6, "object", false},
		{"no name", Args{Command: "STATUS", StdinData: []byte(`{"cniVersion":"1.1.0"}`)}, 7, "name", false},
		{"version unsupported", Args{Command: "STATUS", StdinData: []byte(`{"cniVersion":"2.0.0","name":"n"}`)}, 1, "cniVersion", false},
		{"status below 1.1.0", Args{Command: "STATUS", StdinData: []byte(`{"cniVersion":"1.0.0","name":"n"}`)}, 1, "STATUS", false},
		{"gc ok", Args{Command: "GC", Path: "/p", StdinData: []byte(good)}, 0, "", true},
		{"del without netns", Args{Command: "DEL", ContainerID: "c", IfName: "eth0", Path: "/p", StdinData: []byte(good)}, 0, "", true},
		{"del with missing netns", Args{Command: "DEL", ContainerID: "c", Netns: "/run/netns/lt-pm-none", IfName: "eth0", Path: "/p", StdinData: []byte(good)}, 0, "", true},
		{"add with missing netns", Args{Command: "ADD", ContainerID: "c", Netns: "/run/netns/lt-pm-none", IfName: "eth0", Path: "/p", StdinData: []byte(good)}, 4, "does not exist", false},
		{"add with a file as netns", Args{Command: "ADD", ContainerID: "c", Netns: "/etc/hostname", IfName: "eth0", Path: "/p", StdinData: []byte(good)}, 4, "not a network namespace", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls []string
			a := tc.a
			_, _, err := Invoke(context.Background(), &Env{}, echo(&calls), &a)
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
			} else {
				if err == nil {
					t.Fatal("no error")
				}
				if err.Code != tc.code || !strings.Contains(err.Msg+err.Details, tc.want) {
					t.Errorf("got code %d %q, want code %d mentioning %q", err.Code, err.Msg, tc.code, tc.want)
				}
			}
			if reached := len(calls) > 0; reached != tc.reachedV {
				t.Errorf("verb reached = %v, want %v", reached, tc.reachedV)
			}
		})
	}
}

func TestVersionOutput(t *testing.T) {
	out, _, err := Invoke(context.Background(), &Env{}, &Plugin{Name: "x"}, &Args{Command: "VERSION"})
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}, v.SupportedVersions); diff != "" {
		t.Error(diff)
	}
}

func TestErrorJSON(t *testing.T) {
	b := ErrorJSON(Errorf(7, "ipam.ranges[0]: bad"), "0.4.0")
	var e map[string]any
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]any{"cniVersion": "0.4.0", "code": 7.0, "msg": "ipam.ranges[0]: bad"}, e); diff != "" {
		t.Error(diff)
	}
}

func TestFieldErrorsAndDecode(t *testing.T) {
	fe := NewFieldErrors(CodeInvalidConfig)
	fe.Add("a.b", "x %d", 1)
	fe.Add("c", "y")
	if got := fe.Err().Error(); !strings.Contains(got, "a.b: x 1; c: y") {
		t.Errorf("got %q", got)
	}
	var v struct {
		MTU  int `json:"mtu"`
		IPAM struct {
			Ranges [][]struct{ Subnet string } `json:"ranges"`
		} `json:"ipam"`
	}
	err := DecodeConf([]byte(`{"ipam":{"ranges":{"x":1}}}`), &v)
	if te := ToCNI(err); te.Code != CodeDecoding || !strings.Contains(te.Msg, "ipam.ranges") {
		t.Errorf("got %v", te)
	}
}

func TestCNIArgs(t *testing.T) {
	got, err := ParseCNIArgs("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.5;;EMPTY=")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(CNIArgs{"IgnoreUnknown": "1", "K8S_POD_NAME": "web", "IP": "10.0.0.5", "EMPTY": ""}, got); diff != "" {
		t.Error(diff)
	}
	for _, bad := range []string{"novalue", "=x", "A=1;junk"} {
		if _, err := ParseCNIArgs(bad); err == nil || !strings.Contains(err.Error(), "CNI_ARGS") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestValidName(t *testing.T) {
	for s, want := range map[string]bool{"a": true, "net-1.x_y": true, "": false, "-a": false, ".a": false, "a/b": false, "a b": false, "ä": false} {
		if validName(s) != want {
			t.Errorf("validName(%q) = %v", s, !want)
		}
	}
}

// FuzzInvoke feeds arbitrary configurations and CNI_ARGS through the
// dispatcher's decoding (the JSON head, version handling, prevResult and
// CNI_ARGS parsing): it must return an error object or a result, never
// panic.
func FuzzInvoke(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","type":"echo"}`), "IgnoreUnknown=1")
	f.Add([]byte(`{"cniVersion":"0.2.0","name":"n","prevResult":{"ip4":{"ip":"10.0.0.2/24"}}}`), "IP=10.0.0.2")
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24","interface":0}]}}`), "")
	f.Add([]byte(`[`), "a;b")
	f.Fuzz(func(t *testing.T, stdin []byte, cniArgs string) {
		p := &Plugin{Name: "fz", Status: func(_ context.Context, _ *Env, a *Args) error {
			var c types.NetConf
			if err := DecodeConf(a.StdinData, &c); err != nil {
				return err
			}
			if _, err := PrevResult(&c); err != nil {
				return err
			}
			_, err := ParseCNIArgs(cniArgs)
			return err
		}}
		_, _, err := Invoke(context.Background(), &Env{}, p, &Args{Command: "STATUS", StdinData: stdin})
		if err != nil && err.Code == 0 {
			t.Fatalf("error without a code: %v", err)
		}
	})
}
