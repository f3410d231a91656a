package hostgw

import (
	"testing"

	"linen.dev/linen/internal/overlay/backend/backendtest"
)

func BenchmarkSync100(b *testing.B) {
	backendtest.BenchSync(b, newBackend, BackendType, `{"Type":"host-gw"}`)
}
