package boot

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// walk translates va through the 4-level tables at PML4Addr, 2 MiB pages.
func walk(mem []byte, va uint64) (uint64, bool) {
	e := binary.LittleEndian.Uint64(mem[PML4Addr+(va>>39&511)*8:])
	if e&1 == 0 {
		return 0, false
	}
	e = binary.LittleEndian.Uint64(mem[e&^0xfff+(va>>30&511)*8:])
	if e&1 == 0 {
		return 0, false
	}
	e = binary.LittleEndian.Uint64(mem[e&^0xfff+(va>>21&511)*8:])
	if e&1 == 0 || e&ptePS == 0 {
		return 0, false
	}
	return e&^(pdSpan-1)&^(1<<63) | va&(pdSpan-1), true
}

func TestWritePageTables(t *testing.T) {
	tests := []struct {
		upTo   uint64
		mapped uint64 // first unmapped address
	}{
		{0, 1 << 30},
		{0x1a1c000, 1 << 30},
		{1 << 30, 1 << 30},
		{1<<30 + 1, 2 << 30},
		{3 << 30, 3 << 30},
		{4 << 30, 4 << 30},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%#x", tt.upTo), func(t *testing.T) {
			mem := make([]byte, 1<<20)
			for i := PML4Addr; i < PDAddr+MaxPDPages*pageSize; i++ {
				mem[i] = 0xff // stale tables must go
			}
			if err := WritePageTables(mem, tt.upTo); err != nil {
				t.Fatal(err)
			}
			for _, va := range []uint64{0, 0x7000, 0x1000123, 0x1fffff, tt.mapped - 1, tt.mapped / 2} {
				if pa, ok := walk(mem, va); !ok || pa != va {
					t.Errorf("%#x -> %#x, %v; want identity", va, pa, ok)
				}
			}
			if _, ok := walk(mem, tt.mapped); ok && tt.mapped < 512<<30 {
				t.Errorf("%#x mapped", tt.mapped)
			}
		})
	}
	if err := WritePageTables(make([]byte, 1<<20), 4<<30+1); err == nil {
		t.Errorf("upTo past 4 GiB: no error")
	}
	if err := WritePageTables(make([]byte, 0xc000), 0); err == nil {
		t.Errorf("memory too small: no error")
	}
}

func TestWriteGDT(t *testing.T) {
	mem := make([]byte, 0x1000)
	if err := WriteGDT(mem); err != nil {
		t.Fatal(err)
	}
	for sel, want := range map[int]uint64{0: 0, CodeSelector: 0x00af9b000000ffff, DataSelector: 0x00cf93000000ffff, TSSSelector: 0x008f8b000000ffff} {
		if got := binary.LittleEndian.Uint64(mem[GDTAddr+sel:]); got != want {
			t.Errorf("selector %#x: %#x, want %#x", sel, got, want)
		}
	}
	if err := WriteGDT(make([]byte, 0x510)); err == nil {
		t.Errorf("memory too small: no error")
	}
}
