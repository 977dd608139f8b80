package kvm

import (
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VCPU is a KVM vCPU file descriptor and its kvm_run mapping.
type VCPU struct {
	fd     int
	ID     int
	runMem []byte // the whole mapping: the I/O data area lies past Run
	// Run is the shared kvm_run page. Only the vCPU's own thread touches it
	// while KVM_RUN can be in progress, except immediate_exit, which any
	// goroutine may set with RequestImmediateExit.
	Run *Run

	// unmapMu orders RequestImmediateExit, which any goroutine may call
	// at any time, against Close's munmap: a kick after Close is a no-op,
	// never a write to an unmapped page.
	unmapMu sync.Mutex
	closed  bool // Close has run (unmapMu)
}

// Close unmaps kvm_run and closes the vCPU fd. The vCPU's thread must have
// left RunOnce for good; RequestImmediateExit may race with Close.
func (v *VCPU) Close() error {
	v.unmapMu.Lock()
	defer v.unmapMu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	if v.runMem != nil {
		unix.Munmap(v.runMem)
		v.runMem, v.Run = nil, nil
	}
	return unix.Close(v.fd)
}

// RequestImmediateExit sets kvm_run.immediate_exit, so that the next
// KVM_RUN returns EINTR at once instead of entering the guest. It is safe
// from any goroutine, also during or after Close. It does not interrupt a
// KVM_RUN in progress: that takes a signal to the vCPU thread.
//
// The atomic OR is a full barrier: paired with ClearImmediateExit's, also a
// full barrier, a caller that publishes a request before calling this, and
// a vCPU thread that clears the flag before it reads requests, cannot both
// miss each other (see vcpu.VCPU.request).
func (v *VCPU) RequestImmediateExit() {
	v.unmapMu.Lock()
	if v.Run != nil {
		v.Run.setImmediateExit()
	}
	v.unmapMu.Unlock()
}

// ClearImmediateExit clears kvm_run.immediate_exit with a full barrier:
// loads that follow it (the vCPU's pending requests) cannot be reordered
// before it. Only the vCPU's own thread calls it, between runs.
func (v *VCPU) ClearImmediateExit() { v.Run.clearImmediateExit() }

// RunOnce enters the guest once (KVM_RUN). It returns unix.EINTR when a
// signal or ImmediateExit ended the run before an exit, and does not retry.
func (v *VCPU) RunOnce() error {
	_, err := ioctl(v.fd, reqRun, 0)
	return err
}

// IOData returns the data area of the current KVM_EXIT_IO exit: Count
// items of Size bytes, checked against the mapping so a bad offset can
// never reach outside it.
func (v *VCPU) IOData() ([]byte, error) {
	io := v.Run.IO()
	n := uint64(io.Size) * uint64(io.Count)
	if io.DataOffset > uint64(len(v.runMem)) || n > uint64(len(v.runMem))-io.DataOffset {
		return nil, fmt.Errorf("vCPU %d: I/O data at %#x+%d outside kvm_run (%d bytes)", v.ID, io.DataOffset, n, len(v.runMem))
	}
	return v.runMem[io.DataOffset : io.DataOffset+n], nil
}

// TSCKHz is the frequency of the vCPU's TSC in kHz (KVM_GET_TSC_KHZ):
// the host's TSC rate unless user space set another.
func (v *VCPU) TSCKHz() (uint32, error) {
	khz, err := ioctl(v.fd, reqGetTSCKHz, 0)
	return uint32(khz), wrap(err, "KVM_GET_TSC_KHZ", v.ID)
}

// GetRegs reads the general registers with an ioctl.
func (v *VCPU) GetRegs() (Regs, error) {
	var r Regs
	_, err := ioctlPtr(v.fd, reqGetRegs, unsafe.Pointer(&r))
	return r, wrap(err, "KVM_GET_REGS", v.ID)
}

// SetRegs writes the general registers with an ioctl.
func (v *VCPU) SetRegs(r Regs) error {
	_, err := ioctlPtr(v.fd, reqSetRegs, unsafe.Pointer(&r))
	return wrap(err, "KVM_SET_REGS", v.ID)
}

// GetSregs reads the segment and control registers.
func (v *VCPU) GetSregs() (Sregs, error) {
	var s Sregs
	_, err := ioctlPtr(v.fd, reqGetSregs, unsafe.Pointer(&s))
	return s, wrap(err, "KVM_GET_SREGS", v.ID)
}

// SetSregs writes the segment and control registers.
func (v *VCPU) SetSregs(s Sregs) error {
	_, err := ioctlPtr(v.fd, reqSetSregs, unsafe.Pointer(&s))
	return wrap(err, "KVM_SET_SREGS", v.ID)
}

// GetFPU reads the legacy FPU/SSE state.
func (v *VCPU) GetFPU() (FPU, error) {
	var f FPU
	_, err := ioctlPtr(v.fd, reqGetFPU, unsafe.Pointer(&f))
	return f, wrap(err, "KVM_GET_FPU", v.ID)
}

// SetFPU writes the legacy FPU/SSE state.
func (v *VCPU) SetFPU(f FPU) error {
	_, err := ioctlPtr(v.fd, reqSetFPU, unsafe.Pointer(&f))
	return wrap(err, "KVM_SET_FPU", v.ID)
}

// SetCPUID sets the CPUID table the guest sees on this vCPU.
func (v *VCPU) SetCPUID(entries []CPUIDEntry) error {
	if len(entries) > maxCPUIDEntries {
		return fmt.Errorf("KVM_SET_CPUID2 on vCPU %d: %d entries, at most %d", v.ID, len(entries), maxCPUIDEntries)
	}
	c := &cpuid2{NEnt: uint32(len(entries))}
	copy(c.Entries[:], entries)
	_, err := ioctlPtr(v.fd, reqSetCPUID2, unsafe.Pointer(c))
	return wrap(err, "KVM_SET_CPUID2", v.ID)
}

// GetLAPIC reads the local APIC register page.
func (v *VCPU) GetLAPIC() (LAPICState, error) {
	var l LAPICState
	_, err := ioctlPtr(v.fd, reqGetLAPIC, unsafe.Pointer(&l))
	return l, wrap(err, "KVM_GET_LAPIC", v.ID)
}

// SetLAPIC writes the local APIC register page.
func (v *VCPU) SetLAPIC(l LAPICState) error {
	_, err := ioctlPtr(v.fd, reqSetLAPIC, unsafe.Pointer(&l))
	return wrap(err, "KVM_SET_LAPIC", v.ID)
}

// SetMSRs writes MSRs; KVM stops at the first one it refuses, which is an
// error naming that MSR.
func (v *VCPU) SetMSRs(entries []MSR) error {
	return v.allMSRs(reqSetMSRs, "KVM_SET_MSRS", entries, false)
}

// GetMSRs reads the MSRs named by the Index fields of entries.
func (v *VCPU) GetMSRs(entries []MSR) error {
	return v.allMSRs(reqGetMSRs, "KVM_GET_MSRS", entries, true)
}

func (v *VCPU) allMSRs(req uintptr, what string, entries []MSR, read bool) error {
	if len(entries) > maxMSRs {
		return fmt.Errorf("%s on vCPU %d: %d entries, at most %d", what, v.ID, len(entries), maxMSRs)
	}
	n, err := v.msrIO(req, what, entries, read)
	if err != nil {
		return err
	}
	if n != len(entries) {
		return fmt.Errorf("%s on vCPU %d: MSR %#x refused", what, v.ID, entries[n].Index)
	}
	return nil
}

// GetVCPUEvents reads pending exceptions, interrupts and NMIs.
func (v *VCPU) GetVCPUEvents() (VCPUEvents, error) {
	var e VCPUEvents
	_, err := ioctlPtr(v.fd, reqGetVCPUEvents, unsafe.Pointer(&e))
	return e, wrap(err, "KVM_GET_VCPU_EVENTS", v.ID)
}

// MPState returns the vCPU's multiprocessing state (MPState*). Like every
// vCPU ioctl it waits while another thread is inside KVM_RUN.
func (v *VCPU) MPState() (uint32, error) {
	var s uint32
	_, err := ioctlPtr(v.fd, reqGetMPState, unsafe.Pointer(&s))
	return s, wrap(err, "KVM_GET_MP_STATE", v.ID)
}

// SetMPState sets the vCPU's multiprocessing state (KVM_MP_STATE_*).
func (v *VCPU) SetMPState(s uint32) error {
	_, err := ioctlPtr(v.fd, reqSetMPState, unsafe.Pointer(&s))
	return wrap(err, "KVM_SET_MP_STATE", v.ID)
}

// SetVCPUEvents writes pending exceptions, interrupts and NMIs.
func (v *VCPU) SetVCPUEvents(e VCPUEvents) error {
	_, err := ioctlPtr(v.fd, reqSetVCPUEvents, unsafe.Pointer(&e))
	return wrap(err, "KVM_SET_VCPU_EVENTS", v.ID)
}

// GetXSave reads the XSAVE area (KVM_CAP_XSAVE): every FPU and vector
// register state component, AVX's upper halves included, which
// KVM_GET_FPU leaves out.
func (v *VCPU) GetXSave() (*XSave, error) {
	x := new(XSave)
	_, err := ioctlPtr(v.fd, reqGetXSave, unsafe.Pointer(x))
	return x, wrap(err, "KVM_GET_XSAVE", v.ID)
}

// SetXSave writes the XSAVE area.
func (v *VCPU) SetXSave(x *XSave) error {
	_, err := ioctlPtr(v.fd, reqSetXSave, unsafe.Pointer(x))
	return wrap(err, "KVM_SET_XSAVE", v.ID)
}

// GetXCRs reads the extended control registers (KVM_CAP_XCRS).
func (v *VCPU) GetXCRs() (XCRs, error) {
	var x XCRs
	_, err := ioctlPtr(v.fd, reqGetXCRs, unsafe.Pointer(&x))
	return x, wrap(err, "KVM_GET_XCRS", v.ID)
}

// SetXCRs writes the extended control registers.
func (v *VCPU) SetXCRs(x XCRs) error {
	_, err := ioctlPtr(v.fd, reqSetXCRs, unsafe.Pointer(&x))
	return wrap(err, "KVM_SET_XCRS", v.ID)
}

// GetDebugRegs reads the debug registers (KVM_CAP_DEBUGREGS).
func (v *VCPU) GetDebugRegs() (DebugRegs, error) {
	var d DebugRegs
	_, err := ioctlPtr(v.fd, reqGetDebugRegs, unsafe.Pointer(&d))
	return d, wrap(err, "KVM_GET_DEBUGREGS", v.ID)
}

// SetDebugRegs writes the debug registers.
func (v *VCPU) SetDebugRegs(d DebugRegs) error {
	_, err := ioctlPtr(v.fd, reqSetDebugRegs, unsafe.Pointer(&d))
	return wrap(err, "KVM_SET_DEBUGREGS", v.ID)
}

// ReadMSRs reads entries' MSRs in order, any number of them, and returns
// how many it read: KVM stops at the first MSR it refuses, entries[n].
func (v *VCPU) ReadMSRs(entries []MSR) (int, error) {
	return v.msrBatches(reqGetMSRs, "KVM_GET_MSRS", entries, true)
}

// WriteMSRs writes entries in order, any number of them, and returns how
// many KVM took: it stops at the first MSR it refuses, entries[n].
func (v *VCPU) WriteMSRs(entries []MSR) (int, error) {
	return v.msrBatches(reqSetMSRs, "KVM_SET_MSRS", entries, false)
}

func (v *VCPU) msrBatches(req uintptr, what string, entries []MSR, read bool) (int, error) {
	done := 0
	for done < len(entries) {
		batch := entries[done:min(len(entries), done+maxMSRs)]
		n, err := v.msrIO(req, what, batch, read)
		done += n
		if err != nil || n < len(batch) {
			return done, err
		}
	}
	return done, nil
}

// msrIO does one KVM_GET_MSRS or KVM_SET_MSRS of at most maxMSRs entries.
func (v *VCPU) msrIO(req uintptr, what string, entries []MSR, read bool) (int, error) {
	m := &msrs{NMSRs: uint32(len(entries))}
	copy(m.Entries[:], entries)
	n, err := ioctlPtr(v.fd, req, unsafe.Pointer(m))
	if err != nil {
		return 0, wrap(err, what, v.ID)
	}
	if read {
		copy(entries, m.Entries[:n])
	}
	return int(n), nil
}

// EnableCap enables a vCPU capability.
func (v *VCPU) EnableCap(c Cap, args ...uint64) error { return enableCapOn(v.fd, c, args) }

// StatsFD returns the vCPU's binary statistics fd.
func (v *VCPU) StatsFD() (*StatsFile, error) { return openStats(v.fd) }

func wrap(err error, what string, id int) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s on vCPU %d: %w", what, id, err)
}
