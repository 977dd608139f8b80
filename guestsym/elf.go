package guestsym

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/govmm/govmm/internal/regfile"
	"github.com/govmm/govmm/internal/scratch"
)

// ErrNoSymbols says an ELF file has no symbol table (a stripped kernel).
var ErrNoSymbols = errors.New("no symbol table")

// maxSymbols bounds an ELF symbol table: a kernel with every option built
// in has a few hundred thousand. maxStrings bounds the table's names.
const (
	maxSymbols = 1 << 22
	maxStrings = 256 << 20 // bytes
)

// OpenELF reads the code symbols of the ELF kernel open in f, and takes
// f: the table reads its names from it until Close (none once the file
// has been written to). f is closed on an error.
func OpenELF(f *os.File) (*Table, error) {
	src, err := newStampedFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	t, err := ReadELF(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	t.src, t.file = src, f
	return t, nil
}

// ReadELF reads the code symbols of an ELF kernel: those defined in a
// section of executable code, as nm's t and T. Each such section's end
// is marked, so an address past the last function of a section has no
// symbol. The table reads names from r as long as it is used.
//
// A 64-bit little-endian symbol table (an x86-64 vmlinux) is read a chunk
// at a time, its names through a scratch copy of the string table that is
// unmapped once read: the table keeps 12 bytes a symbol in the Go heap
// (debug/elf's Symbols, which decodes every symbol with a string of its
// own, allocated 10 MB to name the 26,000 code symbols of the shared
// kernel, and that garbage was most of what --exit-rips cost in RSS;
// found by a benchmark audit).
func ReadELF(r io.ReaderAt) (*Table, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("ELF: %w", err)
	}
	defer f.Close()
	if err := checkSymtabSize(f); err != nil {
		return nil, err
	}
	if f.Class == elf.ELFCLASS64 && f.ByteOrder == binary.LittleEndian {
		return codeSymbols64(f, r)
	}
	return codeSymbols(f)
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

// markCodeEnds adds an end-of-code marker at the end of each code section.
func markCodeEnds(f *elf.File, b *builder) {
	for _, sec := range f.Sections {
		if sec.Flags&elf.SHF_EXECINSTR != 0 && sec.Flags&elf.SHF_ALLOC != 0 && sec.Size > 0 {
			b.add(sec.Addr+sec.Size, noName, false)
		}
	}
}

// codeSymbols64 reads the code symbols of a 64-bit little-endian ELF's
// symbol table a chunk at a time; the table reads their names from r.
func codeSymbols64(f *elf.File, r io.ReaderAt) (*Table, error) {
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
	strsec := f.Sections[symtab.Link]
	if strsec.Flags&elf.SHF_COMPRESSED != 0 || strsec.Type == elf.SHT_NOBITS {
		return nil, fmt.Errorf("ELF: the symbol table's names are not stored plainly (section type %v, flags %v)", strsec.Type, strsec.Flags)
	}
	strs, err := scratch.Map(int(strsec.Size))
	if err != nil {
		return nil, fmt.Errorf("ELF symbol names: %w", err)
	}
	defer scratch.Unmap(strs)
	if _, err := strsec.ReadAt(strs, 0); err != nil {
		return nil, fmt.Errorf("ELF symbol names: %w", err)
	}
	le := binary.LittleEndian
	buf := make([]byte, 1024*elf.Sym64Size)
	// each calls code for every code symbol.
	each := func(code func(sym []byte)) error {
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
				if n >= 0 && isCode(f, strs[at:at+uint64(n)], elf.SectionIndex(le.Uint16(sym[6:])), sym[4]) {
					code(sym)
				}
			}
		}
		return nil
	}
	// Two passes, so that nothing grows: how many, then the symbols.
	count := 0
	if err := each(func([]byte) { count++ }); err != nil {
		return nil, err
	}
	if count == 0 {
		return nil, ErrNoSymbols
	}
	b := newBuilder(count+len(f.Sections), r, int64(strsec.Offset), 0)
	b.name = func(off uint32, _ *[maxName + 1]byte) []byte {
		return strs[off : int(off)+bytes.IndexByte(strs[off:], 0)]
	}
	if err := each(func(sym []byte) {
		b.add(le.Uint64(sym[8:]), le.Uint32(sym[0:]), elf.ST_BIND(sym[4]) != elf.STB_LOCAL)
	}); err != nil {
		return nil, err
	}
	if len(b.addrs) != count {
		return nil, fmt.Errorf("ELF: the symbol table changed while it was read")
	}
	markCodeEnds(f, b)
	return b.table(), nil
}

// codeSymbols reads the code symbols of any other ELF through debug/elf;
// the table keeps their names in memory.
func codeSymbols(f *elf.File) (*Table, error) {
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
	var code []entry
	for _, s := range syms {
		if isCode(f, []byte(s.Name), s.Section, s.Info) {
			code = append(code, entry{addr: s.Value, name: s.Name, global: elf.ST_BIND(s.Info) != elf.STB_LOCAL})
		}
	}
	if len(code) == 0 {
		return nil, ErrNoSymbols
	}
	b := entriesBuilder(code, len(f.Sections))
	markCodeEnds(f, b)
	return b.table(), nil
}

// entry is a symbol with its name in hand.
type entry struct {
	addr   uint64
	name   string // "" for an end-of-code marker
	global bool
}

// entriesBuilder puts es in a builder whose table keeps their names in
// memory, NUL-terminated one after another; room is left for extra more
// symbols.
func entriesBuilder(es []entry, extra int) *builder {
	var all strings.Builder
	offs := make([]uint32, len(es))
	for i, e := range es {
		offs[i] = noName
		if e.name != "" {
			offs[i] = uint32(all.Len())
			all.WriteString(e.name)
			all.WriteByte(0)
		}
	}
	b := newBuilder(len(es)+extra, strings.NewReader(all.String()), 0, 0)
	for i, e := range es {
		b.add(e.addr, offs[i], e.global)
	}
	return b
}

// checkSymtabSize refuses a symbol table or string table too large to
// hold, before anything reads them: their sizes are the file's word, and
// a sparse file can back any of them.
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
// System.map, told apart by the ELF magic number. The table reads names
// from the file until Close.
func Load(path string) (*Table, error) {
	f, size, err := regfile.Open(path)
	if err != nil {
		return nil, err
	}
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err == nil && string(magic) == elf.ELFMAG {
		t, err := OpenELF(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return t, nil
	}
	src, err := newStampedFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t, err := ReadSystemMap(f, size)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.src, t.file = src, f
	return t, nil
}
