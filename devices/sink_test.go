package devices

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// gateWriter blocks every write until released, then keeps what it got.
// entered, if not nil, hears of each write as it begins.
type gateWriter struct {
	release chan struct{}
	entered chan struct{}
	mu      sync.Mutex
	got     []byte
}

func (w *gateWriter) Write(p []byte) (int, error) {
	if w.entered != nil {
		w.entered <- struct{}{}
	}
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, p...)
	return len(p), nil
}

// A stuck writer costs output, never a wait: writes return at once, at
// most max bytes wait (plus what the writer holds), the rest is counted
// as dropped, and what does arrive comes in order and in chunks.
func TestOutputSinkStuckWriter(t *testing.T) {
	const max, chunk, piece = 64 << 10, 4 << 10, 1 << 10
	w := &gateWriter{release: make(chan struct{})}
	s := NewOutputSink(w, max, chunk, nil)
	var sent []byte
	for i := range 3 * max / piece {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, piece)
		if n, err := s.Write(p); n != piece || err != nil {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, piece)
		}
		sent = append(sent, p...)
	}
	d := s.Dropped()
	if d < uint64(len(sent)-2*max) || d > uint64(len(sent)-max) {
		t.Errorf("dropped %d of %d bytes, want %d-%d", d, len(sent), len(sent)-2*max, len(sent)-max)
	}
	close(w.release)
	s.Flush(10 * time.Second)
	s.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	if uint64(len(w.got))+d != uint64(len(sent)) {
		t.Errorf("wrote %d and dropped %d of %d bytes", len(w.got), d, len(sent))
	}
	// What arrives is what was sent, in order, with pieces missing
	// where the buffer was full.
	if !isSubsequence(w.got, sent) {
		t.Error("the output that arrived is not what was sent, in order")
	}
	if n, _ := s.Write([]byte("late")); n != 4 || s.Dropped() != d+4 {
		t.Errorf("a write after Close: n %d, dropped %d (want 4, %d)", n, s.Dropped(), d+4)
	}
}

// isSubsequence reports whether sub is seq with some bytes left out.
func isSubsequence(sub, seq []byte) bool {
	for _, c := range sub {
		i := bytes.IndexByte(seq, c)
		if i < 0 {
			return false
		}
		seq = seq[i+1:]
	}
	return true
}

// A writer that is stuck costs one flush timeout, not one per flush (the
// end of Run and Close both flush); once it writes again, Flush waits
// for it again.
func TestOutputSinkFlushGivesUpOnce(t *testing.T) {
	w := &gateWriter{release: make(chan struct{}), entered: make(chan struct{}, 2)}
	s := NewOutputSink(w, 1<<10, 1<<10, nil)
	defer s.Close()
	s.Write([]byte("stuck"))
	<-w.entered
	s.Flush(time.Millisecond) // gives up: the writer is stuck in Write
	done := make(chan struct{})
	go func() {
		s.Flush(time.Hour)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a second Flush waited for a writer an earlier Flush gave up on")
	}
	close(w.release)
	for stalled := true; stalled; {
		// The writer has moved once the sink has seen its write end.
		s.mu.Lock()
		stalled = s.stalled
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	s.Write([]byte("more"))
	s.Flush(time.Hour) // this one waits for the writer again
	w.mu.Lock()
	defer w.mu.Unlock()
	if string(w.got) != "stuckmore" {
		t.Errorf("wrote %q, want %q", w.got, "stuckmore")
	}
}
