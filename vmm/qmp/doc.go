// Package qmp serves the QEMU Machine Protocol on a unix socket so that
// QMP clients written for QEMU (digitalocean/go-qemu, libvirt-style tools,
// qmp-shell) can query and steer a govmm VM unchanged. It speaks QEMU 7.2's
// dialect: the same greeting, negotiation, error classes and messages,
// reply shapes and event ordering, checked against a real QEMU by
// TestConformanceWithQEMU. The VM itself sits behind the Machine interface.
package qmp
