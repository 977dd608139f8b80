package virtio

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	rngQueueSize = 64
	// rngMaxRequest bounds the entropy one request gets, so a guest
	// posting a huge buffer cannot keep the device busy for long; the
	// driver asks again for more.
	rngMaxRequest = 64 << 10
)

// RNG is a virtio entropy device (virtio 1.2, 5.4) fed by the host's
// getrandom(2).
type RNG struct {
	guestLog

	mu sync.Mutex // serializes requests with Reset
	// Set by Activate, cleared by Reset.
	mem      Memory
	features uint64
	q        *Queue
	irq      Interrupt
	err      error // the queue error that broke the device, until Reset
}

// NewRNG returns an entropy device.
func NewRNG() *RNG { return &RNG{guestLog: newGuestLog("virtio-rng")} }

// Name implements Device.
func (r *RNG) Name() string { return "virtio-rng" }

// Type implements Device.
func (r *RNG) Type() uint16 { return IDRNG }

// Features implements Device: the device has no features of its own.
func (r *RNG) Features() uint64 { return RingFeatures }

// QueueSizes implements Device: one request queue.
func (r *RNG) QueueSizes() []uint16 { return []uint16{rngQueueSize} }

// ReadConfig implements Device: there is no configuration space.
func (r *RNG) ReadConfig(offset uint64, data []byte) { clear(data) }

// WriteConfig implements Device.
func (r *RNG) WriteConfig(offset uint64, data []byte) {}

// Activate implements Device.
func (r *RNG) Activate(mem Memory, features uint64, queues []*Queue, irq Interrupt) error {
	if len(queues) < 1 || queues[0] == nil {
		return errors.New("virtio-rng: request queue not enabled")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mem, r.features, r.q, r.irq, r.err = mem, features, queues[0], irq, nil
	return nil
}

// RequestOps implements requestOps.
func (r *RNG) RequestOps(queue int) []string { return []string{"entropy"} }

// Reset implements Device.
func (r *RNG) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mem, r.features, r.q, r.irq, r.err = nil, 0, nil, nil, nil
}

// Notify implements Device: it fills every available buffer.
func (r *RNG) Notify(queue int) error {
	if queue != 0 {
		return fmt.Errorf("virtio-rng: notify for queue %d, device has one", queue)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.q == nil {
		return nil // not active: a notification that raced a reset
	}
	if r.err != nil {
		return r.err
	}
	if err := serve(r.mem, r.q, r.features, r.irq, 0, func(c *Chain) served {
		n := r.fill(c)
		return served{written: n, bytes: uint64(n)}
	}); err != nil {
		r.err = fmt.Errorf("virtio-rng: %w", err)
	}
	return r.err
}

// fill writes random bytes straight into the chain's writable buffers
// and returns how many.
func (r *RNG) fill(c *Chain) uint32 {
	var n int
	for _, b := range c.Buffers(true, 0, rngMaxRequest) {
		for len(b) > 0 {
			m, err := unix.Getrandom(b, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || m == 0 {
				// Hand back what we have: the guest asks again.
				r.warn.Printf("host_io", "getrandom: %v", err)
				return uint32(n)
			}
			b = b[m:]
			n += m
		}
	}
	return uint32(n)
}
