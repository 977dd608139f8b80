package virtio

import (
	"bytes"
	"testing"
)

func TestRNG(t *testing.T) {
	r := NewRNG()
	if r.Type() != IDRNG || r.Features() != RingFeatures || len(r.QueueSizes()) != 1 {
		t.Errorf("identity %d %#x %v", r.Type(), r.Features(), r.QueueSizes())
	}
	d := newTestDriver(t, r.QueueSizes()[0])
	irq := newTestIRQ()
	if err := r.Activate(d.mem, 0, []*Queue{d.q}, irq); err != nil {
		t.Fatal(err)
	}
	// Readable buffers are ignored; writable ones are filled.
	h1, a1 := d.add(rd([]byte("ignored")), wr(100), wr(200))
	h2, a2 := d.add(wr(rngMaxRequest + 4096))
	if err := r.Notify(0); err != nil {
		t.Fatal(err)
	}
	if id, n := d.mustUsed(); id != uint32(h1) || n != 300 {
		t.Errorf("used %d/%d, want %d/300", id, n, h1)
	}
	if id, n := d.mustUsed(); id != uint32(h2) || n != rngMaxRequest {
		t.Errorf("used %d/%d, want %d/%d", id, n, h2, rngMaxRequest)
	}
	zero := make([]byte, 64)
	for _, b := range [][]byte{d.mem[a1[1] : a1[1]+100], d.mem[a1[2]+136 : a1[2]+200], d.mem[a2[0]+rngMaxRequest-64 : a2[0]+rngMaxRequest]} {
		if bytes.Equal(b[:min(len(b), 64)], zero[:min(len(b), 64)]) {
			t.Error("buffer not filled")
		}
	}
	if !bytes.Equal(d.mem[a2[0]+rngMaxRequest:a2[0]+rngMaxRequest+4096], make([]byte, 4096)) {
		t.Error("wrote past the request bound")
	}
	if string(d.mem[a1[0]:a1[0]+7]) != "ignored" {
		t.Error("readable buffer written")
	}
	if irq.count(0) != 1 {
		t.Errorf("%d interrupts, want 1", irq.count(0))
	}
	r.Reset()
	if err := r.Notify(0); err != nil {
		t.Errorf("Notify after Reset: %v", err)
	}
}
