// Package acpi writes the ACPI tables a Linux guest reads to find its CPUs,
// interrupt controllers and legacy devices, and to power off: an RSDP (v2)
// in the BIOS area, an XSDT, a hardware-reduced FADT whose sleep control,
// sleep status and reset registers are I/O ports served by
// devices.ACPIPM, a MADT, and a DSDT of hand-encoded AML holding \_S5_
// and the devices Linux cannot find without it.
//
// It is pure layout: no KVM, no device emulation. The tables follow
// Firecracker's and cloud-hypervisor's (HW-reduced ACPI, no FACS, no SCI,
// no PM timer), checked against what Linux 6.12 parses.
package acpi
