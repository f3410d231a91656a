// Package hostdevice is the host-device plugin: it moves a device of the
// node into the pod's network namespace under CNI_IFNAME, addresses it
// through IPAM, and gives it back to the node under its original name on
// DEL.
//
// The device is selected by exactly one of device (name), hwaddr (MAC),
// kernelpath (sysfs device path), pciBusID, or runtimeConfig.deviceID (a
// PCI address or an auxiliary-bus device, as device plugins hand them
// out). A PCI device bound to a userspace driver (vfio-pci, igb_uio,
// uio_pci_generic) has no kernel interface: nothing moves, and the result
// names the device by its PCI address.
//
// # Moving
//
// One RTM_NEWLINK moves the device and names it (see setNS): no temporary
// namespace, no window in which the device sits under a clashing name.
// Before the move, ADD records the device (name, alias, MAC, MTU, up) in a
// state file under dataDir and writes the original name into the device's
// alias (the reference plugin's convention, so either plugin's DEL can give
// it back). DEL moves the device back under the recorded name and restores
// alias, MAC, MTU and up state.
//
// # When the pod's namespace is gone
//
// The kernel does not keep a device in a dead namespace: a physical device
// returns to the initial namespace (under the pod's name for it, or
// "dev<N>" when that is taken), while a virtual device such as a veth is
// destroyed. DEL without the namespace looks for the device on the node by
// its recorded name, or by the alias ADD gave it and its MAC, and restores
// it; when it is nowhere, DEL succeeds and logs a warning naming the
// device, its MAC and the namespace it was in. GC does the same for
// attachments the runtime no longer lists, taking the device out of a
// namespace that still exists.
package hostdevice
