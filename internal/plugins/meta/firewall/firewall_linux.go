package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"linen.dev/linen/internal/sysctl"
)

// podBridge returns the host bridge of the attachment: the first host-side
// interface of the previous result (no sandbox) that is a bridge in this
// namespace. The bridge plugin lists its bridge first.
func podBridge(prev *current.Result) (string, error) {
	var seen []string
	for _, in := range prev.Interfaces {
		if in == nil || in.Sandbox != "" || in.Name == "" {
			continue
		}
		l, err := netlink.LinkByName(in.Name)
		if err != nil {
			seen = append(seen, fmt.Sprintf("%q (not found)", in.Name))
			continue
		}
		if l.Type() == "bridge" {
			return in.Name, nil
		}
		seen = append(seen, fmt.Sprintf("%q (%s)", in.Name, l.Type()))
	}
	if len(seen) == 0 {
		return "", errors.New("prevResult.interfaces names no host interface; chain firewall after the bridge plugin")
	}
	return "", fmt.Errorf("no host interface of prevResult.interfaces is a bridge: %s; the policy needs a bridge (chain firewall after the bridge plugin)", strings.Join(seen, ", "))
}

// requireBridgeFilter checks that bridged traffic of the pod's families
// passes the IP hooks (br_netfilter), without which traffic between ports
// of one bridge never meets a rule, and isolation could not be enforced.
func requireBridgeFilter(ips []netip.Addr, bridge string) error {
	var v4, v6 bool
	for _, a := range ips {
		v4 = v4 || a.Is4()
		v6 = v6 || a.Is6()
	}
	for _, k := range []struct {
		want bool
		key  string
	}{{v4, "net.bridge.bridge-nf-call-iptables"}, {v6, "net.bridge.bridge-nf-call-ip6tables"}} {
		if !k.want {
			continue
		}
		v, err := sysctl.Get(k.key)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s does not exist (load br_netfilter): without it traffic between pods of bridge %q passes no IP hook and cannot be isolated", k.key, bridge)
		}
		if err != nil {
			return err
		}
		if v != "1" {
			return fmt.Errorf("%s is %s, not 1: traffic between pods of bridge %q passes no IP hook and cannot be isolated", k.key, v, bridge)
		}
	}
	return nil
}
