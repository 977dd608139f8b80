package devices

import (
	"errors"
	"fmt"
	"math"
)

// ErrNotRegistered is returned by Unregister for a range the bus does not
// hold (never registered there, or already removed).
var ErrNotRegistered = errors.New("range is not registered on this bus")

// Unregister removes r. Like Register it swaps in a new slice, so a vCPU
// that loaded the old one may still deliver an access that was already in
// flight to r's device; devices that move (PCI BARs) must tolerate that.
func (b *Bus) Unregister(r *Range) error {
	if r == nil {
		return fmt.Errorf("%s: unregister: %w", b.name, ErrNotRegistered)
	}
	b.regMu.Lock()
	defer b.regMu.Unlock()
	old := b.load()
	for i, o := range old {
		if o == r {
			next := make([]*Range, 0, len(old)-1)
			next = append(next, old[:i]...)
			next = append(next, old[i+1:]...)
			b.ranges.Store(&next)
			return nil
		}
	}
	return fmt.Errorf("%s: unregister %s: %w", b.name, r, ErrNotRegistered)
}

// Reregister claims r's size for r's device again at base, keeping r's name
// and ID, and returns the new range. r must have come from this bus and
// must no longer be registered (Unregister it first). Keeping the ID means
// a device the guest moves around (a PCI BAR) keeps one exit-statistics row
// and the per-ID caches stay bounded however often it moves.
func (b *Bus) Reregister(r *Range, base uint64) (*Range, error) {
	if r == nil {
		return nil, fmt.Errorf("%s: reregister: %w", b.name, ErrNotRegistered)
	}
	if r.Size-1 > math.MaxUint64-base {
		return nil, fmt.Errorf("%s: reregister %s at %#x: %w", b.name, r.Name, base, ErrRangeOverflow)
	}
	b.regMu.Lock()
	defer b.regMu.Unlock()
	if r.ID < 0 || r.ID >= b.nextID {
		return nil, fmt.Errorf("%s: reregister %s: ID %d was never issued here: %w", b.name, r.Name, r.ID, ErrNotRegistered)
	}
	n := &Range{Name: r.Name, Base: base, Size: r.Size, Dev: r.Dev, ID: r.ID}
	old := b.load()
	for _, o := range old {
		if o.ID == r.ID {
			return nil, fmt.Errorf("%s: reregister %s: still registered as %s", b.name, r.Name, o)
		}
		if n.Base <= o.Last() && o.Base <= n.Last() {
			return nil, fmt.Errorf("%s: reregister %s: %w %s", b.name, n, ErrOverlap, o)
		}
	}
	i := b.search(old, base) + 1
	next := make([]*Range, 0, len(old)+1)
	next = append(next, old[:i]...)
	next = append(next, n)
	next = append(next, old[i:]...)
	b.ranges.Store(&next)
	return n, nil
}
