// Package ipvlan is the ipvlan plugin: the pod's interface is an ipvlan
// link on a master device of the node. Unlike macvlan, every ipvlan of a
// master shares the master's MAC address; the kernel tells the pods apart
// by IP address. Modes l2 (the default), l3 and l3s are offered.
//
// Chained after a plugin whose result names exactly one interface, the
// plugin may omit master (that interface is the master) and ipam (the
// previous result's addresses go onto the ipvlan interface).
//
// The link is created directly inside the pod's namespace (package
// sublink). README.md lists the configuration and every verb.
package ipvlan
