package guestsym

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

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
//
// A 64-bit little-endian symbol table (an x86-64 vmlinux) is read a chunk
// at a time and only its code symbols' names are kept, in one string:
// debug/elf's Symbols, which decodes every symbol with a string of its
// own, allocated 10 MB to name the 26,000 code symbols of the shared
// kernel, and that garbage was most of what --exit-rips cost in RSS
// (found by a benchmark audit).
func ReadELF(r io.ReaderAt) (*Table, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("ELF: %w", err)
	}
	defer f.Close()
	if err := checkSymtabSize(f); err != nil {
		return nil, err
	}
	var es []entry
	if f.Class == elf.ELFCLASS64 && f.ByteOrder == binary.LittleEndian {
		es, err = codeSymbols64(f)
	} else {
		es, err = codeSymbols(f)
	}
	if err != nil {
		return nil, err
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

// isCode reports whether a symbol named name, defined in section sec with
// st_info info, is one the table keeps: a function or label in a section
// of code, with a name a person can read.
func isCode(f *elf.File, name []byte, sec elf.SectionIndex, info byte) bool {
	if sec == elf.SHN_UNDEF || int(sec) >= len(f.Sections) || len(name) == 0 || len(name) > maxName || controlAt(name) >= 0 {
		return false
	}
	typ := elf.ST_TYPE(info)
	return f.Sections[sec].Flags&elf.SHF_EXECINSTR != 0 && typ != elf.STT_SECTION && typ != elf.STT_FILE
}

// codeSymbols64 reads the code symbols of a 64-bit little-endian ELF's
// symbol table a chunk at a time.
func codeSymbols64(f *elf.File) ([]entry, error) {
	var symtab *elf.Section
	for _, s := range f.Sections {
		if s.Type == elf.SHT_SYMTAB {
			symtab = s
			break
		}
	}
	if symtab == nil {
		return nil, ErrNoSymbols
	}
	if symtab.Size%elf.Sym64Size != 0 {
		return nil, fmt.Errorf("ELF: a symbol table of %d bytes, not whole symbols", symtab.Size)
	}
	if int(symtab.Link) >= len(f.Sections) {
		return nil, fmt.Errorf("ELF: the symbol table's names are in section %d, of %d", symtab.Link, len(f.Sections))
	}
	strs, err := f.Sections[symtab.Link].Data()
	if err != nil {
		return nil, fmt.Errorf("ELF symbol names: %w", err)
	}
	le := binary.LittleEndian
	buf := make([]byte, 1024*elf.Sym64Size)
	// each calls code for every code symbol, with its name in strs.
	each := func(code func(sym, name []byte)) error {
		rd := symtab.Open()
		for left := symtab.Size; left > 0; {
			chunk := buf[:min(uint64(len(buf)), left)]
			if _, err := io.ReadFull(rd, chunk); err != nil {
				return fmt.Errorf("ELF symbols: %w", err)
			}
			left -= uint64(len(chunk))
			for sym := chunk; len(sym) > 0; sym = sym[elf.Sym64Size:] {
				at := uint64(le.Uint32(sym[0:]))
				if at >= uint64(len(strs)) {
					continue
				}
				n := bytes.IndexByte(strs[at:], 0)
				if n < 0 {
					continue
				}
				if name := strs[at : at+uint64(n)]; isCode(f, name, elf.SectionIndex(le.Uint16(sym[6:])), sym[4]) {
					code(sym, name)
				}
			}
		}
		return nil
	}
	// Two passes, so that nothing grows: how many symbols and name bytes,
	// then the symbols, their names in one string.
	count, size := 0, 0
	if err := each(func(_, name []byte) { count, size = count+1, size+len(name) }); err != nil {
		return nil, err
	}
	var names strings.Builder
	names.Grow(size)
	es := make([]entry, 0, count+len(f.Sections))
	ends := make([]int, 0, count)
	if err := each(func(sym, name []byte) {
		names.Write(name)
		ends = append(ends, names.Len())
		es = append(es, entry{addr: le.Uint64(sym[8:]), global: elf.ST_BIND(sym[4]) != elf.STB_LOCAL})
	}); err != nil {
		return nil, err
	}
	if len(es) != count || names.Len() != size {
		return nil, fmt.Errorf("ELF: the symbol table changed while it was read")
	}
	all, start := names.String(), 0
	for i, end := range ends {
		es[i].name, start = all[start:end], end
	}
	return es, nil
}

// codeSymbols reads the code symbols of any other ELF through debug/elf.
func codeSymbols(f *elf.File) ([]entry, error) {
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
		if isCode(f, []byte(s.Name), s.Section, s.Info) {
			es = append(es, entry{addr: s.Value, name: s.Name, global: elf.ST_BIND(s.Info) != elf.STB_LOCAL})
		}
	}
	return es, nil
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
