package sublink

import (
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"linen.dev/linen/internal/plugins/pluginmain"
)

// Wire holds the configuration keys every stacked-link plugin reads; a
// plugin's wire struct embeds it and adds its own keys.
type Wire struct {
	types.NetConf
	Master          string `json:"master,omitempty"`
	MTU             int    `json:"mtu,omitempty"`
	LinkInContainer bool   `json:"linkInContainer,omitempty"`
}

// Common is the validated configuration the stacked-link plugins share.
type Common struct {
	Network    string
	CNIVersion string
	// Master names the parent device; "" means the interface of the
	// default route of the master's namespace (or, for a plugin that
	// allows it, the single interface of prevResult).
	Master string
	// MTU of the pod interface, 0 for the master's.
	MTU int
	// LinkInContainer: the master lives in the pod's namespace.
	LinkInContainer bool
	IPAMType        string
	DNS             types.DNS
	PrevResult      *current.Result
}

// Validate checks the shared keys, recording problems in fe, and returns
// the domain values. masterRequired makes a missing master an error.
func (w *Wire) Validate(fe *pluginmain.FieldErrors, masterRequired bool) Common {
	c := Common{
		Network: w.Name, CNIVersion: w.CNIVersion, Master: w.Master, MTU: w.MTU,
		LinkInContainer: w.LinkInContainer, IPAMType: w.IPAM.Type, DNS: w.DNS,
	}
	switch {
	case w.Master == "" && masterRequired:
		fe.Add("master", "missing: name the device the interface is stacked on")
	case w.Master != "":
		if why := pluginmain.ValidateIfName(w.Master); why != "" {
			fe.Add("master", "%q %s", w.Master, why)
		}
	}
	if w.MTU != 0 && (w.MTU < 68 || w.MTU > 65535) {
		fe.Add("mtu", "%d is outside 68..65535", w.MTU)
	}
	return c
}

// Finish turns collected problems into the CNI error, or decodes the
// previous result into c.
func Finish(fe *pluginmain.FieldErrors, w *Wire, c *Common) error {
	if err := fe.Err(); err != nil {
		return err
	}
	prev, err := pluginmain.PrevResult(&w.NetConf)
	if err != nil {
		return err
	}
	c.PrevResult = prev
	return nil
}
