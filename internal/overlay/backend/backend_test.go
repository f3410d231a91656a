package backend

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"linen.dev/linen/internal/overlay/backend/hostgw"
	"linen.dev/linen/internal/overlay/backend/vxlan"
)

func TestRegistry(t *testing.T) {
	var names []string
	for name, ctor := range Registry() {
		names = append(names, name)
		if ctor == nil {
			t.Errorf("%s: nil constructor", name)
		}
	}
	slices.Sort(names)
	if want := []string{"host-gw", "udp", "vxlan"}; !slices.Equal(names, want) {
		t.Errorf("Registry() = %v, want %v", names, want)
	}
}

// TestReadmeExamples decodes every JSON example of README.md through the
// backend's own parser.
func TestReadmeExamples(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(data, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no JSON examples")
	}
	for i, m := range blocks {
		var conf struct {
			Backend json.RawMessage
		}
		if err := json.Unmarshal(m[1], &conf); err != nil {
			t.Errorf("example %d: %v", i, err)
			continue
		}
		var typ struct{ Type string }
		if err := json.Unmarshal(conf.Backend, &typ); err != nil {
			t.Errorf("example %d: Backend: %v", i, err)
			continue
		}
		switch strings.ToLower(typ.Type) {
		case vxlan.BackendType:
			_, err = vxlan.ParseConfig(conf.Backend)
		case hostgw.BackendType:
			err = hostgw.ParseConfig(conf.Backend)
		default:
			t.Errorf("example %d: unknown type %q", i, typ.Type)
		}
		if err != nil {
			t.Errorf("example %d: %v", i, err)
		}
	}
}
