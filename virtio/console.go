package virtio

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/govmm/govmm/devices"
)

const (
	consoleQueueSize = 64
	// consoleInputMax bounds host input waiting for the guest to post
	// receive buffers: Input takes no more, and its caller waits for
	// Room.
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
	out *devices.OutputSink

	// rxMu guards input and the receive queue; txMu the transmit queue.
	// Activation state is written with both held, so either lock is
	// enough to read it.
	rxMu    sync.Mutex
	txMu    sync.Mutex
	pending []byte // input not yet delivered
	// input gets a token once half of pending has gone to the guest,
	// after Input turned bytes away.
	input devices.InputRoom

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
	c := &Console{guestLog: newGuestLog("virtio-console"), input: devices.NewInputRoom()}
	c.out = devices.NewOutputSink(out, consoleOutMax, consoleTxMax, func(err error) {
		c.warn.Printf("host_io", "write output: %v", err)
	})
	return c
}

// Flush waits until the output the guest sent so far reached the host
// writer, for at most consoleFlushTimeout: a terminal that stopped
// reading does not hold up the caller for longer.
func (c *Console) Flush() { c.out.Flush(consoleFlushTimeout) }

// Close flushes the output (as Flush does) and stops the goroutine that
// writes it.
func (c *Console) Close() error {
	c.out.Flush(consoleFlushTimeout)
	c.out.Close()
	return nil
}

// OutputDropped returns how many output bytes were dropped: beyond
// consoleTxMax in one request, or finding the output buffer full.
func (c *Console) OutputDropped() uint64 { return c.out.Dropped() }

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

// Input queues host input for the guest, as much as fits beside what
// still waits for receive buffers, delivers what fits into the buffers
// already posted, and returns how many bytes it took: the caller waits
// for Room with the rest, so input is never dropped.
func (c *Console) Input(p []byte) int {
	c.rxMu.Lock()
	defer c.rxMu.Unlock()
	n := min(len(p), consoleInputMax-len(c.pending))
	c.pending = append(c.pending, p[:n]...)
	if n < len(p) {
		c.input.TurnedAway()
	}
	if err := c.deliverLocked(); err != nil {
		c.warn.Printf("queue_error", "%v", err)
	}
	return n
}

// Room returns a channel that gets a token once the guest has taken half
// the input waiting when Input turned bytes away. A token can be stale:
// Input says what fits.
func (c *Console) Room() <-chan struct{} { return c.input.Room() }

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
	if len(c.pending) <= consoleInputMax/2 {
		c.input.MadeRoom()
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
			c.out.Write(b)
		}
		n := ch.ReadableLen()
		if n > consoleTxMax {
			c.out.Drop(n - consoleTxMax)
		}
		return served{bytes: min(n, consoleTxMax)}
	}); err != nil {
		c.txErr = fmt.Errorf("virtio-console: transmitq: %w", err)
	}
	return c.txErr
}
