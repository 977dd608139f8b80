package virtio

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

const (
	consoleQueueSize = 64
	// consoleInputMax bounds host input waiting for the guest to post
	// receive buffers; beyond it input is dropped, as a UART would.
	consoleInputMax = 64 << 10
)

// Console is a virtio console with a single port and no multiport
// support (virtio 1.2, 5.3): receiveq (queue 0) carries host input to
// the guest, transmitq (queue 1) guest output to the host.
type Console struct {
	warn warner
	out  io.Writer

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
	return &Console{warn: warner{name: "virtio-console"}, out: out}
}

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
		c.warn.warn("%v", err)
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
		n := ch.Scatter(c.pending, 0)
		if err := c.rxq.Push(c.mem, ch.Head, uint32(n)); err != nil {
			c.rxErr = fmt.Errorf("virtio-console: receiveq: %w", err)
			break
		}
		c.pending = append(c.pending[:0], c.pending[n:]...)
		pushed = true
	}
	if pushed && c.rxq.NeedsInterrupt(c.mem, c.features) {
		if err := c.irq.Queue(0); err != nil {
			return fmt.Errorf("virtio-console: interrupt: %w", err)
		}
	}
	return c.rxErr
}

// transmitLocked writes every available transmit buffer to out; txMu
// must be held.
func (c *Console) transmitLocked() error {
	if c.txq == nil || c.txErr != nil {
		return c.txErr
	}
	pushed := false
	for {
		ch, err := c.txq.Pop(c.mem)
		if err != nil {
			c.txErr = fmt.Errorf("virtio-console: transmitq: %w", err)
			break
		}
		if ch == nil {
			break
		}
		for _, b := range ch.Buffers(false, 0, ch.ReadableLen()) {
			if _, err := c.out.Write(b); err != nil {
				// The guest cannot do anything about a host terminal
				// error: drop the output, keep the console going.
				c.warn.warn("write output: %v", err)
				break
			}
		}
		if err := c.txq.Push(c.mem, ch.Head, 0); err != nil {
			c.txErr = fmt.Errorf("virtio-console: transmitq: %w", err)
			break
		}
		pushed = true
	}
	if pushed && c.txq.NeedsInterrupt(c.mem, c.features) {
		if err := c.irq.Queue(1); err != nil {
			return fmt.Errorf("virtio-console: interrupt: %w", err)
		}
	}
	return c.txErr
}
