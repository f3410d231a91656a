package udp

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Config
		wantErr []string
	}{
		{name: "empty", in: ``, want: Config{Offload: DefaultOffload}},
		{name: "type only", in: `{"Type":"udp"}`, want: Config{Offload: DefaultOffload}},
		{name: "port", in: `{"Type":"udp","port":9000}`, want: Config{Port: 9000, Offload: DefaultOffload}},
		{name: "offloads off one by one", in: `{"Type":"udp","Offload":{"UDPGRO":false,"udpgso":false,"Batch":16}}`,
			want: Config{Offload: Offload{VnetHdr: true, TCPGRO: true, Batch: 16, SocketBuffer: DefaultSocketBuffer}}},
		{name: "everything off", in: `{"Offload":{"VnetHdr":false,"TCPGRO":false,"UDPGSO":false,"UDPGRO":false,"Batch":1,"SocketBuffer":0}}`,
			want: Config{Offload: NoOffload}},
		{name: "all problems at once", in: `{"Port":70000,"Offload":{"VnetHdr":false,"Batch":0,"Turbo":true,"UDPGSO":"yes"}}`,
			wantErr: []string{
				"Backend.Port: 70000 is out of range",
				"Backend.Offload.Batch: 0 is out of range 1-1024",
				"Backend.Offload.Turbo: unknown offload",
				"Backend.Offload.UDPGSO: must be true or false",
				"Backend.Offload.TCPGRO: needs VnetHdr",
			}},
		{name: "duplicate key", in: `{"Port":1,"port":2}`, wantErr: []string{"given twice"}},
		{name: "not an object", in: `[]`, wantErr: []string{"Backend:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig(json.RawMessage(tc.in))
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseOffloadSpec(t *testing.T) {
	tests := []struct {
		spec    string
		want    Offload
		wantErr string
	}{
		{spec: "", want: DefaultOffload},
		{spec: "none", want: NoOffload},
		{spec: "none,batch=64", want: Offload{Batch: 64}},
		{spec: "vnethdr=0,tcpgro=0", want: Offload{UDPGSO: true, UDPGRO: true, Batch: DefaultBatch, SocketBuffer: DefaultSocketBuffer}},
		{spec: "none,vnethdr=1,tcpgro=true,Batch=32", want: Offload{VnetHdr: true, TCPGRO: true, Batch: 32}},
		{spec: "vnethdr=0", wantErr: "TCPGRO: needs VnetHdr"},
		{spec: "batch=x", wantErr: "not an integer"},
		{spec: "udpgso", wantErr: "not key=value"},
		{spec: "warp=1", wantErr: "unknown offload"},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseOffloadSpec(tc.spec, DefaultOffload)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestREADMEExamples decodes every ```json block of README.md that is a
// Backend object through ParseConfig.
func TestREADMEExamples(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) < 3 {
		t.Fatalf("%d json blocks in README.md, want at least 3", len(blocks))
	}
	for i, m := range blocks {
		var obj struct{ Backend json.RawMessage }
		if err := json.Unmarshal([]byte(m[1]), &obj); err != nil {
			t.Errorf("block %d: %v", i, err)
			continue
		}
		raw := obj.Backend
		if raw == nil {
			raw = json.RawMessage(m[1]) // a bare Backend object
		}
		if _, err := ParseConfig(raw); err != nil {
			t.Errorf("block %d: %v", i, err)
		}
	}
}
