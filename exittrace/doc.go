// Package exittrace records a VM's exit timeline and writes it in the
// Chrome trace-event format (ui.perfetto.dev, chrome://tracing): one
// track per vCPU with every exit as a slice and the time in guest between
// them, and tracks of their own for the virtqueue work device goroutines
// do and the interrupts it raises, linked by flow arrows.
//
// Every track is a bounded ring allocated up front: recording an event
// takes no lock and allocates nothing, the oldest events are overwritten
// when a ring is full and counted as dropped. A vCPU's ring has one writer,
// the vCPU thread, which records with plain stores; a device track may
// have several (a queue's interrupts come from its notify goroutine and
// from the device's own), which reserve slots with an atomic add. Readers
// copy the rings while they are written, checking each slot's sequence
// number, so a trace can be written from a running VM.
package exittrace
