package guestsym

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"testing"

	"github.com/govmm/govmm/internal/testenv"
)

// tinyELF builds a 64-bit little-endian ELF with a code section at
// 0x1000 (0x100 bytes), a data section, and a symbol table naming
// funcs (at 0x1000 + 0x10*i, in the code) and one data symbol.
func tinyELF(funcs ...string) []byte {
	le := binary.LittleEndian
	strtab := []byte{0}
	name := func(s string) uint32 {
		off := uint32(len(strtab))
		strtab = append(append(strtab, s...), 0)
		return off
	}
	sym := func(nameOff uint32, info byte, shndx uint16, value uint64) []byte {
		b := make([]byte, elf.Sym64Size)
		le.PutUint32(b[0:], nameOff)
		b[4] = info
		le.PutUint16(b[6:], shndx)
		le.PutUint64(b[8:], value)
		return b
	}
	symtab := make([]byte, elf.Sym64Size) // the null symbol
	for i, f := range funcs {
		symtab = append(symtab, sym(name(f), byte(elf.STB_GLOBAL)<<4|byte(elf.STT_FUNC), 1, 0x1000+0x10*uint64(i))...)
	}
	symtab = append(symtab, sym(name("some_data"), byte(elf.STB_GLOBAL)<<4|byte(elf.STT_OBJECT), 2, 0x2000)...)
	shstrtab := []byte("\x00.text\x00.data\x00.symtab\x00.strtab\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	dataOff := ehsize
	symOff := dataOff
	strOff := symOff + len(symtab)
	shstrOff := strOff + len(strtab)
	shOff := (shstrOff + len(shstrtab) + 7) &^ 7
	out := make([]byte, shOff+6*shentsize)
	copy(out, elf.ELFMAG)
	out[4], out[5], out[6] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	le.PutUint16(out[16:], uint16(elf.ET_EXEC))
	le.PutUint16(out[18:], uint16(elf.EM_X86_64))
	le.PutUint32(out[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(out[40:], uint64(shOff))
	le.PutUint16(out[52:], ehsize)
	le.PutUint16(out[58:], shentsize)
	le.PutUint16(out[60:], 6) // sections
	le.PutUint16(out[62:], 5) // .shstrtab's index
	copy(out[symOff:], symtab)
	copy(out[strOff:], strtab)
	copy(out[shstrOff:], shstrtab)
	sh := func(i int, nameOff, typ uint32, flags, addr, off, size uint64, link uint32, entsize uint64) {
		h := out[shOff+i*shentsize:]
		le.PutUint32(h[0:], nameOff)
		le.PutUint32(h[4:], typ)
		le.PutUint64(h[8:], flags)
		le.PutUint64(h[16:], addr)
		le.PutUint64(h[24:], off)
		le.PutUint64(h[32:], size)
		le.PutUint32(h[40:], link)
		le.PutUint64(h[56:], entsize)
	}
	sh(1, 1, uint32(elf.SHT_NOBITS), uint64(elf.SHF_ALLOC|elf.SHF_EXECINSTR), 0x1000, 0, 0x100, 0, 0)
	sh(2, 7, uint32(elf.SHT_NOBITS), uint64(elf.SHF_ALLOC|elf.SHF_WRITE), 0x2000, 0, 0x100, 0, 0)
	sh(3, 13, uint32(elf.SHT_SYMTAB), 0, 0, uint64(symOff), uint64(len(symtab)), 4, elf.Sym64Size)
	sh(4, 21, uint32(elf.SHT_STRTAB), 0, 0, uint64(strOff), uint64(len(strtab)), 0, 0)
	sh(5, 29, uint32(elf.SHT_STRTAB), 0, 0, uint64(shstrOff), uint64(len(shstrtab)), 0, 0)
	return out
}

func TestReadTinyELF(t *testing.T) {
	tab, err := ReadELF(bytes.NewReader(tinyELF("alpha", "beta", "_beta_alias")))
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[uint64]string{
		0x0fff: "", 0x1004: "alpha+0x4", 0x101f: "beta+0xf", 0x1025: "_beta_alias+0x5", 0x10ff: "_beta_alias+0xdf", 0x1100: "", 0x2000: "",
	} {
		if got := tab.Name(addr); got != want {
			t.Errorf("Name(%#x) = %q, want %q", addr, got, want)
		}
	}
}

// A kernel's symbol table is user input (--kernel, --guest-symbols):
// whatever its bytes, ReadELF returns a table or an error, and a table
// it returns looks up without a panic.
func FuzzReadELF(f *testing.F) {
	testenv.AddSeed(f, "tiny", tinyELF("alpha", "beta", "_beta_alias"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := ReadELF(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, a := range []uint64{0, 0x1000, 0x1008, 0x10ff, 0x1100, 0x2000, ^uint64(0)} {
			tab.Name(a)
		}
		for i := 1; i < len(tab.addrs); i++ {
			if tab.addrs[i-1] >= tab.addrs[i] {
				t.Fatalf("addresses out of order at %d", i)
			}
		}
	})
}
