package vmm

import (
	"encoding/binary"
	"fmt"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vmm/boot"
)

// CPUID leaves and bits govmm adjusts per vCPU.
const (
	cpuidFeatures      = 0x1
	cpuidExtTopology   = 0xb
	cpuidV2ExtTopology = 0x1f
	cpuidKVMFeatures   = 0x40000001
	cpuidAMDTopology   = 0x8000001e
	cpuidAddrSizes     = 0x80000008 // EAX[7:0]: physical address bits

	featHTT               = 1 << 28 // leaf 1 EDX: more than one logical CPU
	kvmFeaturePollControl = 1 << 12 // guest haltpoll needs host cooperation
	kvmHintsRealtime      = 1 << 0  // leaf 0x40000001 EDX: vCPUs never preempted
)

// cpuidFor fixes up the supported CPUID table for vCPU id of n: the APIC
// ID and logical-processor count the guest uses to number its CPUs.
func cpuidFor(supported []kvm.CPUIDEntry, id, n int, pvHaltPoll bool) []kvm.CPUIDEntry {
	out := make([]kvm.CPUIDEntry, len(supported))
	copy(out, supported)
	for i := range out {
		e := &out[i]
		switch e.Function {
		case cpuidFeatures:
			e.EBX = e.EBX&0x0000ffff | uint32(n&0xff)<<16 | uint32(id&0xff)<<24
			if n > 1 {
				e.EDX |= featHTT
			}
		case cpuidExtTopology, cpuidV2ExtTopology:
			e.EDX = uint32(id) // x2APIC ID, in every sub-leaf
		case cpuidAMDTopology:
			// With TOPOEXT, Linux on AMD takes the APIC ID from here.
			e.EAX = uint32(id)
			e.EBX = uint32(id & 0xff) // core ID; one thread per core
			e.ECX = 0                 // node 0
		case cpuidKVMFeatures:
			// POLL_CONTROL asks the host to honour a guest MSR; it is
			// opt-in (QEMU leaves it off by default too). The guest's
			// cpuidle-haltpoll driver also wants the REALTIME hint.
			e.EAX &^= kvmFeaturePollControl
			e.EDX &^= kvmHintsRealtime
			if pvHaltPoll {
				e.EAX |= kvmFeaturePollControl
				e.EDX |= kvmHintsRealtime
			}
		}
	}
	return out
}

// checkPhysBits refuses guest RAM that would end beyond the physical
// addresses the guest's CPU (the host's, as KVM reports it) can reach:
// KVM refuses such a memory slot with a bare EINVAL, and a guest could
// not use it anyway. From 3.5 GiB on, RAM past 3 GiB is moved above the
// PCI hole, and the top is 1 GiB more than the size.
func checkPhysBits(supported []kvm.CPUIDEntry, memSize uint64) error {
	regions := boot.RAMRegions(memSize)
	last := regions[len(regions)-1]
	top := last.GuestAddr + last.Size
	for _, e := range supported {
		if e.Function != cpuidAddrSizes {
			continue
		}
		if bits := e.EAX & 0xff; bits > 0 && bits < 64 && top > 1<<bits {
			// The size in KiB, whole, as Validate names it: in MiB a
			// size just over the limit read as the limit itself
			// ("--mem 64512M: ... at most 64512 MiB"; found by an audit).
			return fmt.Errorf("--mem %dK: guest RAM would end at %#x, beyond the %d-bit physical addresses of this host's CPU (at most %d MiB)", (memSize+1023)>>10, top, bits, (1<<bits-(boot.PCIHoleEnd-boot.LowRAMSplit))>>20)
		}
	}
	return nil
}

// MSRs Linux expects to find in a sane state at its 64-bit entry, as
// Firecracker sets them: fast strings on, the syscall MSRs cleared.
const (
	msrIA32MiscEnable   = 0x1a0
	miscEnableFastStr   = 1 << 0
	msrIA32SysenterCS   = 0x174
	msrIA32SysenterESP  = 0x175
	msrIA32SysenterEIP  = 0x176
	msrSTAR             = 0xc0000081
	msrLSTAR            = 0xc0000082
	msrCSTAR            = 0xc0000083
	msrSyscallMask      = 0xc0000084
	msrKernelGSBase     = 0xc0000102
	lapicLVT0Offset     = 0x350
	lapicLVT1Offset     = 0x360
	lapicDeliveryMask   = 0x700
	lapicDeliveryExtINT = 0x700
	lapicDeliveryNMI    = 0x400
)

func bootMSRs() []kvm.MSR {
	return []kvm.MSR{
		{Index: msrIA32SysenterCS}, {Index: msrIA32SysenterESP}, {Index: msrIA32SysenterEIP},
		{Index: msrSTAR}, {Index: msrLSTAR}, {Index: msrCSTAR}, {Index: msrSyscallMask},
		{Index: msrKernelGSBase},
		{Index: msrIA32MiscEnable, Data: miscEnableFastStr},
	}
}

