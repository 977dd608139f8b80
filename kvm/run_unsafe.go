package kvm

import (
	"sync/atomic"
	"unsafe"
)

// Go has no 8-bit atomics, so kvm_run.immediate_exit (byte 1) is changed
// through the aligned 32-bit word at the start of kvm_run that holds it,
// with an atomic OR or AND that leaves the other bytes
// (request_interrupt_window and padding) alone. On x86 both are LOCKed
// instructions, full barriers. kvm_run is little-endian, like the host.
const immediateExitBits = 0xff << 8

func (r *Run) firstWord() *uint32 { return (*uint32)(unsafe.Pointer(r)) }

func (r *Run) setImmediateExit()   { atomic.OrUint32(r.firstWord(), 1<<8) }
func (r *Run) clearImmediateExit() { atomic.AndUint32(r.firstWord(), ^uint32(immediateExitBits)) }

// The exit union is reinterpreted according to ExitReason; callers must
// only ask for the view that matches it.

// IO returns the port I/O view of the exit union.
func (r *Run) IO() *IOExit { return (*IOExit)(unsafe.Pointer(&r.exit[0])) }

// MMIO returns the MMIO view of the exit union.
func (r *Run) MMIO() *MMIOExit { return (*MMIOExit)(unsafe.Pointer(&r.exit[0])) }

// FailEntry returns the failed-entry view of the exit union.
func (r *Run) FailEntry() *FailEntryExit { return (*FailEntryExit)(unsafe.Pointer(&r.exit[0])) }

// InternalError returns the internal-error view of the exit union.
func (r *Run) InternalError() *InternalErrorExit {
	return (*InternalErrorExit)(unsafe.Pointer(&r.exit[0]))
}

// SystemEvent returns the system-event view of the exit union.
func (r *Run) SystemEvent() *SystemEventExit { return (*SystemEventExit)(unsafe.Pointer(&r.exit[0])) }

// Exception returns the exception view of the exit union.
func (r *Run) Exception() *ExceptionExit { return (*ExceptionExit)(unsafe.Pointer(&r.exit[0])) }
