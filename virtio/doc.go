// Package virtio holds the virtio 1.x device models (blk, net, console,
// rng), the split virtqueue they share, and the PCI transport that puts
// them on the guest's PCI bus. Queue notifications arrive on ioeventfds
// served by a goroutine per device; used-buffer interrupts leave through
// irqfds routed as MSI. Every address, index and length the guest puts in
// a queue is checked: a malformed queue breaks that device, never the VMM.
package virtio
