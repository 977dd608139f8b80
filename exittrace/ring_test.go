package exittrace

import (
	"sync"
	"testing"
)

// exitEvent is the event record(i) writes: every field derived from i,
// so a torn copy shows.
func exitEvent(i uint64) event {
	return event{start: int64(10 * i), dur: int64(i), a: i * 3, b: i * 5, c: i * 7}
}

func checkWhole(t *testing.T, e event) uint64 {
	t.Helper()
	i := uint64(e.dur)
	if e != exitEvent(i) {
		t.Fatalf("torn event %+v", e)
	}
	return i
}

// A full ring keeps the newest events, oldest first, and counts the
// overwritten ones as dropped.
func TestRingWrapsAndCountsDrops(t *testing.T) {
	for _, tc := range []struct{ size, written, kept int }{
		{8, 0, 0}, {8, 5, 5}, {8, 8, 8}, {8, 9, 8}, {8, 20, 8}, {1, 3, 1},
	} {
		r := singleRing{ring: newRing(tc.size)}
		for i := 0; i < tc.written; i++ {
			r.record(exitEvent(uint64(i)))
		}
		evs, n := r.snapshot()
		if int(n) != tc.written || len(evs) != tc.kept {
			t.Errorf("size %d, %d written: snapshot has %d of %d, want %d of %d", tc.size, tc.written, len(evs), n, tc.kept, tc.written)
			continue
		}
		for j, e := range evs {
			if want := uint64(tc.written - tc.kept + j); checkWhole(t, e) != want {
				t.Errorf("size %d, %d written: event %d is number %d, want %d", tc.size, tc.written, j, e.dur, want)
			}
		}
	}
}

func TestRoundEvents(t *testing.T) {
	for _, tc := range []struct{ in, want int }{
		{-1, 1}, {0, 1}, {1, 1}, {3, 4}, {4, 4}, {5, 8}, {1 << 16, 1 << 16}, {MaxEvents + 1, MaxEvents}, {1 << 40, MaxEvents},
	} {
		if got := roundEvents(tc.in); got != tc.want {
			t.Errorf("roundEvents(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// A reader copying a ring while its writer laps it gets only whole
// events, in order, and the count adds up.
func TestRingReadWhileWritten(t *testing.T) {
	r := singleRing{ring: newRing(16)}
	const total = 200000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(0); i < total; i++ {
			r.record(exitEvent(i))
		}
	}()
	for reading := true; reading; {
		select {
		case <-done:
			reading = false
		default:
		}
		evs, n := r.snapshot()
		last := int64(-1)
		for _, e := range evs {
			i := checkWhole(t, e)
			if int64(i) <= last || i >= n {
				t.Fatalf("event %d after %d in a snapshot of %d written", i, last, n)
			}
			last = int64(i)
		}
	}
	if evs, n := r.snapshot(); n != total || len(evs) != 16 {
		t.Fatalf("after the writer: %d of %d, want 16 of %d", len(evs), n, total)
	}
}

// Writers sharing a ring never mix their events: whatever is kept is
// whole, and kept plus dropped is everything written.
func TestSharedRingWriters(t *testing.T) {
	r := sharedRing{ring: newRing(64)}
	const writers, each = 4, 20000
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r.record(exitEvent(uint64(w*each + i)))
			}
		}()
	}
	// Read while they write, too.
	stop := make(chan struct{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			select {
			case <-stop:
				return
			default:
			}
			evs, _ := r.snapshot()
			for _, e := range evs {
				checkWhole(t, e)
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-read
	evs, n := r.snapshot()
	if n != writers*each {
		t.Fatalf("%d reserved, want %d", n, writers*each)
	}
	if len(evs) == 0 || len(evs) > 64 {
		t.Fatalf("%d events kept in a ring of 64", len(evs))
	}
	seen := map[uint64]bool{}
	for _, e := range evs {
		i := checkWhole(t, e)
		if seen[i] {
			t.Fatalf("event %d kept twice", i)
		}
		seen[i] = true
	}
}
