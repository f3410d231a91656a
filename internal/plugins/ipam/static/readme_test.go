package static

import (
	"testing"

	"linen.dev/linen/internal/plugins/plugintest"
)

func TestReadmeExamples(t *testing.T) {
	for i, ex := range plugintest.ReadmeExamples(t, "README.md") {
		c, err := ParseConfig(ex, "")
		if err != nil {
			t.Errorf("example %d does not parse: %v\n%s", i, err, ex)
			continue
		}
		if len(c.Addresses) == 0 {
			t.Errorf("example %d yields no address", i)
		}
	}
}
