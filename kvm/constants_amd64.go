package kvm

import "unsafe"

// ioctl request encoding from include/uapi/asm-generic/ioctl.h.
const (
	kvmio      = 0xAE
	iocNone    = 0
	iocWrite   = 1
	iocRead    = 2
	iocNRShift = 0
	iocTypeSh  = 8
	iocSizeSh  = 16
	iocDirSh   = 30
)

func ioc(dir, nr, size uintptr) uintptr {
	return dir<<iocDirSh | size<<iocSizeSh | kvmio<<iocTypeSh | nr<<iocNRShift
}
func io(nr uintptr) uintptr                 { return ioc(iocNone, nr, 0) }
func iow(nr uintptr, size uintptr) uintptr  { return ioc(iocWrite, nr, size) }
func ior(nr uintptr, size uintptr) uintptr  { return ioc(iocRead, nr, size) }
func iowr(nr uintptr, size uintptr) uintptr { return ioc(iocRead|iocWrite, nr, size) }

// Sizes come from the Go mirrors of the kernel structs, so a layout mistake
// shows up as a wrong request number (ENOTTY) instead of silent corruption;
// types_test.go pins each size to the kernel's.
var (
	reqGetAPIVersion      = io(0x00)
	reqCreateVM           = io(0x01)
	reqGetMSRIndexList    = iowr(0x02, 4)
	reqCheckExtension     = io(0x03)
	reqGetVCPUMmapSize    = io(0x04)
	reqGetSupportedCPUID  = iowr(0x05, 8)
	reqCreateVCPU         = io(0x41)
	reqSetUserMemRegion   = iow(0x46, unsafe.Sizeof(UserspaceMemoryRegion{}))
	reqSetTSSAddr         = io(0x47)
	reqSetIdentityMapAddr = iow(0x48, 8)
	reqCreateIRQChip      = io(0x60)
	reqIRQLine            = iow(0x61, unsafe.Sizeof(irqLevel{}))
	reqSetGSIRouting      = iow(0x6a, 8)
	reqIRQFD              = iow(0x76, unsafe.Sizeof(irqfd{}))
	reqCreatePIT2         = iow(0x77, unsafe.Sizeof(pitConfig{}))
	reqIOEventFD          = iow(0x79, unsafe.Sizeof(ioeventfd{}))
	reqEnableCap          = iow(0xa3, unsafe.Sizeof(enableCap{}))
	reqSignalMSI          = iow(0xa5, unsafe.Sizeof(msi{}))
	reqGetStatsFD         = io(0xce)

	reqRun           = io(0x80)
	reqGetRegs       = ior(0x81, unsafe.Sizeof(Regs{}))
	reqSetRegs       = iow(0x82, unsafe.Sizeof(Regs{}))
	reqGetSregs      = ior(0x83, unsafe.Sizeof(Sregs{}))
	reqSetSregs      = iow(0x84, unsafe.Sizeof(Sregs{}))
	reqGetMSRs       = iowr(0x88, 8)
	reqSetMSRs       = iow(0x89, 8)
	reqGetFPU        = ior(0x8c, unsafe.Sizeof(FPU{}))
	reqSetFPU        = iow(0x8d, unsafe.Sizeof(FPU{}))
	reqGetLAPIC      = ior(0x8e, unsafe.Sizeof(LAPICState{}))
	reqSetLAPIC      = iow(0x8f, unsafe.Sizeof(LAPICState{}))
	reqSetCPUID2     = iow(0x90, 8)
	reqGetMPState    = ior(0x98, 4)
	reqGetVCPUEvents = ior(0x9f, unsafe.Sizeof(VCPUEvents{}))
	reqSetVCPUEvents = iow(0xa0, unsafe.Sizeof(VCPUEvents{}))
	reqSetMPState    = iow(0x99, 4)
	reqGetDebugRegs  = ior(0xa1, unsafe.Sizeof(DebugRegs{}))
	reqSetDebugRegs  = iow(0xa2, unsafe.Sizeof(DebugRegs{}))
	reqGetXSave      = ior(0xa4, unsafe.Sizeof(XSave{}))
	reqSetXSave      = iow(0xa5, unsafe.Sizeof(XSave{}))
	reqGetXCRs       = ior(0xa6, unsafe.Sizeof(XCRs{}))
	reqSetXCRs       = iow(0xa7, unsafe.Sizeof(XCRs{}))
	reqGetTSCKHz     = io(0xa3)

	// VM ioctls that share numbers with vCPU ones.
	reqGetIRQChip = iowr(0x62, unsafe.Sizeof(IRQChipState{}))
	reqSetIRQChip = ior(0x63, unsafe.Sizeof(IRQChipState{})) // _IOR in the kernel too
	reqGetPIT2    = ior(0x9f, unsafe.Sizeof(PITState2{}))
	reqSetPIT2    = iow(0xa0, unsafe.Sizeof(PITState2{}))
)

