package static

import (
	"os"
	"regexp"
	"testing"
)

var jsonBlock = regexp.MustCompile("(?s)```json\n(.*?)```")

func readmeExamples(t testing.TB) [][]byte {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range jsonBlock.FindAllSubmatch(b, -1) {
		out = append(out, m[1])
	}
	if len(out) == 0 {
		t.Fatal("README.md has no ```json examples")
	}
	return out
}

func TestReadmeExamples(t *testing.T) {
	for i, ex := range readmeExamples(t) {
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
