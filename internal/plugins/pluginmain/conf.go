package pluginmain

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// PrevResult parses conf's prevResult (if any) and returns it as a 1.1.0
// result; nil when the configuration carries none.
func PrevResult(conf *types.NetConf) (*current.Result, error) {
	if conf.RawPrevResult == nil {
		return nil, nil
	}
	if err := version.ParsePrevResult(conf); err != nil {
		return nil, Errorf(CodeDecoding, "prevResult: %v", err)
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, Errorf(CodeDecoding, "prevResult: %v", err)
	}
	return res, nil
}

// RawPrevResult parses the prevResult of a configuration whose wire struct
// keeps it raw instead of embedding types.NetConf (IPAM plugins); nil when
// raw is nil.
func RawPrevResult(cniVersion string, raw map[string]any) (*current.Result, error) {
	return PrevResult(&types.NetConf{CNIVersion: cniVersion, RawPrevResult: raw})
}

// CNIArgs is CNI_ARGS parsed: "K1=V1;K2=V2". Keys a plugin does not know are
// ignored (chained plugins share one CNI_ARGS, so strictness helps nobody).
type CNIArgs map[string]string

// ParseCNIArgs parses CNI_ARGS; an entry without '=' is an error naming it.
func ParseCNIArgs(s string) (CNIArgs, error) {
	out := CNIArgs{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, Errorf(CodeInvalidEnv, "CNI_ARGS: entry %q is not KEY=VALUE", kv)
		}
		out[k] = v
	}
	return out, nil
}

// Get returns a value, or "".
func (c CNIArgs) Get(k string) string { return c[k] }

// DecodeConf unmarshals the configuration into v (a plugin's wire struct),
// reporting type errors with the field path (code 6).
func DecodeConf(stdin []byte, v any) error {
	if err := Decode(stdin, v, "stdin"); err != nil {
		return err
	}
	return nil
}

// Field joins a field path: Field("ipam", "ranges[0]") = "ipam.ranges[0]".
func Field(parts ...string) string {
	return strings.Join(parts, ".")
}

// Idx renders an index path element: Idx("ranges", 0, 1) = "ranges[0][1]".
func Idx(name string, idx ...int) string {
	var b strings.Builder
	b.WriteString(name)
	for _, i := range idx {
		fmt.Fprintf(&b, "[%d]", i)
	}
	return b.String()
}

// Attachments is the set of valid attachments a GC request carries.
type Attachments map[[2]string]bool

// Keep reports whether (containerID, ifName) is a valid attachment.
func (v Attachments) Keep(containerID, ifName string) bool {
	return v[[2]string{containerID, ifName}]
}

// GCList is one of a GC configuration's attachment lists. Present says
// whether its key is in the document at all: libcni writes a runtime's
// empty list as null, which is present and empty, while a missing key
// leaves the plugin without any list.
type GCList struct {
	Present bool
	List    []types.GCAttachment
}

// UnmarshalJSON records the key's presence; null is an empty list.
func (l *GCList) UnmarshalJSON(b []byte) error {
	l.Present = true
	return json.Unmarshal(b, &l.List)
}

// GCAttachments merges the valid attachments of a GC configuration's two
// keys (`cni.dev/valid-attachments` and its earlier name) and reports
// whether either key is there at all: an absent list is not an empty one
// to a plugin that would otherwise take every attachment for stale.
func GCAttachments(valid, legacy GCList) (Attachments, bool) {
	if !valid.Present && !legacy.Present {
		return nil, false
	}
	out := Attachments{}
	for _, list := range []GCList{valid, legacy} {
		for _, at := range list.List {
			out[[2]string{at.ContainerID, at.IfName}] = true
		}
	}
	return out, true
}

// GCKeys are the two keys of a GC configuration's valid attachments.
type GCKeys struct {
	ValidAttachments  GCList `json:"cni.dev/valid-attachments"`
	LegacyAttachments GCList `json:"cni.dev/attachments"`
}

// Valid returns the merged list, or a CodeInvalidConfig error naming the
// key when neither key is present: without the list every attachment of
// the network would look stale. An empty (or null) list is valid: the
// runtime has no attachment left, and GC releases everything.
func (k GCKeys) Valid() (Attachments, error) {
	out, ok := GCAttachments(k.ValidAttachments, k.LegacyAttachments)
	if !ok {
		return nil, Errorf(CodeInvalidConfig, "cni.dev/valid-attachments: missing (GC needs the runtime's list of valid attachments, empty if there are none)")
	}
	return out, nil
}

// ValidAttachments reads `cni.dev/valid-attachments` (and the key's earlier
// name `cni.dev/attachments`) from a GC configuration; see GCKeys.Valid.
func ValidAttachments(stdin []byte) (Attachments, error) {
	var k GCKeys
	if err := Decode(stdin, &k, "stdin"); err != nil {
		return nil, err
	}
	return k.Valid()
}

// NetworkName reads the network name of a configuration that does not
// validate, for a DEL that can clean up with the name alone; false when
// even that is missing.
func NetworkName(stdin []byte) (string, bool) {
	var w struct {
		Name string `json:"name"`
	}
	if DecodeConf(stdin, &w) != nil || w.Name == "" {
		return "", false
	}
	return w.Name, true
}

// DelFallback reads what a DEL needs from a configuration that does not
// validate: the network name (which tags netfilter elements) and the IPAM
// type ("" when there is none or it cannot be read); false when not even
// the name is there. A configuration that stopped validating (a stricter
// release, a cached configuration edited by hand) must not keep a pod
// from going.
func DelFallback(stdin []byte) (network, ipamType string, ok bool) {
	network, ok = NetworkName(stdin)
	if !ok {
		return "", "", false
	}
	var w struct {
		IPAM json.RawMessage `json:"ipam"`
	}
	var ipam struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(stdin, &w) == nil && len(w.IPAM) > 0 {
		_ = json.Unmarshal(w.IPAM, &ipam)
	}
	return network, ipam.Type, true
}
