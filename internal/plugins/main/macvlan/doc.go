// Package macvlan is the macvlan plugin: the pod's interface is a macvlan
// link on a master device of the node, with its own MAC address, so the pod
// appears on the master's network as a host of its own.
//
// The link is created directly inside the pod's namespace (see package
// sublink for the steps); modes bridge (the default), private, vepa and
// passthru are offered. In passthru mode the kernel puts the master into
// promiscuous mode while the interface is up and gives the interface the
// master's MAC address. README.md lists the configuration and the
// behaviour of every verb.
package macvlan
