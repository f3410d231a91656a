package bridge

import (
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// DefaultBridge is the bridge used when the configuration names none.
const DefaultBridge = "cni0"

// VlanTrunk is one entry of vlanTrunk: a single id or an inclusive range.
type VlanTrunk struct {
	ID    *int `json:"id,omitempty"`
	MinID *int `json:"minID,omitempty"`
	MaxID *int `json:"maxID,omitempty"`
}

// wireConf is the configuration as it arrives on stdin.
type wireConf struct {
	types.NetConf
	Bridge                    string       `json:"bridge"`
	IsGateway                 bool         `json:"isGateway"`
	IsDefaultGateway          bool         `json:"isDefaultGateway"`
	ForceAddress              bool         `json:"forceAddress"`
	IPMasq                    bool         `json:"ipMasq"`
	IPMasqBackend             string       `json:"ipMasqBackend,omitempty"`
	MTU                       int          `json:"mtu"`
	HairpinMode               bool         `json:"hairpinMode"`
	PromiscMode               bool         `json:"promiscMode"`
	Vlan                      int          `json:"vlan"`
	VlanTrunk                 []*VlanTrunk `json:"vlanTrunk,omitempty"`
	PreserveDefaultVlan       bool         `json:"preserveDefaultVlan"`
	MacSpoofChk               bool         `json:"macspoofchk,omitempty"`
	EnableDad                 bool         `json:"enabledad,omitempty"`
	DisableContainerInterface bool         `json:"disableContainerInterface,omitempty"`
	PortIsolation             bool         `json:"portIsolation,omitempty"`
	MulticastSnooping         *bool        `json:"multicastSnooping,omitempty"`
	pluginmain.WireMAC
}

// Config is the validated configuration.
type Config struct {
	Network          string
	CNIVersion       string
	Bridge           string
	IsGateway        bool
	IsDefaultGateway bool
	ForceAddress     bool
	IPMasq           bool
	MTU              int
	Hairpin          bool
	Promisc          bool
	Vlan             int
	Trunk            []int // explicit trunk VLAN ids, sorted as given
	PreserveDefault  bool
	MacSpoofChk      bool
	EnableDAD        bool
	NoContainerIf    bool
	PortIsolation    bool
	// McastSnooping is multicastSnooping, applied when the plugin
	// creates the bridge (nil: off); an existing bridge keeps its own.
	McastSnooping *bool
	MAC           net.HardwareAddr // requested container MAC, nil for random
	IPAMType      string
	DNS           types.DNS
	PrevResult    *current.Result
}

// parseConfig decodes and validates stdin; every problem is reported at
// once. cniArgs is CNI_ARGS (for MAC).
func parseConfig(stdin []byte, cniArgs string) (*Config, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	c := &Config{
		Network: w.Name, CNIVersion: w.CNIVersion, Bridge: w.Bridge,
		IsGateway: w.IsGateway || w.IsDefaultGateway, IsDefaultGateway: w.IsDefaultGateway,
		ForceAddress: w.ForceAddress, IPMasq: w.IPMasq, MTU: w.MTU,
		Hairpin: w.HairpinMode, Promisc: w.PromiscMode, Vlan: w.Vlan,
		PreserveDefault: w.PreserveDefaultVlan, MacSpoofChk: w.MacSpoofChk,
		EnableDAD: w.EnableDad, NoContainerIf: w.DisableContainerInterface,
		PortIsolation: w.PortIsolation, IPAMType: w.IPAM.Type, DNS: w.DNS,
		McastSnooping: w.MulticastSnooping,
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	fe := pluginmain.NewFieldErrors(pluginmain.CodeInvalidConfig)
	if why := pluginmain.ValidateIfName(c.Bridge); why != "" {
		fe.Add("bridge", "%q %s", c.Bridge, why)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		fe.Add("mtu", "%d is outside 68..65535", c.MTU)
	}
	if c.Vlan < 0 || c.Vlan > 4094 {
		fe.Add("vlan", "%d is outside 0..4094", c.Vlan)
	}
	if c.Hairpin && c.Promisc {
		fe.Add("promiscMode", "cannot be combined with hairpinMode")
	}
	switch strings.ToLower(w.IPMasqBackend) {
	case "", "nftables":
	case "iptables":
		fe.Add("ipMasqBackend", "\"iptables\" is not supported: linen programs nftables over netlink")
	default:
		fe.Add("ipMasqBackend", "%q is not a backend (want \"nftables\")", w.IPMasqBackend)
	}
	seen := map[int]bool{}
	for i, t := range w.VlanTrunk {
		f := pluginmain.Idx("vlanTrunk", i)
		if t == nil {
			fe.Add(f, "empty entry")
			continue
		}
		switch {
		case t.ID != nil && (t.MinID != nil || t.MaxID != nil):
			fe.Add(f, "give either id or minID/maxID, not both")
		case t.ID != nil:
			if *t.ID < 1 || *t.ID > 4094 {
				fe.Add(f+".id", "%d is outside 1..4094", *t.ID)
			} else if !seen[*t.ID] {
				seen[*t.ID] = true
				c.Trunk = append(c.Trunk, *t.ID)
			}
		case t.MinID != nil && t.MaxID != nil:
			lo, hi := *t.MinID, *t.MaxID
			switch {
			case lo < 1 || lo > 4094:
				fe.Add(f+".minID", "%d is outside 1..4094", lo)
			case hi < 1 || hi > 4094:
				fe.Add(f+".maxID", "%d is outside 1..4094", hi)
			case lo > hi:
				fe.Add(f, "minID %d is greater than maxID %d", lo, hi)
			default:
				for v := lo; v <= hi; v++ {
					if !seen[v] {
						seen[v] = true
						c.Trunk = append(c.Trunk, v)
					}
				}
			}
		default:
			fe.Add(f, "needs id, or both minID and maxID")
		}
	}
	if c.NoContainerIf && c.IPAMType != "" {
		fe.Add("ipam.type", "must be empty when disableContainerInterface is set (the container interface stays down)")
	}

	// MAC: runtimeConfig > args > CNI_ARGS.
	ca, err := pluginmain.ParseCNIArgs(cniArgs)
	if err != nil {
		return nil, err
	}
	c.MAC, _ = pluginmain.RequestedMAC(fe, w.Sources(ca, "", "")...)
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

// gcConfig is the part of the configuration GC and STATUS need; it is
// decoded leniently so that GC works with whatever configuration is cached.
type gcConfig struct {
	network  string
	ipamType string
	ipMasq   bool
	spoof    bool
	valid    pluginmain.Attachments // GC only
}

func parseGCConfig(stdin []byte) (*gcConfig, error) {
	var w wireConf
	if err := pluginmain.DecodeConf(stdin, &w); err != nil {
		return nil, err
	}
	return &gcConfig{network: w.Name, ipamType: w.IPAM.Type, ipMasq: w.IPMasq, spoof: w.MacSpoofChk}, nil
}
