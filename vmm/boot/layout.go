package boot

// Fixed guest-physical layout of the boot structures. They all live in the
// first 640 KiB, below anything a kernel loads, and match the C reference VMM
// (shared/guest/pvmboot.c) so boots can be compared byte for byte.
const (
	GDTAddr      = 0x500   // 4 descriptors: null, code64, data, TSS
	ZeroPageAddr = 0x7000  // struct boot_params; RSI at the 64-bit entry
	StackAddr    = 0x8ff0  // initial RSP/RBP: grows down below the page tables
	PML4Addr     = 0x9000  // CR3
	PDPTAddr     = 0xa000  // one PDPT: identity map of the low 4 GiB at most
	PDAddr       = 0xb000  // first of up to MaxPDPages page directories
	CmdlineAddr  = 0x20000 // NUL-terminated kernel command line
	MPTableAddr  = 0x9fc00 // last KiB of base memory, where Linux scans for "_MP_"
	HighMemStart = 0x100000
	EBDAStart    = MPTableAddr // e820: RAM below, reserved up to HighMemStart
	PCIHoleEnd   = 1 << 32     // top of the 32-bit PCI hole; RAM past LowRAMTop resumes here
	MaxPDPages   = 4           // 4 x 1 GiB of 2 MiB pages: identity map up to 4 GiB
	pageSize     = 0x1000
	zeroPageSize = 0x1000
)

// Segment selectors of the GDT written by WriteGDT, for the vCPU's segment
// registers.
const (
	CodeSelector = 0x08
	DataSelector = 0x10
	TSSSelector  = 0x18
	GDTLimit     = 4*8 - 1
)

// Raw descriptors of the GDT, so a vCPU's hidden segment state can be derived
// from exactly what is in guest memory.
const (
	GDTCode64 = 0x00af9b000000ffff // present, DPL 0, exec/read, accessed, L=1, G=1
	GDTData   = 0x00cf93000000ffff // present, DPL 0, read/write, accessed, D/B=1, G=1
	GDTTSS    = 0x008f8b000000ffff // present, busy 32/64-bit TSS, G=1
)

// Guest RAM is split around the 32-bit PCI hole as QEMU's pc machine splits
// it with its defaults (hw/i386/pc_piix.c, pc_init1: max-ram-below-4g
// 0xe0000000 and gigabyte_align): RAM of less than LowRAMMax lies below the
// hole in one piece; from LowRAMMax on, the first LowRAMSplit bytes do and
// the rest starts at PCIHoleEnd. Splitting every size at 3 GiB cost a guest
// of 3 GiB + 4 KiB its RAM above 4 GiB, and with it Linux's 64 MiB swiotlb
// bounce buffer: 66 MiB less MemTotal than 3 GiB gave (found by an audit).
const (
	LowRAMMax   = 0xe0000000 // 3.5 GiB: QEMU's max-ram-below-4g default
	LowRAMSplit = 0xc0000000 // 3 GiB: low RAM of a split guest, 1 GiB aligned
)

// LowRAMTop returns where RAM below the PCI hole ends for memSize bytes of
// RAM, exclusive: memSize itself below LowRAMMax, LowRAMSplit from there on.
// The hole (the 32-bit PCI MMIO window) starts at or above it; the rest of
// RAM, memSize-LowRAMTop(memSize) bytes, is at PCIHoleEnd.
func LowRAMTop(memSize uint64) uint64 {
	if memSize >= LowRAMMax {
		return LowRAMSplit
	}
	return memSize
}
