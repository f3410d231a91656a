package bandwidth

import (
	"testing"

	"linen.dev/linen/internal/netns/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m, "lt-bandwidth-") }
