package guestsym

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Symbol is the code symbol an address falls in.
type Symbol struct {
	Name   string
	Offset uint64 // from the symbol's start
}

// String formats s as the kernel's own backtraces do: name+0xoff.
func (s Symbol) String() string { return fmt.Sprintf("%s+%#x", s.Name, s.Offset) }

// Table holds the code symbols of one kernel, sorted by address. It is
// immutable once built, so any number of goroutines may look it up.
type Table struct {
	// addrs[i] starts the range of names[i], which ends where the next
	// entry starts. An empty name marks a range that holds no code (past
	// the end of an ELF code section): addresses there have no symbol.
	addrs []uint64
	names []string
}

// entry is one symbol while a table is being built.
type entry struct {
	addr   uint64
	name   string // "" for an end-of-code marker
	global bool
}

// newTable sorts the entries and keeps one name per address.
func newTable(es []entry) *Table {
	slices.SortFunc(es, func(a, b entry) int {
		if c := cmp.Compare(a.addr, b.addr); c != 0 {
			return c
		}
		return preferred(a, b)
	})
	t := &Table{addrs: make([]uint64, 0, len(es)), names: make([]string, 0, len(es))}
	for i, e := range es {
		if i > 0 && es[i-1].addr == e.addr {
			continue // the first of equal addresses is the preferred one
		}
		if e.name == "" && len(t.names) > 0 && t.names[len(t.names)-1] == "" {
			continue // two markers in a row say the same thing
		}
		t.addrs = append(t.addrs, e.addr)
		t.names = append(t.names, e.name)
	}
	return t
}

// preferred orders symbols at the same address: a real name before an
// end-of-code marker (the next section may start where one ends), then
// global before local, then the name with fewer leading underscores
// (startup_64, not _stext), then by name, so the choice never depends on
// the order of the input.
func preferred(a, b entry) int {
	if (a.name == "") != (b.name == "") {
		if a.name == "" {
			return 1
		}
		return -1
	}
	if a.global != b.global {
		if a.global {
			return -1
		}
		return 1
	}
	ua := len(a.name) - len(strings.TrimLeft(a.name, "_"))
	ub := len(b.name) - len(strings.TrimLeft(b.name, "_"))
	if c := cmp.Compare(ua, ub); c != 0 {
		return c
	}
	return cmp.Compare(a.name, b.name)
}

// Len is the number of address ranges in the table, markers included.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.addrs)
}

// Lookup returns the code symbol addr falls in: the closest symbol at or
// below it, unless an end-of-code marker lies in between. Addresses below
// the first symbol (user space, a real-mode guest) have none. A nil
// Table has no symbols.
func (t *Table) Lookup(addr uint64) (Symbol, bool) {
	if t == nil {
		return Symbol{}, false
	}
	i := sort.Search(len(t.addrs), func(i int) bool { return t.addrs[i] > addr }) - 1
	if i < 0 || t.names[i] == "" {
		return Symbol{}, false
	}
	return Symbol{Name: t.names[i], Offset: addr - t.addrs[i]}, true
}

// Name returns addr as function+0xoff, or "" where Lookup finds nothing.
func (t *Table) Name(addr uint64) string {
	if s, ok := t.Lookup(addr); ok {
		return s.String()
	}
	return ""
}
