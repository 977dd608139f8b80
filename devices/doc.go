// Package devices holds the address-range buses that route port I/O and
// MMIO exits to emulated devices, and the legacy PC devices a Linux guest
// expects to find: a 16550A UART, the reset registers (i8042, 0xcf9,
// port 0x92), the CMOS RTC, a debug/ready port and silent placeholders
// for probed ports; and the PCI host bridge (configuration mechanism #1)
// whose functions' BARs the guest places on the MMIO bus.
//
// Everything here runs on vCPU threads and must tolerate a hostile guest:
// any offset or access size is accepted without panicking, and accesses
// nobody claims read as all-ones like an empty ISA bus.
package devices
