package guestsym

import (
	"debug/elf"
	"fmt"
	"os"
	"sync"
)

// Later is the symbol table of an ELF kernel, read at its first lookup
// rather than when opened. A VM names RIPs in its reports, and mostly
// once the guest has stopped and its RAM has been given back: read at
// start, the table (12 bytes a symbol, and what reading them leaves
// behind; half a MiB for the shared kernel) sat on the VMM's peak memory
// for the whole run. The file is stamped when opened, and read through
// the stamp: if it is written to before the first lookup, the read fails
// and nothing is named.
type Later struct {
	f    *os.File
	read func() (*Table, error)
	warn func(error)
	once sync.Once
	t    *Table
}

// OpenELFLater checks what it can of the ELF kernel open in f without
// reading its symbols (its headers, that it has a symbol table, the
// table's size), and takes f: it is closed by Close, or here on an
// error. warn is told why, if the symbols fail to read at the first
// lookup; nothing is named then.
func OpenELFLater(f *os.File, warn func(error)) (*Later, error) {
	src, err := newStampedFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	ef, err := elf.NewFile(src)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ELF: %w", err)
	}
	hasSymtab := false
	for _, s := range ef.Sections {
		hasSymtab = hasSymtab || s.Type == elf.SHT_SYMTAB
	}
	if !hasSymtab {
		f.Close()
		return nil, ErrNoSymbols
	}
	if err := checkSymtabSize(ef); err != nil {
		f.Close()
		return nil, err
	}
	return &Later{f: f, read: func() (*Table, error) { return ReadELF(src) }, warn: warn}, nil
}

// Table reads the table on the first call; nil if it failed to.
func (l *Later) Table() *Table {
	l.once.Do(func() {
		t, err := l.read()
		if err != nil {
			l.warn(err)
			return
		}
		l.t = t
	})
	return l.t
}

// Name returns addr as function+0xoff, or "" where the table names
// nothing (Table.Name).
func (l *Later) Name(addr uint64) string { return l.Table().Name(addr) }

// Close closes the file.
func (l *Later) Close() error { return l.f.Close() }
