package kvm

import (
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sizes of the kernel structs (x86-64), from include/uapi: a mismatch here
// means a Go mirror is laid out wrong.
func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"kvm_regs", unsafe.Sizeof(Regs{}), 144},
		{"kvm_sregs", unsafe.Sizeof(Sregs{}), 312},
		{"kvm_fpu", unsafe.Sizeof(FPU{}), 416},
		{"kvm_vcpu_events", unsafe.Sizeof(VCPUEvents{}), 64},
		{"kvm_lapic_state", unsafe.Sizeof(LAPICState{}), 1024},
		{"kvm_xcrs", unsafe.Sizeof(XCRs{}), 392},
		{"kvm_debugregs", unsafe.Sizeof(DebugRegs{}), 128},
		{"kvm_irqchip", unsafe.Sizeof(IRQChipState{}), 520},
		{"kvm_pit_state2", unsafe.Sizeof(PITState2{}), 112},
		{"kvm_cpuid_entry2", unsafe.Sizeof(CPUIDEntry{}), 40},
		{"kvm_userspace_memory_region", unsafe.Sizeof(UserspaceMemoryRegion{}), 32},
		{"kvm_irqfd", unsafe.Sizeof(irqfd{}), 32},
		{"kvm_ioeventfd", unsafe.Sizeof(ioeventfd{}), 64},
		{"kvm_pit_config", unsafe.Sizeof(pitConfig{}), 64},
		{"kvm_enable_cap", unsafe.Sizeof(enableCap{}), 104},
		{"kvm_msi", unsafe.Sizeof(msi{}), 32},
		{"kvm_xsave", unsafe.Sizeof(XSave{}), 4096},
		{"kvm_irq_routing_entry", unsafe.Sizeof(RoutingEntry{}), 48},
		{"kvm_run", unsafe.Sizeof(Run{}), 2352},
		{"kvm_run.kvm_valid_regs", unsafe.Offsetof(Run{}.ValidRegs), 288},
		{"kvm_run.s", unsafe.Offsetof(Run{}.S), 304},
	} {
		if c.got != c.want {
			t.Errorf("%s: size/offset %d, want %d", c.name, c.got, c.want)
		}
	}
	// Request numbers the kernel headers define, spot-checked.
	if reqRun != 0xae80 || reqGetStatsFD != 0xaece || reqEnableCap != 0x4068aea3 {
		t.Errorf("ioctl numbers: RUN %#x STATS_FD %#x ENABLE_CAP %#x", reqRun, reqGetStatsFD, reqEnableCap)
	}
	if reqGetXSave != 0x9000aea4 || reqSetXSave != 0x5000aea5 {
		t.Errorf("ioctl numbers: GET_XSAVE %#x SET_XSAVE %#x", reqGetXSave, reqSetXSave)
	}
}

// openKVM skips the test where /dev/kvm is absent, and fails it where the
// device exists but cannot be used.
func openKVM(t *testing.T) *System {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); errors.Is(err, os.ErrNotExist) {
		t.Skip("no /dev/kvm on this machine")
	}
	s, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newVCPU makes a VM with vCPU 0; cleanup closes both.
func newVCPU(t *testing.T, s *System) *VCPU {
	t.Helper()
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	v, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func TestSystemAndVM(t *testing.T) {
	s := openKVM(t)
	if s.CheckExtension(CapUserMemory) == 0 {
		t.Fatal("KVM_CAP_USER_MEMORY missing")
	}
	cpuid, err := s.SupportedCPUID()
	if err != nil || len(cpuid) == 0 {
		t.Fatalf("SupportedCPUID: %d entries, %v", len(cpuid), err)
	}
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	v, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.SetCPUID(cpuid); err != nil {
		t.Fatal(err)
	}
	regs, err := v.GetRegs()
	if err != nil {
		t.Fatal(err)
	}
	if regs.RIP != 0xfff0 {
		t.Errorf("reset RIP %#x, want 0xfff0", regs.RIP)
	}
	// A region that is not page aligned is the kernel's to refuse.
	if err := vm.SetUserMemoryRegion(0, 0x123, make([]byte, 4096)); err == nil {
		t.Error("unaligned memory region accepted")
	}
}

func TestStatsFD(t *testing.T) {
	s := openKVM(t)
	if s.CheckExtension(CapBinaryStatsFD) == 0 {
		t.Skip("KVM_CAP_BINARY_STATS_FD missing")
	}
	v := newVCPU(t, s)
	st, err := v.StatsFD()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	vals, _, err := st.Read(nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i, d := range st.Descs {
		if d.Name == "exits" {
			found = true
			if len(vals[i]) != 1 {
				t.Errorf("exits has %d values", len(vals[i]))
			}
		}
	}
	if !found {
		t.Errorf("vCPU stats %q lack an \"exits\" counter: %d descriptors", st.ID, len(st.Descs))
	}
}

// immediateExitSet reads the flag as the kernel would see it.
func (r *Run) immediateExitSet() bool { return atomic.LoadUint32(r.firstWord())&immediateExitBits != 0 }

// immediate_exit: set, KVM_RUN returns EINTR without entering the guest;
// cleared, the other bytes of its word are untouched; a kick that races
// with Close, or comes after it, is a no-op rather than a write to an
// unmapped page.
func TestImmediateExit(t *testing.T) {
	if off := unsafe.Offsetof(Run{}.immediateExit); off != 1 {
		t.Fatalf("immediate_exit at offset %d, want 1", off)
	}
	v := newVCPU(t, openKVM(t))
	v.Run.RequestInterruptWindow = 1
	v.RequestImmediateExit()
	if !v.Run.immediateExitSet() || v.Run.immediateExit != 1 {
		t.Fatalf("immediate_exit not set: byte %d", v.Run.immediateExit)
	}
	if err := v.RunOnce(); !errors.Is(err, unix.EINTR) {
		t.Errorf("KVM_RUN with immediate_exit: %v, want EINTR", err)
	}
	v.ClearImmediateExit()
	if v.Run.immediateExitSet() || v.Run.RequestInterruptWindow != 1 {
		t.Errorf("after clear: immediate_exit %d, request_interrupt_window %d (want 0, 1)", v.Run.immediateExit, v.Run.RequestInterruptWindow)
	}
	kicked := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ {
			v.RequestImmediateExit()
		}
		close(kicked)
	}()
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	<-kicked
	v.RequestImmediateExit()
	if err := v.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// KVM_GET_TSC_KHZ gives a TSC rate a CPU can have (the exit clock scales
// the TSC by it: vmm's TestExitClockFollowsRuntimeClock checks it ticks
// with the runtime's clock).
func TestTSCKHz(t *testing.T) {
	khz, err := newVCPU(t, openKVM(t)).TSCKHz()
	if err != nil {
		t.Fatal(err)
	}
	if khz < 100_000 || khz > 10_000_000 {
		t.Errorf("TSC at %d kHz, want 0.1-10 GHz", khz)
	}
}
