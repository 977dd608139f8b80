package boot

import (
	"fmt"
	"io"
	"strings"
)

// Zero page (struct boot_params) offsets outside the embedded setup header.
const (
	offExtRamdiskImage = 0x0c0
	offExtRamdiskSize  = 0x0c4
	offExtCmdLinePtr   = 0x0c8
	offE820Entries     = 0x1e8
	offE820Table       = 0x2d0
	e820EntrySize      = 20

	// Protocol version written for a bare ELF, which carries no header of its
	// own: 2.15, what the kernels this loader targets speak.
	elfBootVersion = 0x020f
	// DefaultCmdlineMax is the command-line buffer size (NUL included)
	// assumed for a bare ELF, which has no cmdline_size field.
	DefaultCmdlineMax = 2048
	// Default highest initrd address for a bare ELF: any 64-bit kernel reads
	// an initrd anywhere below 4 GiB (the low 32 bits of ramdisk_image).
	defaultELFInitrdAddrMax = 1<<32 - 1
	loaderUndefined         = 0xff // type_of_loader: no registered boot loader ID
)

// E820 memory types.
const (
	E820RAM      = 1
	E820Reserved = 2
)

// E820Entry is one range of the guest's physical memory map.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// E820Map returns the memory map for memSize bytes of RAM: base memory below
// the MP table, the reserved EBDA/VGA/BIOS area up to 1 MiB, RAM from 1 MiB.
// RAM past LowRAMTop (all of it below 3.5 GiB, 3 GiB from there on) is
// moved above 4 GiB, leaving the gap up to 4 GiB unlisted: Linux puts 32-bit
// PCI BARs and the IOAPIC/LAPIC windows there. RAMRegions says which bytes
// of guest memory back which addresses.
func E820Map(memSize uint64) []E820Entry {
	m := []E820Entry{
		{0, min(memSize, EBDAStart), E820RAM},
		{EBDAStart, HighMemStart - EBDAStart, E820Reserved},
	}
	low := LowRAMTop(memSize)
	if low > HighMemStart {
		m = append(m, E820Entry{HighMemStart, low - HighMemStart, E820RAM})
	}
	if memSize > low {
		m = append(m, E820Entry{PCIHoleEnd, memSize - low, E820RAM})
	}
	return m
}

// Region is a span of guest-physical RAM backed by the guest memory slice
// from Offset on.
type Region struct {
	GuestAddr, Size, Offset uint64
}

// RAMRegions returns the memory slots a VMM registers with KVM for memSize
// bytes of RAM, consistent with E820Map: one slot at 0 when all of it lies
// below the PCI hole, otherwise the bytes past LowRAMTop(memSize) are mapped
// at PCIHoleEnd. Below LowRAMTop, index into the slice == guest address,
// which is all this package writes to.
func RAMRegions(memSize uint64) []Region {
	low := LowRAMTop(memSize)
	if low == memSize {
		return []Region{{0, memSize, 0}}
	}
	return []Region{{0, low, 0}, {PCIHoleEnd, memSize - low, low}}
}

// Params describe a boot: the command line, initrd and memory map.
type Params struct {
	Cmdline string
	// CmdlineMax is the kernel's command-line buffer including the NUL:
	// cmdline_size+1 from a bzImage header, DefaultCmdlineMax (used when 0)
	// for a bare ELF.
	CmdlineMax int
	// Initrd is the initial ramdisk, nil for none. It is read straight
	// into guest memory once its place is known, so an initrd never
	// passes through the heap and one too large is refused unread.
	Initrd *io.SectionReader
	// InitrdAddrMax is the highest address the initrd may occupy, from the
	// bzImage header; 0 (a bare ELF) means anywhere below 4 GiB.
	InitrdAddrMax uint64
	// MemSize is the guest's RAM size (0: len(mem)); see E820Map for how RAM
	// past LowRAMTop is laid out.
	MemSize uint64
	// Header is the bzImage's setup header (SetupHeader.Raw), copied into
	// the zero page so the kernel sees its own fields; nil for a bare ELF.
	Header []byte
}

