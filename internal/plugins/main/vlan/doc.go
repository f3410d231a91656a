// Package vlan is the vlan plugin: the pod's interface is an 802.1Q VLAN
// link on a master device of the node, so the pod's traffic leaves the
// master tagged with the configured VLAN id and only frames of that VLAN
// reach the pod.
//
// The link is created directly inside the pod's namespace (package
// sublink). A master carries each VLAN id once: a second pod asking for
// the same id on the same master is refused with an error naming vlanId.
// README.md lists the configuration and every verb.
package vlan
