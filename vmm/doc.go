// Package vmm assembles a virtual machine from a Config: guest memory and
// its e820 map, the kernel and initrd (Linux boot protocol, through
// vmm/boot), the boot CPU state, the discovery tables for SMP, the devices
// on the I/O buses, and the lifecycle of the vCPUs (run, pause, resume,
// stop). It owns policy; the packages below it own mechanism.
package vmm
