package hostlocal

import (
	"os"
	"testing"

	"linen.dev/linen/internal/netns/nstest"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(crashEnv); spec != "" {
		os.Exit(crashChild(spec))
	}
	nstest.Main(m, "lt-hostlocal-")
}
