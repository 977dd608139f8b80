package virtio

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

const (
	consoleQueueSize = 64
	// consoleInputMax bounds host input waiting for the guest to post
	// receive buffers; beyond it input is dropped, as a UART would.
	consoleInputMax = 64 << 10
	// consoleTxMax bounds the output one transmit request produces; the
	// rest of a longer request is dropped and counted. Linux's
	// virtio_console sends at most 32 KiB per request (port_fops_write)
	// and its hvc console far less, while a hostile chain can cover all
	// of guest RAM many times over (64 descriptors, or 4096 in an
	// indirect table, each as long as RAM).
	consoleTxMax = 64 << 10
	// consoleOutMax bounds output waiting for a slow host terminal; what
	// does not fit is dropped and counted, as QEMU's virtconsole drops
	// what its character device does not take (Cloud Hypervisor keeps
	// 1 MiB, too). A vCPU never waits for the terminal.
	consoleOutMax = 1 << 20
	// consoleFlushTimeout bounds how long Flush and Close wait for
	// buffered output to reach a terminal that stopped reading.
	consoleFlushTimeout = 2 * time.Second
)

// Console is a virtio console with a single port and no multiport
// support (virtio 1.2, 5.3): receiveq (queue 0) carries host input to
// the guest, transmitq (queue 1) guest output to the host.
type Console struct {
	guestLog
	out *consoleSink

	// rxMu guards input and the receive queue; txMu the transmit queue.
	// Activation state is written with both held, so either lock is
	// enough to read it.
	rxMu    sync.Mutex
	txMu    sync.Mutex
	pending []byte // input not yet delivered
	dropped uint64 // input bytes lost to a full pending buffer

	// Set by Activate, cleared by Reset.
	mem      Memory
	features uint64
	irq      Interrupt
	rxq      *Queue
	txq      *Queue
	rxErr    error // the queue error that broke receiveq, until Reset
	txErr    error // likewise for transmitq
}

// NewConsole returns a console that writes guest output to out (nil
// discards it). Host input arrives through Input.
func NewConsole(out io.Writer) *Console {
	if out == nil {
		out = io.Discard
	}
	c := &Console{guestLog: newGuestLog("virtio-console")}
	c.out = newConsoleSink(out, &c.guestLog)
	return c
}

// Flush waits until the output the guest sent so far reached the host
// writer, for at most consoleFlushTimeout: a terminal that stopped
// reading does not hold up the caller for longer.
func (c *Console) Flush() { c.out.flush(consoleFlushTimeout) }

// Close flushes the output (as Flush does) and stops the goroutine that
// writes it.
func (c *Console) Close() error {
	c.out.flush(consoleFlushTimeout)
	c.out.close()
	return nil
}

// OutputDropped returns how many output bytes were dropped: beyond
// consoleTxMax in one request, or finding the output buffer full.
func (c *Console) OutputDropped() uint64 { return c.out.droppedBytes() }

// Name implements Device.
func (c *Console) Name() string { return "virtio-console" }

// Type implements Device.
func (c *Console) Type() uint16 { return IDConsole }

// Features implements Device. No SIZE (the guest keeps its default
// 80x25 idea of the terminal), no MULTIPORT, no EMERG_WRITE.
func (c *Console) Features() uint64 { return RingFeatures }

// QueueSizes implements Device: receiveq0 and transmitq0.
func (c *Console) QueueSizes() []uint16 { return []uint16{consoleQueueSize, consoleQueueSize} }

// ReadConfig implements Device: struct virtio_console_config (cols,
// rows, max_nr_ports, emerg_wr), all zero since none of the features
// that give them meaning is offered.
func (c *Console) ReadConfig(offset uint64, data []byte) { clear(data) }

// WriteConfig implements Device. emerg_wr needs EMERG_WRITE: ignored.
func (c *Console) WriteConfig(offset uint64, data []byte) {}

// Activate implements Device.
func (c *Console) Activate(mem Memory, features uint64, queues []*Queue, irq Interrupt) error {
	if len(queues) < 2 || queues[0] == nil || queues[1] == nil {
		return errors.New("virtio-console: receiveq or transmitq not enabled")
	}
	c.rxMu.Lock()
	defer c.rxMu.Unlock()
	c.txMu.Lock()
	defer c.txMu.Unlock()
	c.mem, c.features, c.irq = mem, features, irq
	c.rxq, c.txq, c.rxErr, c.txErr = queues[0], queues[1], nil, nil
	return nil
}

// RequestOps implements requestOps: receiveq carries input, transmitq
// output.
func (c *Console) RequestOps(queue int) []string {
	if queue == 0 {
		return []string{"rx"}
	}
	return []string{"tx"}
}

// Reset implements Device. Pending input is kept for the next driver.
func (c *Console) Reset() {
	c.rxMu.Lock()
	defer c.rxMu.Unlock()
	c.txMu.Lock()
	defer c.txMu.Unlock()
	c.mem, c.features, c.irq = nil, 0, nil
	c.rxq, c.txq, c.rxErr, c.txErr = nil, nil, nil, nil
}

// Input queues host input for the guest and delivers what fits into the
// receive buffers already posted; the rest waits for more.
func (c *Console) Input(p []byte) {
	c.rxMu.Lock()
	defer c.rxMu.Unlock()
	room := consoleInputMax - len(c.pending)
	if len(p) > room {
		c.dropped += uint64(len(p) - room)
		p = p[:room]
	}
	c.pending = append(c.pending, p...)
	if err := c.deliverLocked(); err != nil {
		c.warn.Printf("queue_error", "%v", err)
	}
}

