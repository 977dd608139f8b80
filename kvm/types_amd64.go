package kvm

// Go mirrors of the kernel's x86-64 KVM structs. Field order and padding
// follow include/uapi/asm/kvm.h exactly; types_test.go checks the sizes.

// Regs is struct kvm_regs: the general-purpose registers.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment is struct kvm_segment: a segment register in its cached,
// descriptor-decoded form.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable is struct kvm_dtable: the GDTR or IDTR.
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs: segment and control registers.
type Sregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT Segment
	GDT, IDT                        DTable
	CR0, CR2, CR3, CR4, CR8         uint64
	EFER                            uint64
	APICBase                        uint64
	InterruptBitmap                 [4]uint64
}

// FPU is struct kvm_fpu: legacy x87/SSE state.
type FPU struct {
	FPR        [8][16]byte
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]byte
	MXCSR      uint32
	_          uint32
}

// VCPUEvents is struct kvm_vcpu_events, kept opaque: govmm only moves it.
type VCPUEvents struct {
	Raw [64]byte
}

// XSave is struct kvm_xsave: the vCPU's XSAVE area (x87, SSE, AVX and
// the other state components), in the XSAVE layout.
type XSave struct {
	Region [1024]uint32
}

// XCRs is struct kvm_xcrs: the extended control registers (XCR0).
type XCRs struct {
	NXCRs uint32
	Flags uint32
	XCRs  [16]struct {
		XCR   uint32
		_     uint32
		Value uint64
	}
	_ [16]uint64
}

// DebugRegs is struct kvm_debugregs, kept opaque: govmm only moves it.
type DebugRegs struct {
	Raw [128]byte
}

// IRQChipState is struct kvm_irqchip: one in-kernel interrupt controller
// (IRQChipPICMaster, IRQChipPICSlave or IRQChipIOAPIC) and its state,
// kept opaque.
type IRQChipState struct {
	ChipID uint32
	_      uint32
	Raw    [512]byte
}

// The chips of KVM_GET_IRQCHIP / KVM_SET_IRQCHIP (KVM_IRQCHIP_*).
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// PITState2 is struct kvm_pit_state2, kept opaque.
type PITState2 struct {
	Raw [112]byte
}

// LAPICState is struct kvm_lapic_state: the local APIC register page.
type LAPICState struct {
	Regs [1024]byte
}

// CPUIDEntry is struct kvm_cpuid_entry2.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// maxCPUIDEntries bounds KVM_GET_SUPPORTED_CPUID; current kernels report
// well under 100 entries.
const maxCPUIDEntries = 256

// cpuid2 is struct kvm_cpuid2 with room for maxCPUIDEntries entries.
type cpuid2 struct {
	NEnt    uint32
	_       uint32
	Entries [maxCPUIDEntries]CPUIDEntry
}

// MSR is struct kvm_msr_entry.
type MSR struct {
	Index uint32
	_     uint32
	Data  uint64
}

const maxMSRs = 64

// msrs is struct kvm_msrs with room for maxMSRs entries.
type msrs struct {
	NMSRs   uint32
	_       uint32
	Entries [maxMSRs]MSR
}

// UserspaceMemoryRegion is struct kvm_userspace_memory_region.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

type irqLevel struct {
	IRQ   uint32
	Level uint32
}

type pitConfig struct {
	Flags uint32
	_     [15]uint32
}

type enableCap struct {
	Cap   uint32
	Flags uint32
	Args  [4]uint64
	_     [64]byte
}

type irqfd struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]byte
}

type ioeventfd struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]byte
}

type msi struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	_         [12]byte
}

// RoutingEntry is struct kvm_irq_routing_entry. Build one with MSIRoute or
// IRQChipRoute.
type RoutingEntry struct {
	GSI   uint32
	Type  uint32
	Flags uint32
	_     uint32
	U     [8]uint32
}

// IRQChipRoute routes gsi to pin of an in-kernel irqchip (0 = PIC master,
// 1 = PIC slave, 2 = IOAPIC).
func IRQChipRoute(gsi, chip, pin uint32) RoutingEntry {
	return RoutingEntry{GSI: gsi, Type: routingIRQChip, U: [8]uint32{chip, pin}}
}

// MSIRoute routes gsi to an MSI message.
func MSIRoute(gsi uint32, addr uint64, data uint32) RoutingEntry {
	return RoutingEntry{GSI: gsi, Type: routingMSI, U: [8]uint32{uint32(addr), uint32(addr >> 32), data}}
}

const maxRoutes = 1024

type irqRouting struct {
	NR      uint32
	Flags   uint32
	Entries [maxRoutes]RoutingEntry
}

// SyncRegs is struct kvm_sync_regs: the register sets KVM copies into the
// kvm_run page on exit (when named in ValidRegs) and loads from it on entry
// (when named in DirtyRegs).
type SyncRegs struct {
	Regs   Regs
	Sregs  Sregs
	Events VCPUEvents
}

// Run is the fixed part of struct kvm_run, the page shared with KVM. It is
// only ever used through a pointer into the vCPU's mmap.
type Run struct {
	RequestInterruptWindow     uint8
	immediateExit              uint8 // only through RequestImmediateExit / ClearImmediateExit
	_                          [6]uint8
	ExitReason                 ExitReason
	ReadyForInterruptInjection uint8
	IFFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	APICBase                   uint64
	exit                       [256]byte // the per-exit-reason union
	ValidRegs                  uint64
	DirtyRegs                  uint64
	S                          SyncRegs
	_                          [2048 - 520]byte
}

// IOExit is kvm_run.io.
type IOExit struct {
	Direction  uint8
	Size       uint8
	Port       uint16
	Count      uint32
	DataOffset uint64
}

// MMIOExit is kvm_run.mmio.
type MMIOExit struct {
	PhysAddr uint64
	Data     [8]byte
	Len      uint32
	IsWrite  uint8
}

// FailEntryExit is kvm_run.fail_entry.
type FailEntryExit struct {
	HardwareEntryFailureReason uint64
	CPU                        uint32
}

// InternalErrorExit is kvm_run.internal.
type InternalErrorExit struct {
	Suberror uint32
	NData    uint32
	Data     [16]uint64
}

// SystemEventExit is kvm_run.system_event.
type SystemEventExit struct {
	Type  uint32
	NData uint32
	Data  [16]uint64
}

// ExceptionExit is kvm_run.ex.
type ExceptionExit struct {
	Exception uint32
	ErrorCode uint32
}
