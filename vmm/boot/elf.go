package boot

import (
	"bytes"
	"fmt"
	"io"
)

// ELF64 constants (the subset a vmlinux loader needs).
const (
	elfClass64     = 2
	elfData2LSB    = 1
	elfTypeExec    = 2
	elfMachineX86  = 62 // EM_X86_64
	elfHeaderSize  = 64
	elfPhdrSize    = 56
	elfPTLoad      = 1
	kernelVirtBase = 0xffffffff80000000 // __START_KERNEL_map: vmlinux's link-time virtual base
)

// Kernel describes an ELF kernel loaded into guest memory.
type Kernel struct {
	Entry uint64 // physical address of the 64-bit entry (startup_64)
	Start uint64 // lowest physical address loaded
	End   uint64 // one past the highest physical address loaded (bss included)
}

type elfSegment struct {
	off, filesz, memsz, paddr, vaddr uint64
}

// LoadELF copies the PT_LOAD segments of an x86-64 ELF vmlinux to their
// physical addresses in mem; see LoadELFFrom.
func LoadELF(mem []byte, elf []byte) (*Kernel, error) {
	return LoadELFFrom(mem, bytes.NewReader(elf), int64(len(elf)))
}

// LoadELFFrom copies the PT_LOAD segments of the size-byte x86-64 ELF
// vmlinux in r to their physical addresses in mem, zeroing each segment's
// bss tail, and returns where it went. Only the headers and the segments
// are read, straight into mem: a vmlinux with debug info may be larger
// than guest memory, and need not pass through the heap. Every segment is
// checked before any byte is copied, so a bad image leaves mem untouched
// (a failing read can still leave part of a segment behind). Segments may
// not reach below HighMemStart, where the boot structures of this package
// live.
func LoadELFFrom(mem []byte, r io.ReaderAt, size int64) (*Kernel, error) {
	if size < elfHeaderSize {
		return nil, fmt.Errorf("ELF: %d bytes is too short for an ELF header", size)
	}
	elf := make([]byte, elfHeaderSize)
	if err := readFull(r, elf, 0); err != nil {
		return nil, fmt.Errorf("ELF: read header: %w", err)
	}
	switch {
	case !bytes.Equal(elf[:4], elfMagic):
		return nil, fmt.Errorf("ELF: bad magic")
	case elf[4] != elfClass64:
		return nil, fmt.Errorf("ELF: class %d is not ELFCLASS64", elf[4])
	case elf[5] != elfData2LSB:
		return nil, fmt.Errorf("ELF: not little-endian")
	case le.Uint16(elf[18:]) != elfMachineX86:
		return nil, fmt.Errorf("ELF: machine %d is not x86-64", le.Uint16(elf[18:]))
	case le.Uint16(elf[16:]) != elfTypeExec:
		return nil, fmt.Errorf("ELF: type %d is not an executable", le.Uint16(elf[16:]))
	}
	entry := le.Uint64(elf[24:])
	phoff := le.Uint64(elf[32:])
	phentsize := uint64(le.Uint16(elf[54:]))
	phnum := uint64(le.Uint16(elf[56:]))
	if phentsize < elfPhdrSize {
		return nil, fmt.Errorf("ELF: program header entry size %d is below %d", phentsize, elfPhdrSize)
	}
	// phnum*phentsize fits easily in 32 bits, so only phoff can overflow.
	if phoff > uint64(size) || phnum*phentsize > uint64(size)-phoff {
		return nil, fmt.Errorf("ELF: %d program headers at %#x lie beyond the end of the %d-byte file", phnum, phoff, size)
	}

	var segs []elfSegment
	ph := make([]byte, elfPhdrSize)
	for i := uint64(0); i < phnum; i++ {
		if err := readFull(r, ph, int64(phoff+i*phentsize)); err != nil {
			return nil, fmt.Errorf("ELF: read program header %d: %w", i, err)
		}
		if le.Uint32(ph) != elfPTLoad {
			continue
		}
		s := elfSegment{
			off:    le.Uint64(ph[8:]),
			vaddr:  le.Uint64(ph[16:]),
			paddr:  le.Uint64(ph[24:]),
			filesz: le.Uint64(ph[32:]),
			memsz:  le.Uint64(ph[40:]),
		}
		if s.memsz == 0 {
			continue
		}
		switch {
		case s.filesz > s.memsz:
			return nil, fmt.Errorf("ELF: segment %d: file size %#x exceeds memory size %#x", i, s.filesz, s.memsz)
		case s.off > uint64(size) || s.filesz > uint64(size)-s.off:
			return nil, fmt.Errorf("ELF: segment %d: file range %#x+%#x lies beyond the end of the %d-byte file", i, s.off, s.filesz, size)
		case s.paddr > uint64(len(mem)) || s.memsz > uint64(len(mem))-s.paddr:
			return nil, fmt.Errorf("ELF: segment %d: %#x+%#x lies beyond guest memory (%#x bytes)", i, s.paddr, s.memsz, len(mem))
		case s.paddr < HighMemStart:
			return nil, fmt.Errorf("ELF: segment %d: load address %#x is below %#x, over the boot structures", i, s.paddr, HighMemStart)
		}
		segs = append(segs, s)
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("ELF: no loadable segment")
	}

	k := &Kernel{Start: ^uint64(0)}
	for _, s := range segs {
		k.Start = min(k.Start, s.paddr)
		k.End = max(k.End, s.paddr+s.memsz)
	}
	var ok bool
	if k.Entry, ok = physEntry(entry, segs); !ok {
		return nil, fmt.Errorf("ELF: entry point %#x is not inside a loadable segment", entry)
	}
	for _, s := range segs {
		if err := readFull(r, mem[s.paddr:s.paddr+s.filesz], int64(s.off)); err != nil {
			return nil, fmt.Errorf("ELF: read segment at %#x: %w", s.off, err)
		}
		clear(mem[s.paddr+s.filesz : s.paddr+s.memsz])
	}
	return k, nil
}

// physEntry maps e_entry to the physical address it runs at. vmlinux links
// at __START_KERNEL_map; its e_entry is physical in some builds (this guest's,
// and any with the PVH note's entry) and virtual in others.
func physEntry(entry uint64, segs []elfSegment) (uint64, bool) {
	for _, s := range segs {
		if entry >= kernelVirtBase && entry-s.vaddr < s.memsz && entry >= s.vaddr {
			return entry - s.vaddr + s.paddr, true
		}
		if entry < kernelVirtBase && entry >= s.paddr && entry-s.paddr < s.memsz {
			return entry, true
		}
	}
	return 0, false
}

// readFull fills dst from r at off. io.ReaderAt may return io.EOF along
// with a full read at the end of the input; that is no error here.
func readFull(r io.ReaderAt, dst []byte, off int64) error {
	n, err := r.ReadAt(dst, off)
	if n == len(dst) {
		return nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
