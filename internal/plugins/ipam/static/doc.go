// Package static is the static IPAM plugin: ADD returns the addresses,
// routes and DNS settings written in the configuration (or requested by the
// runtime through runtimeConfig.ips, args.cni.ips or CNI_ARGS IP and
// GATEWAY). It keeps no state: DEL, GC and STATUS always succeed, and CHECK
// compares the configured addresses with the cached result.
package static
