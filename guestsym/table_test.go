package guestsym

import (
	"strings"
	"testing"
)

// newTable builds a table of es, names in memory.
func newTable(es []entry) *Table { return entriesBuilder(es, 0).table() }

func TestLookup(t *testing.T) {
	tab := newTable([]entry{
		{addr: 0x3000, name: "gamma", global: true},
		{addr: 0x1000, name: "alpha"},
		{addr: 0x2000, name: "_beta_alias", global: true},
		{addr: 0x2000, name: "beta", global: true},
		{addr: 0x2000, name: "beta_local"},
		{addr: 0x4000}, // end of a code section
		{addr: 0x5000, name: "init_fn"},
	})
	for _, tc := range []struct {
		addr uint64
		want string
	}{
		{0x0fff, ""}, // below the first symbol
		{0x1000, "alpha+0x0"},
		{0x1fff, "alpha+0xfff"},
		{0x2000, "beta+0x0"}, // global, fewest underscores
		{0x2abc, "beta+0xabc"},
		{0x3fff, "gamma+0xfff"},
		{0x4000, ""}, // past the end of the section
		{0x4fff, ""},
		{0x5000, "init_fn+0x0"},
		{^uint64(0), "init_fn+0xffffffffffffafff"},
	} {
		if got := tab.Name(tc.addr); got != tc.want {
			t.Errorf("Name(%#x) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	if tab.Len() != 5 {
		t.Errorf("Len %d, want 5 (one name per address)", tab.Len())
	}
}

// The name kept for an address must not depend on input order.
func TestLookupOrderIndependent(t *testing.T) {
	es := []entry{
		{addr: 0x10, name: "b"}, {addr: 0x10, name: "a"}, {addr: 0x10, name: "__c", global: true},
		{addr: 0x10, name: "c", global: true}, {addr: 0x10},
	}
	want := newTable(append([]entry(nil), es...)).Name(0x10)
	if want != "c+0x0" {
		t.Fatalf("got %q, want c+0x0", want)
	}
	for i := range es {
		rot := append(append([]entry(nil), es[i:]...), es[:i]...)
		if got := newTable(rot).Name(0x10); got != want {
			t.Errorf("rotation %d: %q, want %q", i, got, want)
		}
	}
}

func TestNilTable(t *testing.T) {
	var tab *Table
	if _, ok := tab.Lookup(0x1000); ok || tab.Len() != 0 || tab.Name(1) != "" {
		t.Error("a nil table found a symbol")
	}
}

// End-of-code markers at one address (a crafted ELF's overlapping code
// sections) are ordered without reading a name they do not have: the ELF
// reader's name function indexes its string table with the offset, and
// a marker's would be out of range.
func TestMarkersAtOneAddress(t *testing.T) {
	names := "fn\x00"
	b := newBuilder(4, strings.NewReader(names), 0, 0)
	b.name = func(off uint32, _ *[maxName + 1]byte) []byte {
		if off == noName {
			t.Fatal("a marker's name was read")
		}
		return []byte(names[off : off+2])
	}
	b.add(0x20, noName, false)
	b.add(0x10, 0, true)
	b.add(0x20, noName, false)
	b.add(0x20, noName, false)
	tab := b.table()
	if tab.Len() != 2 || tab.Name(0x18) != "fn+0x8" || tab.Name(0x20) != "" {
		t.Errorf("%d ranges, 0x18 %q, 0x20 %q; want 2, fn+0x8, none", tab.Len(), tab.Name(0x18), tab.Name(0x20))
	}
}
