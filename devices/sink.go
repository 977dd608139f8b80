package devices

import (
	"io"
	"sync"
	"time"
)

// OutputSink hands a device's output to a host writer from a goroutine of
// its own, so that a slow or stuck terminal never stalls a vCPU or a
// notifier, nor therefore a pause, a reset or a stop that waits for them.
// Output that finds max bytes already waiting is dropped and counted, as
// QEMU's serial port and virtconsole drop what their character device
// does not take.
type OutputSink struct {
	out   io.Writer
	max   int         // bytes that may wait for the writer
	chunk int         // largest single write to out
	warn  func(error) // told of write errors (the output is then dropped)

	mu      sync.Mutex
	buf     []byte          // waiting for the writer goroutine
	busy    bool            // the goroutine is writing
	started bool            // the goroutine runs (it starts on first output)
	closed  bool            // no more output is taken
	wake    chan struct{}   // output arrived, or closed
	idle    []chan struct{} // closed when buf is empty and nothing is being written
	stalled bool            // a Flush gave up and no write has ended since
	dropped uint64
}

// NewOutputSink returns a sink that keeps up to max bytes for out and
// writes them in pieces of at most chunk bytes, so a writer shared with
// another device is held briefly. warn (may be nil) hears of write errors.
func NewOutputSink(out io.Writer, max, chunk int, warn func(error)) *OutputSink {
	if out == nil {
		out = io.Discard
	}
	if warn == nil {
		warn = func(error) {}
	}
	return &OutputSink{out: out, max: max, chunk: chunk, warn: warn, wake: make(chan struct{}, 1)}
}

// Write takes what fits of p and never waits for the host writer; what
// does not fit is counted as dropped. It always reports len(p) written:
// the device has sent it.
func (s *OutputSink) Write(p []byte) (int, error) {
	n := len(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.dropped += uint64(n)
		return n, nil
	}
	if room := s.max - len(s.buf); len(p) > room {
		s.dropped += uint64(len(p) - room)
		p = p[:room]
	}
	if len(p) == 0 {
		return n, nil
	}
	s.buf = append(s.buf, p...)
	if !s.started {
		s.started = true
		go s.run()
	}
	select {
	case s.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
	return n, nil
}

// Drop counts n bytes of output that were never offered.
func (s *OutputSink) Drop(n uint64) {
	s.mu.Lock()
	s.dropped += n
	s.mu.Unlock()
}

// Dropped returns how many bytes of output were dropped.
func (s *OutputSink) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// run writes the buffered output to out until Close.
func (s *OutputSink) run() {
	var spare []byte
	for {
		_, open := <-s.wake
		s.mu.Lock()
		for len(s.buf) > 0 {
			p := s.buf
			s.buf, s.busy = spare[:0], true
			s.mu.Unlock()
			for q := p; len(q) > 0; q = q[min(len(q), s.chunk):] {
				if _, err := s.out.Write(q[:min(len(q), s.chunk)]); err != nil {
					// The guest can do nothing about a host terminal
					// error: drop the output, keep the device going.
					s.warn(err)
					break
				}
			}
			s.mu.Lock()
			s.busy, s.stalled, spare = false, false, p
		}
		for _, ch := range s.idle {
			close(ch)
		}
		s.idle = nil
		s.mu.Unlock()
		if !open {
			return
		}
	}
}

// Flush waits until everything buffered has been written, or for d. It
// does not wait at all while the writer is stuck where an earlier Flush
// gave up on it: at shutdown, the end of Run and Close each flush, and a
// stuck terminal must cost one timeout, not one per flush.
func (s *OutputSink) Flush(d time.Duration) {
	s.mu.Lock()
	if len(s.buf) == 0 && !s.busy || s.stalled {
		s.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	s.idle = append(s.idle, ch)
	s.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		s.mu.Lock()
		s.stalled = s.busy
		s.mu.Unlock()
	}
}

// Close takes no more output and lets the goroutine end once it has
// written what is buffered; it does not wait for that.
func (s *OutputSink) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.wake)
	if !s.started {
		for _, ch := range s.idle {
			close(ch)
		}
		s.idle = nil
	}
}