// setupCPU gives every vCPU its CPUID, MSRs, FPU and LAPIC wiring. Only
// the boot CPU gets registers: application processors wait for INIT/SIPI
// from the in-kernel LAPIC.
func setupCPU(v *kvm.VCPU, supported []kvm.CPUIDEntry, n int, irqchip, pvHaltPoll bool) error {
	if err := v.SetCPUID(cpuidFor(supported, v.ID, n, pvHaltPoll)); err != nil {
		return err
	}
	if err := v.SetMSRs(bootMSRs()); err != nil {
		return err
	}
	// x87 control word and MXCSR as after FNINIT / reset: all exceptions
	// masked.
	if err := v.SetFPU(kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}); err != nil {
		return err
	}
	if !irqchip {
		return nil
	}
	// LINT0 takes the PIC's ExtINT, LINT1 the NMI, as on a PC (and as the
	// MP table / MADT tell the guest).
	l, err := v.GetLAPIC()
	if err != nil {
		return err
	}
	setLVT(&l, lapicLVT0Offset, lapicDeliveryExtINT)
	setLVT(&l, lapicLVT1Offset, lapicDeliveryNMI)
	return v.SetLAPIC(l)
}

func setLVT(l *kvm.LAPICState, off int, mode uint32) {
	r := binary.LittleEndian.Uint32(l.Regs[off:])
	binary.LittleEndian.PutUint32(l.Regs[off:], r&^lapicDeliveryMask|mode)
}

// Control register and EFER bits for the 64-bit entry.
const (
	cr0PE   = 1 << 0
	cr0ET   = 1 << 4
	cr0PG   = 1 << 31
	cr4PAE  = 1 << 5
	eferLME = 1 << 8
	eferLMA = 1 << 10
)

// segmentFromGDT decodes a raw GDT descriptor into KVM's cached segment
// form, so the hidden state matches what is in guest memory.
func segmentFromGDT(sel uint16, desc uint64) kvm.Segment {
	s := kvm.Segment{
		Base:     (desc>>16)&0xffffff | (desc>>56&0xff)<<24,
		Limit:    uint32(desc&0xffff | (desc>>48&0xf)<<16),
		Selector: sel,
		Type:     uint8(desc >> 40 & 0xf),
		S:        uint8(desc >> 44 & 1),
		DPL:      uint8(desc >> 45 & 3),
		Present:  uint8(desc >> 47 & 1),
		AVL:      uint8(desc >> 52 & 1),
		L:        uint8(desc >> 53 & 1),
		DB:       uint8(desc >> 54 & 1),
		G:        uint8(desc >> 55 & 1),
	}
	if s.G != 0 {
		s.Limit = s.Limit<<12 | 0xfff
	}
	return s
}

// longModeSregs puts a vCPU in 64-bit mode on the GDT and identity page
// tables written by boot.WriteGDT / boot.WritePageTables.
func longModeSregs(s *kvm.Sregs) {
	s.CS = segmentFromGDT(boot.CodeSelector, boot.GDTCode64)
	data := segmentFromGDT(boot.DataSelector, boot.GDTData)
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = segmentFromGDT(boot.TSSSelector, boot.GDTTSS)
	s.GDT = kvm.DTable{Base: boot.GDTAddr, Limit: boot.GDTLimit}
	s.IDT = kvm.DTable{}
	s.CR0 = cr0PE | cr0ET | cr0PG
	s.CR3 = boot.PML4Addr
	s.CR4 = cr4PAE
	s.EFER = eferLME | eferLMA
}

// realModeSregs makes CS:IP address the first MiB flat from 0.
func realModeSregs(s *kvm.Sregs) {
	for _, seg := range []*kvm.Segment{&s.CS, &s.DS, &s.ES, &s.FS, &s.GS, &s.SS} {
		seg.Base, seg.Selector = 0, 0
	}
}

// cpuMode is the mode the boot CPU starts in.
type cpuMode int

const (
	realMode cpuMode = iota
	protectedMode
	longMode
)

// setupBootCPU sets the first vCPU's registers for the entry point; rsi
// points at the zero page where there is one.
func setupBootCPU(v *kvm.VCPU, entry uint64, mode cpuMode, rsi uint64) error {
	s, err := v.GetSregs()
	if err != nil {
		return err
	}
	switch mode {
	case longMode:
		longModeSregs(&s)
	case protectedMode:
		protectedModeSregs(&s)
	default:
		realModeSregs(&s)
	}
	if err := v.SetSregs(s); err != nil {
		return err
	}
	r := kvm.Regs{RIP: entry, RSI: rsi, RFLAGS: 2}
	if mode == longMode {
		r.RSP, r.RBP = boot.StackAddr, boot.StackAddr
	}
	if err := v.SetRegs(r); err != nil {
		return fmt.Errorf("boot CPU registers: %w", err)
	}
	return nil
}
