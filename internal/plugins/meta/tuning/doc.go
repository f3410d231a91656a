// Package tuning is the tuning meta plugin: chained after an interface
// plugin, it sets sysctls of the pod's network namespace and attributes of
// the pod's interface (MAC address, MTU, promiscuous and all-multicast
// mode, transmit queue length), and puts the original values back on DEL.
//
// Sysctls are limited to /proc/sys/net of the pod's namespace; keys are
// checked for path traversal and against the node's allow-list. The
// original values are saved, before anything changes, in a file per
// attachment under dataDir whose attribute fields are those of the
// reference plugin's backup file. See README.md.
package tuning
