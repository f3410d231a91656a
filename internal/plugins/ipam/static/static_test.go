package static

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/google/go-cmp/cmp"

	"linen.dev/linen/internal/netns/nstest"
	"linen.dev/linen/internal/plugins/pluginmain"
)

func invoke(cmd, netnsPath, cniArgs, conf string) ([]byte, *types.Error) {
	env := &pluginmain.Env{Stderr: io.Discard, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	a := &pluginmain.Args{
		Command: cmd, ContainerID: "ctr1", Netns: netnsPath, IfName: "eth0",
		Args: cniArgs, Path: "/opt/cni/bin", StdinData: []byte(conf),
	}
	out, _, err := pluginmain.Invoke(context.Background(), env, Plugin(), a)
	return out, err
}

func mustInvoke(t *testing.T, cmd, netnsPath, cniArgs, conf string) []byte {
	t.Helper()
	out, err := invoke(cmd, netnsPath, cniArgs, conf)
	if err != nil {
		t.Fatalf("%s: code %d: %s", cmd, err.Code, err.Msg)
	}
	return out
}

func withPrev(conf string, prev []byte) string {
	return strings.TrimSuffix(strings.TrimSpace(conf), "}") + `,"prevResult":` + string(prev) + "}"
}

func TestRoundTripEveryVersion(t *testing.T) {
	ns := nstest.New(t)
	for _, v := range version.All.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			conf := fmt.Sprintf(`{"cniVersion":%q,"name":"st","type":"macvlan","ipam":{"type":"static",
				"addresses":[{"address":"10.10.0.1/24","gateway":"10.10.0.254"},{"address":"3ffe:ffff:0:01ff::1/64","gateway":"3ffe:ffff:0::1"}],
				"routes":[{"dst":"0.0.0.0/0"},{"dst":"3ffe:ffff:0:01ff::1/64"}],
				"dns":{"nameservers":["8.8.8.8"],"domain":"example.com","search":["example.com"]}}}`, v)
			out := mustInvoke(t, "ADD", ns.Path(), "", conf)
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			dns := map[string]any{"nameservers": []any{"8.8.8.8"}, "domain": "example.com", "search": []any{"example.com"}}
			var want map[string]any
			if multi, _ := version.GreaterThanOrEqualTo(v, "0.3.0"); !multi {
				want = map[string]any{"cniVersion": v,
					"ip4": map[string]any{"ip": "10.10.0.1/24", "gateway": "10.10.0.254", "routes": []any{map[string]any{"dst": "0.0.0.0/0"}}},
					"ip6": map[string]any{"ip": "3ffe:ffff:0:1ff::1/64", "gateway": "3ffe:ffff::1", "routes": []any{map[string]any{"dst": "3ffe:ffff:0:1ff::/64"}}},
					"dns": dns}
			} else {
				ip4 := map[string]any{"address": "10.10.0.1/24", "gateway": "10.10.0.254"}
				ip6 := map[string]any{"address": "3ffe:ffff:0:1ff::1/64", "gateway": "3ffe:ffff::1"}
				if ge, _ := version.GreaterThanOrEqualTo(v, "1.0.0"); !ge {
					ip4["version"], ip6["version"] = "4", "6"
				}
				want = map[string]any{"cniVersion": v, "ips": []any{ip4, ip6},
					"routes": []any{map[string]any{"dst": "0.0.0.0/0"}, map[string]any{"dst": "3ffe:ffff:0:1ff::/64"}},
					"dns":    dns}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ADD result (-want +got):\n%s", diff)
			}
			if ge, _ := version.GreaterThanOrEqualTo(v, "0.4.0"); ge {
				mustInvoke(t, "CHECK", ns.Path(), "", withPrev(conf, out))
			}
			mustInvoke(t, "DEL", ns.Path(), "", conf)
			mustInvoke(t, "DEL", "", "", conf)
			if v == "1.1.0" {
				mustInvoke(t, "GC", "", "", conf)
				mustInvoke(t, "STATUS", "", "", conf)
			}
		})
	}
}

func TestAddOverrides(t *testing.T) {
	ns := nstest.New(t)
	conf := `{"cniVersion":"1.1.0","name":"st","ipam":{"type":"static","addresses":[{"address":"10.10.0.1/24"}]}}`
	out := mustInvoke(t, "ADD", ns.Path(), "IgnoreUnknown=1;IP=10.20.0.7/16;GATEWAY=10.20.0.1", conf)
	if want := `{"cniVersion":"1.1.0","ips":[{"address":"10.20.0.7/16","gateway":"10.20.0.1"}]}`; string(out) != want {
		t.Errorf("ADD with CNI_ARGS = %s, want %s", out, want)
	}
	rc := strings.TrimSuffix(conf, "}") + `,"runtimeConfig":{"ips":["10.30.0.7/24"]}}`
	out = mustInvoke(t, "ADD", ns.Path(), "IP=10.20.0.7/16", rc)
	if want := `{"cniVersion":"1.1.0","ips":[{"address":"10.30.0.7/24"}]}`; string(out) != want {
		t.Errorf("ADD with runtimeConfig.ips = %s, want %s", out, want)
	}
}

func TestCheck(t *testing.T) {
	ns := nstest.New(t)
	conf := `{"cniVersion":"1.1.0","name":"st","ipam":{"type":"static","addresses":[{"address":"10.10.0.1/24","gateway":"10.10.0.254"}]}}`
	tests := []struct {
		name, prev, err string
	}{
		{"match, extra addresses allowed", `{"cniVersion":"1.1.0","ips":[{"address":"10.10.0.1/24","gateway":"10.10.0.254","interface":2},{"address":"192.0.2.1/24"}]}`, ""},
		{"address missing", `{"cniVersion":"1.1.0","ips":[{"address":"10.10.0.2/24","gateway":"10.10.0.254"}]}`, "ipam.addresses[0]: address 10.10.0.1/24 is not in prevResult"},
		{"prefix differs", `{"cniVersion":"1.1.0","ips":[{"address":"10.10.0.1/16","gateway":"10.10.0.254"}]}`, "address 10.10.0.1/24 is not in prevResult"},
		{"gateway differs", `{"cniVersion":"1.1.0","ips":[{"address":"10.10.0.1/24","gateway":"10.10.0.1"}]}`, "has gateway 10.10.0.1 in prevResult, want 10.10.0.254"},
		{"gateway missing", `{"cniVersion":"1.1.0","ips":[{"address":"10.10.0.1/24"}]}`, "want 10.10.0.254"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := invoke("CHECK", ns.Path(), "", withPrev(conf, []byte(tt.prev)))
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("CHECK: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Msg, tt.err)):
				t.Errorf("CHECK = %v, want an error containing %q", err, tt.err)
			}
		})
	}
	if _, err := invoke("CHECK", ns.Path(), "", conf); err == nil || err.Code != 7 || !strings.Contains(err.Msg, "prevResult: missing") {
		t.Errorf("CHECK without prevResult = %v", err)
	}
}

func TestDelNeverFails(t *testing.T) {
	for _, conf := range []string{
		`{"cniVersion":"1.0.0","name":"st","ipam":{"type":"static"}}`,
		`{"cniVersion":"1.0.0","name":"st","ipam":{"type":"static","addresses":[{"address":"bogus"}]}}`,
		`{"cniVersion":"1.0.0","name":"st"}`,
	} {
		if _, err := invoke("DEL", "", "", conf); err != nil {
			t.Errorf("DEL %s: %v", conf, err)
		}
	}
}
