package firewall

import (
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/nft"
	"linen.dev/linen/internal/plugins/pluginmain"
)

// wireConf is the configuration as it arrives on stdin: the reference
// plugin's keys.
type wireConf struct {
	types.NetConf
	Backend                string `json:"backend,omitempty"`
	IptablesAdminChainName string `json:"iptablesAdminChainName,omitempty"`
	FirewalldZone          string `json:"firewalldZone,omitempty"`
	IngressPolicy          string `json:"ingressPolicy,omitempty"`
	// GC's valid attachments under both keys, telling null from missing
	// (these outrank types.NetConf's field of the same key, which cannot).
	ValidAttachments  pluginmain.GCList `json:"cni.dev/valid-attachments"`
	LegacyAttachments pluginmain.GCList `json:"cni.dev/attachments"`
}

// Config is the validated configuration.
type Config struct {
	Network    string
	CNIVersion string
	Policy     nft.IngressPolicy
	// AdminChain is iptablesAdminChainName, or nft.DefaultAdminChain.
	AdminChain string
	PrevResult *current.Result
	// Valid is cni.dev/valid-attachments (GC); HasValid whether present.
	Valid    pluginmain.Attachments
	HasValid bool
}

// parseConfig decodes and validates stdin, reporting every problem at once.
func parseConfig(stdin []byte) (*Config, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	c := &Config{Network: w.Name, CNIVersion: w.CNIVersion, AdminChain: nft.DefaultAdminChain}
	if w.Backend == "firewalld" {
		return nil, pluginmain.Errorf(pluginmain.CodeUnsupportedField,
			`backend: "firewalld" is not supported: linen programs nftables itself and does not drive firewalld over D-Bus; `+
				`use "nftables" (or "iptables", which means the same here), or put the pod network in a trusted firewalld zone`)
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	switch w.Backend {
	case "", "nftables", "iptables":
	default:
		fe.Add("backend", "%q is not a backend (want \"nftables\" or \"iptables\", both meaning nftables here)", w.Backend)
	}
	if w.IptablesAdminChainName != "" {
		if err := nft.ValidAdminChain(w.IptablesAdminChainName); err != nil {
			fe.Add("iptablesAdminChainName", "%v", err)
		}
		c.AdminChain = w.IptablesAdminChainName
	}
	switch w.IngressPolicy {
	case "", "open":
		c.Policy = nft.IngressOpen
	case "same-bridge":
		c.Policy = nft.IngressSameBridge
	case "isolated":
		c.Policy = nft.IngressIsolated
	default:
		fe.Add("ingressPolicy", "%q is not an ingress policy (want \"open\", \"same-bridge\" or \"isolated\")", w.IngressPolicy)
	}
	c.Valid, c.HasValid = pluginmain.GCAttachments(w.ValidAttachments, w.LegacyAttachments)
	if err := fe.Err(); err != nil {
		return nil, err
	}
	prev, err := pluginmain.PrevResult(&w.NetConf)
	if err != nil {
		return nil, err
	}
	c.PrevResult = prev
	return c, nil
}
