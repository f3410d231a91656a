package hostgw

import (
	"encoding/json"
	"fmt"
	"strings"
)

// BackendType is the lease attribute BackendType of this backend.
const BackendType = "host-gw"

// ParseConfig checks the Backend object: host-gw has no options, so only
// its JSON shape is checked (unknown keys are ignored, as flannel does).
func ParseConfig(raw json.RawMessage) error {
	if len(strings.TrimSpace(string(raw))) == 0 {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("Backend: %w", err)
	}
	return nil
}