// WriteBootParams places and reads in the initrd, writes the command line
// and the zero page, and returns the initrd's address (0 without one).
// mem is guest RAM from address 0: all of it, or only the part below
// LowRAMTop(p.MemSize) when that says there is more. The
// initrd goes as high as it fits, page aligned, below RAM's top,
// InitrdAddrMax and the PCI hole, and above the kernel's End, where nothing
// early in boot touches it. All checks happen before the first write (a
// failing read of the initrd can leave part of it in memory).
func WriteBootParams(mem []byte, k *Kernel, p *Params) (initrdAddr uint64, err error) {
	if k == nil || p == nil {
		return 0, fmt.Errorf("boot params: nil kernel or params")
	}
	memSize := p.MemSize
	if memSize == 0 {
		memSize = uint64(len(mem))
	}
	switch {
	case LowRAMTop(memSize) > uint64(len(mem)):
		// mem need only hold RAM below the hole, all this writes to.
		return 0, fmt.Errorf("boot params: memory size %#x exceeds the %#x bytes of guest memory", memSize, len(mem))
	case memSize <= HighMemStart || memSize < k.End:
		return 0, fmt.Errorf("boot params: memory size %#x leaves no room above 1 MiB and the kernel (end %#x)", memSize, k.End)
	case len(p.Header) > setupHeaderEnd-offSetupSects:
		return 0, fmt.Errorf("boot params: setup header of %d bytes is longer than the zero page's %d", len(p.Header), setupHeaderEnd-offSetupSects)
	}

	cmax := p.CmdlineMax
	if cmax <= 0 {
		cmax = DefaultCmdlineMax
	}
	if len(p.Cmdline) > cmax-1 {
		return 0, fmt.Errorf("boot params: command line of %d bytes is longer than the kernel's limit of %d", len(p.Cmdline), cmax-1)
	}
	if len(p.Cmdline) >= MPTableAddr-CmdlineAddr {
		return 0, fmt.Errorf("boot params: command line of %d bytes does not fit below the MP table (%d)", len(p.Cmdline), MPTableAddr-CmdlineAddr-1)
	}
	if strings.IndexByte(p.Cmdline, 0) >= 0 {
		return 0, fmt.Errorf("boot params: command line contains a NUL byte")
	}

	var size uint64
	if p.Initrd != nil {
		size = uint64(p.Initrd.Size())
	}
	if size > 0 {
		initrdAddr, err = placeInitrd(k, p, memSize)
		if err != nil {
			return 0, err
		}
		if err := readFull(p.Initrd, mem[initrdAddr:initrdAddr+size], 0); err != nil {
			return 0, fmt.Errorf("read initrd: %w", err)
		}
	}

	zp := mem[ZeroPageAddr : ZeroPageAddr+zeroPageSize]
	clear(zp)
	copy(zp[offSetupSects:], p.Header)
	le.PutUint16(zp[offBootFlag:], bootFlagMagic)
	le.PutUint32(zp[offHeader:], hdrSValue)
	if p.Header == nil {
		le.PutUint16(zp[offVersion:], elfBootVersion)
		le.PutUint32(zp[offCmdlineSize:], uint32(cmax-1))
	}
	zp[offTypeOfLoader] = loaderUndefined
	// No CAN_USE_HEAP: heap_end_ptr describes the real-mode setup's heap, and
	// the 64-bit entry skips the real-mode setup.
	zp[offLoadFlags] = LoadedHigh
	le.PutUint32(zp[offCmdLinePtr:], uint32(CmdlineAddr))
	le.PutUint32(zp[offExtCmdLinePtr:], uint32(uint64(CmdlineAddr)>>32))
	le.PutUint32(zp[offRamdiskImage:], uint32(initrdAddr))
	le.PutUint32(zp[offExtRamdiskImage:], uint32(initrdAddr>>32))
	le.PutUint32(zp[offRamdiskSize:], uint32(size))
	le.PutUint32(zp[offExtRamdiskSize:], uint32(size>>32))
	// Loader-owned fields a copied header may carry stale values in.
	le.PutUint32(zp[offHardwareSubarc:], 0)
	le.PutUint64(zp[offSetupData:], 0)

	e820 := E820Map(memSize)
	for i, e := range e820 {
		b := zp[offE820Table+i*e820EntrySize:]
		le.PutUint64(b, e.Addr)
		le.PutUint64(b[8:], e.Size)
		le.PutUint32(b[16:], e.Type)
	}
	zp[offE820Entries] = byte(len(e820))

	n := copy(mem[CmdlineAddr:], p.Cmdline)
	mem[CmdlineAddr+n] = 0
	return initrdAddr, nil
}

func placeInitrd(k *Kernel, p *Params, memSize uint64) (uint64, error) {
	size := uint64(p.Initrd.Size())
	addrMax := p.InitrdAddrMax
	if addrMax == 0 {
		addrMax = defaultELFInitrdAddrMax
	}
	top := LowRAMTop(memSize) // exclusive
	if addrMax < top {
		top = addrMax + 1
	}
	floor := max(alignUp(k.End, pageSize), HighMemStart)
	if size > top || (top-size)&^(pageSize-1) < floor {
		return 0, fmt.Errorf("initrd (%d bytes) does not fit in guest memory (room %#x..%#x above the kernel)", size, floor, top)
	}
	return (top - size) &^ (pageSize - 1), nil
}

func alignUp(v, a uint64) uint64 {
	if v > ^uint64(0)-(a-1) {
		return ^uint64(0) &^ (a - 1)
	}
	return (v + a - 1) &^ (a - 1)
}
