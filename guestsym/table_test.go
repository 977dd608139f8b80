package guestsym

import "testing"

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
