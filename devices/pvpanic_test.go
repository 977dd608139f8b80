package devices

import (
	"slices"
	"testing"
)

func TestPVPanicRegisters(t *testing.T) {
	var got []uint8
	p, err := NewPVPanic(func(ev uint8) { got = append(got, ev) })
	if err != nil {
		t.Fatal(err)
	}
	r := pvpanicRegs{p}
	b := make([]byte, 4)
	r.Read(0, b)
	if want := []byte{PVPanicPanicked | PVPanicCrashLoaded, 0, 0, 0}; !slices.Equal(b, want) {
		t.Errorf("read at 0 = % x, want % x", b, want)
	}
	r.Read(1, b[:1])
	if b[0] != 0 {
		t.Errorf("read at 1 = %#x, want 0", b[0])
	}
	// Unknown bits are dropped, an empty set and other offsets are no report.
	for _, w := range []struct {
		off uint64
		val byte
	}{{0, 0}, {0, 0xfc}, {1, 1}, {0, 0xff}, {0, 1}, {0, 2}} {
		r.Write(w.off, []byte{w.val})
	}
	if want := []uint8{3, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if id := p.Bytes(PCIVendorID, 4); !slices.Equal(id, []byte{0x36, 0x1b, 0x11, 0x00}) {
		t.Errorf("vendor/device % x", id)
	}
}
