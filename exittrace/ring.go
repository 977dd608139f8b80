package exittrace

import (
	"sync/atomic"

	"github.com/govmm/govmm/internal/word"
)

// MaxEvents bounds the events a ring holds; DefaultEvents is what a ring
// holds unless asked otherwise (at 48 bytes an event, 3 MiB a track, paged
// in only as the ring fills).
const (
	MaxEvents     = 1 << 24
	DefaultEvents = 1 << 16
)

// slot is one event of a ring. seq is 2i+1 while event i is being
// written and 2i+2 once it is complete, so a reader that finds 2i+2
// before and after copying the fields has event i whole. The meaning of
// a, b and c depends on the track (VCPU.Exit, Track).
type slot struct {
	seq        word.Word
	start, dur word.Word // monotime ns
	a, b, c    word.Word
}

// ring is a fixed array of slots indexed by event number modulo its size.
type ring struct {
	slots []slot
	mask  uint64
}

func newRing(events int) ring {
	n := roundEvents(events)
	return ring{slots: make([]slot, n), mask: uint64(n - 1)}
}

// roundEvents is the ring size for a request of n events: a power of two
// between 1 and MaxEvents.
func roundEvents(n int) int {
	size := 1
	for size < n && size < MaxEvents {
		size <<= 1
	}
	return size
}

// event is one slot's contents as a reader copied it.
type event struct {
	start, dur int64
	a, b, c    uint64
}

// write fills event i; the caller owns slot i (it is the single writer,
// or won the slot in claim).
func (r *ring) write(s *slot, i uint64, e event) {
	s.start.Store(uint64(e.start))
	s.dur.Store(uint64(e.dur))
	s.a.Store(e.a)
	s.b.Store(e.b)
	s.c.Store(e.c)
	s.seq.Store(2*i + 2)
}

// read copies the complete events among the last len(slots) of the n
// written so far, oldest first. An event overwritten or still being
// written while it was copied is left out.
func (r *ring) read(n uint64) []event {
	size := uint64(len(r.slots))
	first := uint64(0)
	if n > size {
		first = n - size
	}
	out := make([]event, 0, n-first)
	for i := first; i < n; i++ {
		s := &r.slots[i&r.mask]
		want := 2*i + 2
		if s.seq.Load() != want {
			continue
		}
		e := event{
			start: int64(s.start.Load()), dur: int64(s.dur.Load()),
			a: s.a.Load(), b: s.b.Load(), c: s.c.Load(),
		}
		if s.seq.Load() == want {
			out = append(out, e)
		}
	}
	return out
}

// singleRing is a ring with one writer: no locked instruction per event.
type singleRing struct {
	ring
	head word.Word // events written
}

func (r *singleRing) record(e event) {
	i := r.head.Load()
	s := &r.slots[i&r.mask]
	s.seq.Store(2*i + 1)
	r.write(s, i, e)
	r.head.Store(i + 1)
}

func (r *singleRing) snapshot() (events []event, written uint64) {
	n := r.head.Load()
	return r.read(n), n
}

// sharedRing is a ring any number of goroutines write: each reserves an
// event number with an atomic add and then claims that number's slot.
type sharedRing struct {
	ring
	reserved atomic.Uint64 // event numbers handed out
}

func (r *sharedRing) record(e event) {
	i := r.reserved.Add(1) - 1
	s := &r.slots[i&r.mask]
	// The slot may still hold an event being written by a writer a whole
	// ring behind, or one already newer (this writer was preempted for a
	// whole ring's worth of events): either way this event is dropped
	// rather than mixed into it.
	old := s.seq.Load()
	if old&1 != 0 || old >= 2*i+2 || !s.seq.CompareAndSwap(old, 2*i+1) {
		return
	}
	r.write(s, i, e)
}

func (r *sharedRing) snapshot() (events []event, written uint64) {
	n := r.reserved.Load()
	return r.read(n), n
}
