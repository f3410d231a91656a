package plugintest

import (
	"os"
	"regexp"
	"testing"
)

var jsonBlock = regexp.MustCompile("(?s)```json\n(.*?)```")

// ReadmeExamples returns the ```json blocks of a plugin's README.md; it
// fails the test when there are none.
func ReadmeExamples(t testing.TB, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var out [][]byte
	for _, m := range jsonBlock.FindAllSubmatch(b, -1) {
		out = append(out, m[1])
	}
	if len(out) == 0 {
		t.Fatalf("%s has no JSON examples", path)
	}
	return out
}
