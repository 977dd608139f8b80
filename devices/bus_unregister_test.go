package devices

import (
	"errors"
	"testing"
)

func TestUnregisterReregister(t *testing.T) {
	b := NewBus("mmio")
	a, err := b.Register("a", 0x1000, 0x100, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Register("c", 0x3000, 0x100, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Unregister(a); err != nil {
		t.Fatal(err)
	}
	if b.Find(0x1000) != nil {
		t.Error("unregistered range still found")
	}
	if err := b.Unregister(a); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("second Unregister: %v", err)
	}
	if err := b.Unregister(nil); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("Unregister(nil): %v", err)
	}
	// Overlapping another range fails and leaves the bus as it was.
	if _, err := b.Reregister(a, 0x3080); !errors.Is(err, ErrOverlap) {
		t.Errorf("Reregister over c: %v", err)
	}
	moved, err := b.Reregister(a, 0x2000)
	if err != nil {
		t.Fatal(err)
	}
	if moved.ID != a.ID || moved.Name != "a" || moved.Size != 0x100 || moved.Base != 0x2000 {
		t.Errorf("moved range %+v", moved)
	}
	if r := b.Find(0x20ff); r != moved {
		t.Errorf("Find at the new place = %v", r)
	}
	if _, err := b.Reregister(moved, 0x5000); err == nil {
		t.Error("Reregister of a registered range succeeded")
	}
	// The ID stays unique: a new registration gets the next one.
	d, err := b.Register("d", 0x9000, 1, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	if d.ID == a.ID || d.ID == c.ID {
		t.Errorf("new range reuses ID %d", d.ID)
	}
	if got := b.Ranges(); len(got) != 3 || got[0] != moved || got[1] != c || got[2] != d {
		t.Errorf("ranges %v", got)
	}
	foreign := &Range{Name: "x", Size: 1, ID: 99, Dev: &recorder{}}
	if _, err := b.Reregister(foreign, 0x8000); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("Reregister of a foreign range: %v", err)
	}
}
