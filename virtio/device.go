package virtio

import (
	"errors"
	"fmt"
)

// Device IDs (virtio 1.2, section 5).
const (
	IDNet     = 1
	IDBlock   = 2
	IDConsole = 3
	IDRNG     = 4
)

// Feature bits every virtio 1.x device shares (section 6).
const (
	FeatureVersion1       = 1 << 32
	FeatureRingEventIdx   = 1 << 29
	FeatureRingIndirect   = 1 << 28
	FeatureAccessPlatform = 1 << 33
)

// Memory is guest RAM as a device sees it: every access is checked.
// vmm.Memory implements it.
type Memory interface {
	// Slice returns n bytes at guest physical address gpa, or an error
	// when any of them lies outside RAM.
	Slice(gpa, n uint64) ([]byte, error)
}

// Interrupt raises a device's used-buffer or configuration-change
// interrupt; the transport decides how (MSI-X through an irqfd, or INTx).
type Interrupt interface {
	// Queue signals that queue has new used buffers.
	Queue(queue int) error
	// Config signals a configuration change.
	Config() error
	// Fail reports an error that broke the device outside Notify (in a
	// goroutine of the device's own): the transport marks the device
	// DEVICE_NEEDS_RESET and tells the driver, as it does for an error
	// Notify returns, without waiting for the driver's next notification.
	Fail(err error)
}

// Device is a virtio device model, independent of its transport.
type Device interface {
	// Name is a short label for logs and exit statistics ("virtio-blk").
	Name() string
	// Type is the virtio device ID.
	Type() uint16
	// Features are the feature bits offered: the device-specific ones
	// plus the ring features its queues support (RingFeatures for
	// Queue); the transport adds FeatureVersion1.
	Features() uint64
	// QueueSizes gives the maximum size of each queue, in queue order.
	QueueSizes() []uint16
	// ReadConfig and WriteConfig access the device-specific
	// configuration space; out-of-range offsets read as zero and are
	// ignored on write.
	ReadConfig(offset uint64, data []byte)
	WriteConfig(offset uint64, data []byte)
	// Activate starts the device once the driver set DRIVER_OK, with the
	// negotiated features and the queues the driver enabled (nil for a
	// queue it left disabled).
	Activate(mem Memory, features uint64, queues []*Queue, irq Interrupt) error
	// Notify processes queue after the driver made buffers available. It
	// may run on a vCPU thread or a device goroutine, one call per queue
	// at a time; a malformed queue is returned as an error and the
	// transport marks the device broken (DEVICE_NEEDS_RESET).
	Notify(queue int) error
	// Reset returns the device to its initial state (driver wrote 0 to
	// device status); it must stop using the queues.
	Reset()
}

// served is what a device's handler reports about one chain.
type served struct {
	written uint32 // bytes written into the chain, for the used ring
	op      Op     // the kind of request, for telemetry
	bytes   uint64 // the data the request moved, for telemetry
	// abandon: the queue was aborted, so the chain is neither used nor
	// completed, and serve stops.
	abandon bool
	// keep: the device keeps the chain to serve again later (a disk
	// write that found no space on the host): not used now.
	keep bool
}

// serve is the request loop of a device that answers each chain on its
// own (blk, rng, the transmit side of console and net): it pops every
// available chain, has handle serve it and returns it to the driver with
// the byte count handle gives, and raises queue's interrupt if the driver
// wants one. It times each request for the queue's telemetry.
//
// The loop ends when Pop finds nothing, which includes a queue the
// transport holds or aborted: that is how a stop, reset or BAR move wins
// over a driver that keeps the queue full. Interrupts go out after every
// q.Size() chains too, so such a driver still sees completions. An error
// is a broken queue or a failed interrupt; the device should keep it
// until Reset.
func serve(mem Memory, q *Queue, features uint64, irq Interrupt, queue int, handle func(*Chain) served) error {
	_, err := serveBatch(mem, q, features, irq, queue, 0, handle)
	return err
}

// serveBatch is serve that stops after limit chains (0: no limit), with
// their interrupt sent, and reports more when it stopped there: the ring
// may hold more, and the caller must call it again (a device calls it
// under a lock that others wait for, and lets them in between batches).
func serveBatch(mem Memory, q *Queue, features uint64, irq Interrupt, queue, limit int, handle func(*Chain) served) (more bool, err error) {
	tel := q.tel
	pushed := 0
	signal := func() error {
		if pushed == 0 {
			return nil
		}
		var err error
		if q.NeedsInterrupt(mem, features) {
			err = irq.Queue(queue)
		}
		tel.interrupted(tel.now())
		pushed = 0
		if err != nil {
			return fmt.Errorf("interrupt: %w", err)
		}
		return nil
	}
	for n := 0; limit == 0 || n < limit; n++ {
		c, err := q.Pop(mem)
		if err != nil || c == nil {
			// Chains completed before a broken one still get their
			// interrupt.
			return false, errors.Join(err, signal())
		}
		start, popped := tel.popStart(), tel.now()
		r := handle(c)
		if r.abandon {
			return false, signal()
		}
		done := tel.now()
		if err := q.Push(mem, c.Head, r.written); err != nil {
			return false, errors.Join(err, signal())
		}
		tel.pushed(r.op, r.bytes, start, popped, done)
		if pushed++; pushed >= int(q.Size()) {
			if err := signal(); err != nil {
				return false, err
			}
		}
	}
	return true, signal()
}
