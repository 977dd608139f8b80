package devices

import "testing"

// PIIX3's reset control register, as QEMU's rcr_write/rcr_read: bit 2
// resets and is not kept; otherwise only bit 1 is kept and read back.
func TestResetControl(t *testing.T) {
	resets := 0
	r := NewResetControl(func() { resets++ })
	read := func() byte {
		b := []byte{0}
		r.Read(0, b)
		return b[0]
	}
	for _, c := range []struct {
		write      byte
		resets     int
		readsAfter byte
	}{
		{0x02, 0, 0x02}, // Linux's reboot=pci: the reset type first,
		{0x06, 1, 0x02}, // then the reset
		{0x0e, 2, 0x02}, // a full reset (bit 3 is not a PIIX3 bit)
		{0x04, 3, 0x02},
		{0x0b, 3, 0x02}, // only bit 1 is kept
		{0x00, 3, 0x00},
		{0xfb, 3, 0x02},
	} {
		r.Write(0, []byte{c.write})
		if resets != c.resets || read() != c.readsAfter {
			t.Errorf("after writing %#x: %d resets, reads %#x; want %d, %#x", c.write, resets, read(), c.resets, c.readsAfter)
		}
	}
	r.Reset()
	if v := read(); v != 0 {
		t.Errorf("reads %#x after a machine reset, want 0", v)
	}
	// Only byte accesses at its one port count.
	r.Write(0, []byte{0x06, 0x06})
	r.Write(1, []byte{0x06})
	if resets != 3 {
		t.Errorf("wide or misplaced writes reset: %d resets", resets)
	}
	w := []byte{0, 0}
	r.Read(0, w)
	if w[0] != 0xff || w[1] != 0xff {
		t.Errorf("word read = % x, want ff ff", w)
	}
	NewResetControl(nil).Write(0, []byte{0x06}) // nil reset must not panic
}

// Port 0x92, as QEMU's port92_write/read/reset: bit 0 going from 0 to 1
// resets, reads return what was written, a machine reset clears bit 0.
func TestSystemControlA(t *testing.T) {
	resets := 0
	p := NewSystemControlA(func() { resets++ })
	read := func() byte {
		b := []byte{0}
		p.Read(0, b)
		return b[0]
	}
	for _, c := range []struct {
		write  byte
		resets int
	}{
		{0x02, 0}, // A20 on: no reset
		{0x03, 1}, // rising bit 0
		{0x03, 1}, // still set: no edge
		{0x01, 1},
		{0x00, 1},
		{0x01, 2},
	} {
		p.Write(0, []byte{c.write})
		if resets != c.resets || read() != c.write {
			t.Errorf("after writing %#x: %d resets, reads %#x; want %d, %#x", c.write, resets, read(), c.resets, c.write)
		}
	}
	p.Write(0, []byte{0x03})
	p.Reset()
	if v := read(); v != 0x02 {
		t.Errorf("reads %#x after a machine reset, want 0x02 (A20 kept, bit 0 cleared)", v)
	}
	p.Write(0, []byte{0x03})
	if resets != 3 {
		t.Errorf("writing 1 after a machine reset: %d resets, want 3", resets)
	}
	p.Write(0, []byte{0x00, 0x00})
	p.Write(0, []byte{0x01, 0x01})
	if resets != 3 || read() != 0x03 {
		t.Errorf("word writes changed the port: %d resets, reads %#x", resets, read())
	}
	NewSystemControlA(nil).Write(0, []byte{0x01}) // nil reset must not panic
}
