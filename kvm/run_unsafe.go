package kvm

import "unsafe"

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
