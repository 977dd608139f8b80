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
	PCIHoleStart = 0xc0000000  // 3 GiB: 32-bit MMIO window, not RAM
	PCIHoleEnd   = 1 << 32     // RAM beyond PCIHoleStart is remapped from here
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
