package vxlan

import (
	"testing"

	"linen.dev/linen/internal/overlay/backend/backendtest"
)

func BenchmarkSync100(b *testing.B) {
	backendtest.BenchSync(b, newBackend, BackendType, `{"Type":"vxlan"}`)
}

func BenchmarkSync100DirectRouting(b *testing.B) {
	backendtest.BenchSync(b, newBackend, BackendType, `{"Type":"vxlan","DirectRouting":true}`)
}