// APIVersion is the only KVM API version there has ever been.
const APIVersion = 12

// Cap is a KVM capability number for KVM_CHECK_EXTENSION / KVM_ENABLE_CAP.
type Cap uint32

// Capabilities govmm looks at (include/uapi/linux/kvm.h).
const (
	CapIRQChip          Cap = 0
	CapHLT              Cap = 1
	CapUserMemory       Cap = 3
	CapSetTSSAddr       Cap = 4
	CapExtCPUID         Cap = 7
	CapNRVCPUs          Cap = 9
	CapNRMemslots       Cap = 10
	CapPIT              Cap = 11
	CapIRQRouting       Cap = 25
	CapIRQFD            Cap = 32
	CapPIT2             Cap = 33
	CapIOEventFD        Cap = 36
	CapMaxVCPUs         Cap = 66
	CapTSCDeadlineTimer Cap = 72
	CapXSave            Cap = 55
	CapXCRs             Cap = 56
	CapDebugRegs        Cap = 50
	CapSyncRegs         Cap = 74
	CapSignalMSI        Cap = 77
	CapSplitIRQChip     Cap = 121
	CapX2APICAPI        Cap = 129
	CapImmediateExit    Cap = 136
	CapX86DisableExits  Cap = 143
	CapHaltPoll         Cap = 182
	CapBinaryStatsFD    Cap = 203
)

// vCPU multiprocessing states (KVM_GET_MP_STATE).
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1 // an AP waiting for INIT/SIPI
	MPStateInitReceived  = 2
	MPStateHalted        = 3 // in HLT, waiting for an interrupt
	MPStateSIPIReceived  = 4
)

// Bits of KVM_CAP_X86_DISABLE_EXITS.
const (
	DisableExitsMWAIT  = 1 << 0
	DisableExitsHLT    = 1 << 1
	DisableExitsPause  = 1 << 2
	DisableExitsCState = 1 << 3
)

// ExitReason is kvm_run.exit_reason.
type ExitReason uint32

// Exit reasons (include/uapi/linux/kvm.h).
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitSetTPR        ExitReason = 11
	ExitTPRAccess     ExitReason = 12
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
	ExitIOAPICEOI     ExitReason = 26
	ExitX86RDMSR      ExitReason = 29
	ExitX86WRMSR      ExitReason = 30
	ExitX86BusLock    ExitReason = 33
	ExitNotify        ExitReason = 37
	ExitMemoryFault   ExitReason = 39
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "UNKNOWN", ExitException: "EXCEPTION", ExitIO: "IO",
	ExitHypercall: "HYPERCALL", ExitDebug: "DEBUG", ExitHLT: "HLT",
	ExitMMIO: "MMIO", ExitIRQWindowOpen: "IRQ_WINDOW_OPEN",
	ExitShutdown: "SHUTDOWN", ExitFailEntry: "FAIL_ENTRY", ExitIntr: "INTR",
	ExitSetTPR: "SET_TPR", ExitTPRAccess: "TPR_ACCESS", ExitNMI: "NMI",
	ExitInternalError: "INTERNAL_ERROR", ExitSystemEvent: "SYSTEM_EVENT",
	ExitIOAPICEOI: "IOAPIC_EOI", ExitX86RDMSR: "X86_RDMSR",
	ExitX86WRMSR: "X86_WRMSR", ExitX86BusLock: "X86_BUS_LOCK",
	ExitNotify: "NOTIFY", ExitMemoryFault: "MEMORY_FAULT",
}

// String returns the kernel's name without the KVM_EXIT_ prefix.
func (r ExitReason) String() string {
	if n, ok := exitNames[r]; ok {
		return n
	}
	return "EXIT_" + itoa(uint64(r))
}

// System event types (kvm_run.system_event.type).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// Port I/O directions (kvm_run.io.direction).
const (
	IODirIn  = 0
	IODirOut = 1
)

// Sync register sets (kvm_run.kvm_valid_regs / kvm_dirty_regs).
const (
	SyncRegsGPR    = 1 << 0
	SyncRegsSregs  = 1 << 1
	SyncRegsEvents = 1 << 2
)

// Internal error suberrors.
const (
	InternalErrorEmulation            = 1
	InternalErrorSimulEx              = 2
	InternalErrorDeliveryEv           = 3
	InternalErrorUnexpectedExitReason = 4
)

// IOEventFD flags.
const (
	ioeventfdDatamatch = 1 << 0
	ioeventfdPIO       = 1 << 1
	ioeventfdDeassign  = 1 << 2
)

// GSI routing entry types.
const (
	routingIRQChip = 1
	routingMSI     = 2
)

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}
