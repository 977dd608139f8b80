package guestsym

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/govmm/govmm/internal/regfile"
)

// Symbol is the code symbol an address falls in.
type Symbol struct {
	Name   string
	Offset uint64 // from the symbol's start
}

// String formats s as the kernel's own backtraces do: name+0xoff.
func (s Symbol) String() string { return fmt.Sprintf("%s+%#x", s.Name, s.Offset) }

// Table holds the code symbols of one kernel, sorted by address. Their
// names stay where they were read from (the ELF's string table, the
// System.map) and are read again for each lookup: an exit table names a
// few hundred RIPs at most, and the shared kernel's 26,000 names would
// otherwise cost half a MiB of RSS for as long as the VM runs. It is
// immutable once built, so any number of goroutines may look it up.
type Table struct {
	// addrs[i] starts the range named at names[i] in src, which ends where
	// the next entry starts. noName marks a range that holds no code (past
	// the end of an ELF code section): addresses there have no symbol.
	addrs []uint64
	names []uint32
	src   io.ReaderAt
	base  int64 // where the offsets in names count from in src
	// end is the largest byte that ends a name in src: 0 in an ELF string
	// table, ' ' in a System.map (a blank, a newline, a carriage return).
	end  byte
	file io.Closer // the file src reads, closed by Close; nil if none
}

const noName = math.MaxUint32

// Len is the number of address ranges in the table, markers included.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.addrs)
}

// Lookup returns the code symbol addr falls in: the closest symbol at or
// below it, unless an end-of-code marker lies in between. Addresses below
// the first symbol (user space, a real-mode guest) have none, nor has any
// address once the file the names are read from has been written to. A
// nil Table has no symbols.
func (t *Table) Lookup(addr uint64) (Symbol, bool) {
	if t == nil {
		return Symbol{}, false
	}
	i := sort.Search(len(t.addrs), func(i int) bool { return t.addrs[i] > addr }) - 1
	if i < 0 || t.names[i] == noName {
		return Symbol{}, false
	}
	var buf [maxName + 1]byte
	name := t.readName(t.names[i], &buf)
	if name == nil {
		return Symbol{}, false
	}
	return Symbol{Name: string(name), Offset: addr - t.addrs[i]}, true
}

// Name returns addr as function+0xoff, or "" where Lookup finds nothing.
func (t *Table) Name(addr uint64) string {
	if s, ok := t.Lookup(addr); ok {
		return s.String()
	}
	return ""
}

// readName reads the name at off in src into buf; nil if it is not one
// a load would have kept (the file changed under it).
func (t *Table) readName(off uint32, buf *[maxName + 1]byte) []byte {
	n, err := t.src.ReadAt(buf[:], t.base+int64(off))
	if n == 0 || err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	i := 0
	for i < n && buf[i] > t.end {
		i++
	}
	if i == 0 || i > maxName || controlAt(buf[:i]) >= 0 {
		return nil
	}
	return buf[:i]
}

// Close closes the file the names are read from, if the table has one.
// A nil Table has none.
func (t *Table) Close() error {
	if t == nil || t.file == nil {
		return nil
	}
	return t.file.Close()
}

// stampedFile reads a file as it was when stamped, and nothing once it has
// been written to since: the names of a rebuilt kernel's symbol table are
// not the ones at the offsets the table keeps.
type stampedFile struct {
	f     *os.File
	stamp regfile.Stamp
}

var errChanged = errors.New("written to since it was loaded")

func newStampedFile(f *os.File) (*stampedFile, error) {
	s, err := regfile.StampOf(f)
	if err != nil {
		return nil, err
	}
	return &stampedFile{f: f, stamp: s}, nil
}

func (s *stampedFile) ReadAt(p []byte, off int64) (int, error) {
	if now, err := regfile.StampOf(s.f); err != nil || !now.Same(s.stamp) {
		return 0, errChanged
	}
	return s.f.ReadAt(p, off)
}

func (s *stampedFile) Close() error { return s.f.Close() }

// builder gathers a table's symbols, sorts them and keeps one per address.
type builder struct {
	Table
	global []bool
	// name reads a name into buf while the table is built (to order
	// symbols at one address): Table.readName, unless the names are at
	// hand. Less compares two, in bufs.
	name func(off uint32, buf *[maxName + 1]byte) []byte
	bufs [2][maxName + 1]byte
}

// newBuilder makes room for n symbols, whose names the table will read
// from src at base plus their offset, each ending at a byte <= end.
func newBuilder(n int, src io.ReaderAt, base int64, end byte) *builder {
	b := &builder{
		Table:  Table{addrs: make([]uint64, 0, n), names: make([]uint32, 0, n), src: src, base: base, end: end},
		global: make([]bool, 0, n),
	}
	b.name = b.Table.readName
	return b
}

// add adds the symbol at addr whose name starts at name (noName: an end of
// code).
func (b *builder) add(addr uint64, name uint32, global bool) {
	b.addrs = append(b.addrs, addr)
	b.names = append(b.names, name)
	b.global = append(b.global, global)
}

func (b *builder) Len() int { return len(b.addrs) }
func (b *builder) Swap(i, j int) {
	b.addrs[i], b.addrs[j] = b.addrs[j], b.addrs[i]
	b.names[i], b.names[j] = b.names[j], b.names[i]
	b.global[i], b.global[j] = b.global[j], b.global[i]
}

// Less orders by address, then symbols at the same address: a real name
// before an end-of-code marker (the next section may start where one
// ends), then global before local, then the name with fewer leading
// underscores (startup_64, not _stext), then by name, so the choice never
// depends on the order of the input.
func (b *builder) Less(i, j int) bool {
	if c := cmp.Compare(b.addrs[i], b.addrs[j]); c != 0 {
		return c < 0
	}
	if mi, mj := b.names[i] == noName, b.names[j] == noName; mi || mj {
		return !mi && mj // markers have no name to read: all alike
	}
	if b.global[i] != b.global[j] {
		return b.global[i]
	}
	ni, nj := b.name(b.names[i], &b.bufs[0]), b.name(b.names[j], &b.bufs[1])
	ui, uj := len(ni)-len(bytes.TrimLeft(ni, "_")), len(nj)-len(bytes.TrimLeft(nj, "_"))
	if ui != uj {
		return ui < uj
	}
	return bytes.Compare(ni, nj) < 0
}

// table sorts the symbols and keeps the first of each address (the
// preferred one) and one of markers in a row, which say the same thing.
func (b *builder) table() *Table {
	sort.Sort(b)
	t := b.Table
	t.addrs, t.names = b.addrs[:0], b.names[:0]
	for i := range b.addrs {
		addr, name := b.addrs[i], b.names[i]
		if i > 0 && b.addrs[i-1] == addr {
			continue
		}
		if name == noName && len(t.names) > 0 && t.names[len(t.names)-1] == noName {
			continue
		}
		t.addrs = append(t.addrs, addr)
		t.names = append(t.names, name)
	}
	return &t
}
