package storetest

import "testing"

// TestMemory: the in-memory store passes the suite (and so the suite does
// not depend on etcd's particulars).
func TestMemory(t *testing.T) {
	Run(t, MemoryHarness)
}