// Dropped returns how many input bytes were lost because the guest did
// not read them.
func (c *Console) Dropped() uint64 {
	c.rxMu.Lock()
	defer c.rxMu.Unlock()
	return c.dropped
}

// Notify implements Device.
func (c *Console) Notify(queue int) error {
	switch queue {
	case 0:
		c.rxMu.Lock()
		defer c.rxMu.Unlock()
		return c.deliverLocked()
	case 1:
		c.txMu.Lock()
		defer c.txMu.Unlock()
		return c.transmitLocked()
	}
	return fmt.Errorf("virtio-console: notify for queue %d, device has two", queue)
}

// deliverLocked moves pending input into receive buffers; rxMu must be
// held.
func (c *Console) deliverLocked() error {
	if c.rxq == nil || c.rxErr != nil {
		return c.rxErr
	}
	// Input is timed from here: it waited for receive buffers (or
	// arrived just now), and the device turns to it now.
	tel := c.rxq.tel
	start := tel.now()
	pushed := false
	for len(c.pending) > 0 {
		ch, err := c.rxq.Pop(c.mem)
		if err != nil {
			c.rxErr = fmt.Errorf("virtio-console: receiveq: %w", err)
			break
		}
		if ch == nil {
			break
		}
		popped := tel.now()
		n := ch.Scatter(c.pending, 0)
		done := tel.now()
		if err := c.rxq.Push(c.mem, ch.Head, uint32(n)); err != nil {
			c.rxErr = fmt.Errorf("virtio-console: receiveq: %w", err)
			break
		}
		tel.pushed(0, uint64(n), start, popped, done)
		c.pending = append(c.pending[:0], c.pending[n:]...)
		pushed = true
	}
	if pushed {
		var err error
		if c.rxq.NeedsInterrupt(c.mem, c.features) {
			err = c.irq.Queue(0)
		}
		tel.interrupted(tel.now())
		if err != nil {
			return fmt.Errorf("virtio-console: interrupt: %w", err)
		}
	}
	return c.rxErr
}

// transmitLocked hands every available transmit buffer to the output,
// up to consoleTxMax bytes of each; txMu must be held.
func (c *Console) transmitLocked() error {
	if c.txq == nil || c.txErr != nil {
		return c.txErr
	}
	if err := serve(c.mem, c.txq, c.features, c.irq, 1, func(ch *Chain) served {
		for _, b := range ch.Buffers(false, 0, consoleTxMax) {
			c.out.write(b)
		}
		n := ch.ReadableLen()
		if n > consoleTxMax {
			c.out.drop(n - consoleTxMax)
		}
		return served{bytes: min(n, consoleTxMax)}
	}); err != nil {
		c.txErr = fmt.Errorf("virtio-console: transmitq: %w", err)
	}
	return c.txErr
}

// consoleSink hands guest output to the host writer from a goroutine of
// its own, so that a slow or stuck terminal never stalls a vCPU or a
// notifier, nor therefore a reset or a stop that waits for them. Output
// that finds consoleOutMax bytes waiting is dropped and counted.
type consoleSink struct {
	out io.Writer
	log *guestLog // the console's, which the transport may replace

	mu      sync.Mutex
	buf     []byte          // waiting for the writer goroutine
	busy    bool            // the goroutine is writing
	started bool            // the goroutine runs (it starts on first output)
	closed  bool            // no more output is taken
	wake    chan struct{}   // output arrived, or closed
	idle    []chan struct{} // closed when buf is empty and nothing is being written
	dropped uint64
}

func newConsoleSink(out io.Writer, log *guestLog) *consoleSink {
	return &consoleSink{out: out, log: log, wake: make(chan struct{}, 1)}
}

// write takes what fits of p; it never waits for the host writer.
func (s *consoleSink) write(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.dropped += uint64(len(p))
		return
	}
	if room := consoleOutMax - len(s.buf); len(p) > room {
		s.dropped += uint64(len(p) - room)
		p = p[:room]
	}
	if len(p) == 0 {
		return
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
}

// drop counts n bytes of output that were never taken.
func (s *consoleSink) drop(n uint64) {
	s.mu.Lock()
	s.dropped += n
	s.mu.Unlock()
}

func (s *consoleSink) droppedBytes() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// run writes the buffered output to out, in pieces of at most
// consoleTxMax so that a writer shared with the serial port is held
// briefly, until close.
func (s *consoleSink) run() {
	var spare []byte
	for {
		_, open := <-s.wake
		s.mu.Lock()
		for len(s.buf) > 0 {
			p := s.buf
			s.buf, s.busy = spare[:0], true
			s.mu.Unlock()
			for q := p; len(q) > 0; q = q[min(len(q), consoleTxMax):] {
				if _, err := s.out.Write(q[:min(len(q), consoleTxMax)]); err != nil {
					// The guest can do nothing about a host terminal
					// error: drop the output, keep the console going.
					s.log.warn.Printf("host_io", "write output: %v", err)
					break
				}
			}
			s.mu.Lock()
			s.busy, spare = false, p
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

// flush waits until everything buffered has been written, or for d.
func (s *consoleSink) flush(d time.Duration) {
	s.mu.Lock()
	if len(s.buf) == 0 && !s.busy {
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
	}
}

// close takes no more output and lets the goroutine end once it has
// written what is buffered; it does not wait for that.
func (s *consoleSink) close() {
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
