package vmm

import (
	"encoding/binary"
	"fmt"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vmm/boot"
)

// The classic bzImage path: govmm loads the protected-mode part of the
// image at 1 MiB and enters its 32-bit code32_start; the kernel's own
// decompressor does the rest. It exists for kernels whose payload govmm
// cannot unpack. On hosts that emulate 32-bit code (PVM) it takes minutes.

// Boot selects how a bzImage is entered.
type Boot int

// Boot modes.
const (
	// BootDirect unpacks a bzImage's payload in govmm and enters the ELF
	// through the 64-bit boot protocol (the default; an ELF vmlinux is
	// always entered this way).
	BootDirect Boot = iota
	// BootProtected enters a bzImage at its 32-bit protected-mode entry.
	BootProtected
)

// The 32-bit boot protocol wants flat segments at these selectors
// (Documentation/arch/x86/boot.rst, "32-bit boot protocol").
const (
	bootCS32     = 0x10
	bootDS32     = 0x18
	gdtCode32    = 0x00cf9b000000ffff // flat 4 GiB, execute/read
	gdtData32    = 0x00cf93000000ffff // flat 4 GiB, read/write
	protModeAddr = 0x100000           // where a bzImage's protected-mode code goes
)

// loadProtected loads a bzImage for the 32-bit entry and returns the
// kernel extent for the zero page (the decompressor needs init_size
// bytes from the load address).
func (v *VM) loadProtected(img []byte, hdr *boot.SetupHeader) (*boot.Kernel, error) {
	// The kernel's own decompressor would run off the end of a truncated
	// image, in the guest, for minutes of emulation on a PVM host. (Before
	// protocol 2.08 the header does not say where the payload ends.)
	if hdr.PayloadLength != 0 {
		if _, err := hdr.CompressedPayload(img); err != nil {
			return nil, err
		}
	}
	code := img[hdr.SetupSize:]
	span := uint64(max(uint64(len(code)), uint64(hdr.InitSize)))
	dst, err := v.mem.Slice(protModeAddr, span)
	if err != nil {
		return nil, fmt.Errorf("protected-mode kernel (%d bytes, init_size %d) does not fit: %w", len(code), hdr.InitSize, err)
	}
	copy(dst, code)
	gdt, err := v.mem.Slice(boot.GDTAddr, 4*8)
	if err != nil {
		return nil, err
	}
	clear(gdt)
	binary.LittleEndian.PutUint64(gdt[bootCS32:], gdtCode32)
	binary.LittleEndian.PutUint64(gdt[bootDS32:], gdtData32)
	return &boot.Kernel{Entry: protModeAddr, Start: protModeAddr, End: protModeAddr + span}, nil
}

// protectedModeSregs puts a vCPU in 32-bit protected mode, paging off, on
// the flat GDT loadProtected wrote.
func protectedModeSregs(s *kvm.Sregs) {
	s.CS = segmentFromGDT(bootCS32, gdtCode32)
	data := segmentFromGDT(bootDS32, gdtData32)
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.GDT = kvm.DTable{Base: boot.GDTAddr, Limit: 4*8 - 1}
	s.CR0 = cr0PE | cr0ET
	s.CR4, s.EFER = 0, 0
}
