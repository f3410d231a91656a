// Package sbr is the source-based routing meta plugin: chained after an
// interface plugin, it gives the pod interface a routing table of its own
// (its routes and a default route via its gateway) and policy rules
// "from <address> lookup <table>", so that traffic from each of the pod's
// addresses leaves through the interface that address belongs to.
//
// Everything happens inside the pod's network namespace through a netlink
// handle bound to it; the rules and routes carry the routing protocol
// number Protocol, which is how DEL finds them without any other state.
// See README.md for the configuration and the behaviour.
package sbr
