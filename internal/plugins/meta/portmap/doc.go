// Package portmap is the portmap meta plugin: it forwards host ports to a
// pod (the portMappings capability), chained after an interface plugin.
//
// The rules live in internal/nft: one static nftables ruleset, and per pod
// only map and set elements tagged with the attachment, so that ADD and
// DEL are one netlink transaction each, in process, whatever the number of
// pods on the node. See README.md for the configuration and the behaviour.
package portmap
