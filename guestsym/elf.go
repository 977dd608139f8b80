package guestsym

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"

	"github.com/govmm/govmm/internal/regfile"
)

// ErrNoSymbols says an ELF file has no symbol table (a stripped kernel).
var ErrNoSymbols = errors.New("no symbol table")

// maxSymbols bounds an ELF symbol table: a kernel with every option built
// in has a few hundred thousand. maxStrings bounds the table's names.
const (
	maxSymbols = 1 << 22
	maxStrings = 256 << 20 // bytes
)

// ReadELF reads the code symbols of an ELF kernel: those defined in a
// section of executable code, as nm's t and T. Each such section's end
// is marked, so an address past the last function of a section has no
// symbol.
func ReadELF(r io.ReaderAt) (*Table, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("ELF: %w", err)
	}
	defer f.Close()
	if err := checkSymtabSize(f); err != nil {
		return nil, err
	}
	syms, err := f.Symbols()
	if errors.Is(err, elf.ErrNoSymbols) {
		return nil, ErrNoSymbols
	}
	if err != nil {
		return nil, fmt.Errorf("ELF symbols: %w", err)
	}
	if len(syms) > maxSymbols {
		return nil, fmt.Errorf("ELF: %d symbols, more than %d", len(syms), maxSymbols)
	}
	var es []entry
	for _, s := range syms {
		if s.Section == elf.SHN_UNDEF || int(s.Section) >= len(f.Sections) || s.Name == "" || len(s.Name) > maxName || controlAt(s.Name) >= 0 {
			continue
		}
		sec := f.Sections[s.Section]
		if sec.Flags&elf.SHF_EXECINSTR == 0 || elf.ST_TYPE(s.Info) == elf.STT_SECTION || elf.ST_TYPE(s.Info) == elf.STT_FILE {
			continue
		}
		es = append(es, entry{addr: s.Value, name: s.Name, global: elf.ST_BIND(s.Info) != elf.STB_LOCAL})
	}
	if len(es) == 0 {
		return nil, ErrNoSymbols
	}
	for _, sec := range f.Sections {
		if sec.Flags&elf.SHF_EXECINSTR != 0 && sec.Flags&elf.SHF_ALLOC != 0 && sec.Size > 0 {
			es = append(es, entry{addr: sec.Addr + sec.Size})
		}
	}
	return newTable(es), nil
}

// checkSymtabSize refuses a symbol table or string table too large to
// hold, before Symbols reads them whole: their sizes are the file's word,
// and a sparse file can back any of them.
func checkSymtabSize(f *elf.File) error {
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_SYMTAB {
			continue
		}
		if sec.Size > maxSymbols*elf.Sym64Size {
			return fmt.Errorf("ELF: a symbol table of %d bytes, more than %d symbols", sec.Size, maxSymbols)
		}
		if int(sec.Link) < len(f.Sections) && f.Sections[sec.Link].Size > maxStrings {
			return fmt.Errorf("ELF: symbol names of %d bytes, more than %d", f.Sections[sec.Link].Size, maxStrings)
		}
	}
	return nil
}

// Load reads the symbols of path, an ELF kernel (a vmlinux) or a
// System.map, told apart by the ELF magic number.
func Load(path string) (*Table, error) {
	f, _, err := regfile.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err == nil && string(magic) == elf.ELFMAG {
		t, err := ReadELF(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return t, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t, err := ReadSystemMap(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}
