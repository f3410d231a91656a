package subnet

import (
	"go/build"
	"strings"
	"testing"
)

// TestStandardLibraryOnly keeps etcd, gRPC and everything else out of this
// package: packages linen-cni links may use its types.
func TestStandardLibraryOnly(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
			t.Errorf("package subnet imports %s; only the standard library is allowed", imp)
		}
	}
}
