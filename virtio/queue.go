package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/govmm/govmm/guestlog"
)

// MaxQueueSize is the largest split virtqueue the spec allows (2.7).
const MaxQueueSize = 32768

// RingFeatures are the ring features Queue implements. They are not tied
// to a transport or a device type, so every device offers them in its
// Features; the transport only adds FeatureVersion1.
const RingFeatures = FeatureRingIndirect | FeatureRingEventIdx

// Descriptor and ring flags (virtio 1.2, 2.7.5 and 2.7.6).
const (
	descFlagNext     = 1
	descFlagWrite    = 2
	descFlagIndirect = 4

	availFlagNoInterrupt = 1
)

const (
	descSize = 16 // bytes per descriptor, in the table and indirect tables

	// maxIndirect bounds an indirect table. The spec only says "not
	// longer than the queue size", yet Linux builds indirect tables
	// longer than small queues; 4096 is far above anything it builds
	// (seg_max+2 for blk, MAX_SKB_FRAGS+2 for net) while keeping what one
	// hostile chain can make us allocate small.
	maxIndirect = 4096
)

// Queue is one split virtqueue (virtio 1.2, 2.7). The transport owns its
// configuration (size, ring addresses, ready) and changes it only while
// the queue is not ready; the device owns Pop, Push and NeedsInterrupt
// once activated, calling them from one goroutine at a time. Queue has no
// lock of its own: the device's lock already serializes its users, and
// the transport must not reconfigure a queue the device is using (it
// calls Device.Reset first).
type Queue struct {
	maxSize uint16
	size    uint16
	ready   bool
	desc    uint64 // guest address of the descriptor table
	avail   uint64 // guest address of the available (driver) ring
	used    uint64 // guest address of the used (device) ring

	// Views of the three rings in guest memory, taken on first use after
	// the queue became ready so that Pop and Push do not look the rings
	// up in Memory each time. Guest RAM does not move while a VM runs.
	mapped    bool
	descRing  []byte
	availRing []byte
	usedRing  []byte
	// availIdxWord is the aligned 32-bit word holding avail.idx, which
	// is shifted right by availIdxShift; nil if host memory is not
	// 4-byte aligned there, and then plain loads plus fences are used.
	availIdxWord  []byte
	availIdxShift uint
	usedWordOK    bool // usedRing[0:4] (flags, idx) is 4-byte aligned

	lastAvail uint16 // free-running index of the next avail entry to pop
	usedIdx   uint16 // free-running used.idx, as last published

	// notifyOff keeps Pop from asking for a notification when it finds
	// the ring empty (avail_event stays behind, so an EVENT_IDX driver
	// does not notify): the transport polls the ring instead. Set and
	// read by the queue's one Pop caller at a time, like lastAvail.
	notifyOff bool

	// spare holds chains their device gave back (Recycle) for Pop to
	// reuse, so that a device that pops a buffer per packet does not
	// allocate one each time and drive the garbage collector. Pop's
	// caller owns it, like lastAvail.
	spare []*Chain

	// Used index at the last NeedsInterrupt, for VIRTIO_F_EVENT_IDX:
	// an interrupt is due when used_event lies in (signalled, usedIdx].
	signalled      uint16
	signalledValid bool

	// fenceWord exists only to be the target of a locked instruction,
	// which is a full memory barrier on x86 (and any Go atomic is
	// sequentially consistent elsewhere). Per queue, so that devices on
	// different CPUs do not bounce one cache line.
	fenceWord atomic.Uint32

	// halt is how the transport takes the queue away from its device
	// without a lock: haltHold (the transport's, while it moves the
	// notifiers) and haltPause (the machine's, while it is paused) make
	// Pop find nothing, so a device's loop over the queue ends after the
	// chain in hand; haltAbort also asks a device in the middle of long
	// work on that chain to give it up (aborted). Each is lifted only by
	// whoever set it, and a stronger one is never weakened. Reset clears
	// it.
	halt atomic.Uint32

	// tel times the requests served from the queue (telemetry.go); nil
	// when the transport keeps no telemetry. It outlives Reset.
	tel *queueTelemetry
}

// Values of Queue.halt.
const (
	haltNone = iota
	haltHold
	haltPause
	haltAbort
)

// NewQueue returns a disabled queue whose size register starts at
// maxSize, as a device reset leaves it. maxSize must be a power of two
// no larger than MaxQueueSize; the device's QueueSizes provides it.
func NewQueue(maxSize uint16) *Queue {
	q := &Queue{maxSize: maxSize}
	q.Reset()
	return q
}

// Reset returns the queue to its state after a device reset: disabled,
// addresses zero, size at the maximum, indices zero.
func (q *Queue) Reset() {
	q.size = q.maxSize
	q.ready = false
	q.desc, q.avail, q.used = 0, 0, 0
	q.unmap()
	q.lastAvail, q.usedIdx = 0, 0
	q.notifyOff = false
	q.signalled, q.signalledValid = 0, false
	q.halt.Store(haltNone)
	q.tel.drop()
}

// hold makes Pop find nothing until release, letting the chain a device
// is serving finish; the transport holds the queues while it moves their
// notifiers. It does not weaken an abort.
func (q *Queue) hold() { q.halt.CompareAndSwap(haltNone, haltHold) }

// release undoes hold, unless the queue was aborted meanwhile.
func (q *Queue) release() { q.halt.CompareAndSwap(haltHold, haltNone) }

// pause makes Pop find nothing until unpause, for a paused machine: a
// guest that keeps its ring full (or refills it from the device's own
// writes) cannot keep a device working, or a vCPU that serves it from
// parking. It overrides a hold, not an abort.
func (q *Queue) pause() {
	for {
		h := q.halt.Load()
		if h >= haltPause || q.halt.CompareAndSwap(h, haltPause) {
			return
		}
	}
}

// unpause undoes pause, unless the queue was aborted meanwhile.
func (q *Queue) unpause() { q.halt.CompareAndSwap(haltPause, haltNone) }

// abort makes Pop find nothing and asks the device to abandon the chain
// it is serving: the transport is resetting or closing the device, and a
// stop must not wait for work the guest queued. Reset clears it. Safe to
// call from any goroutine.
func (q *Queue) abort() { q.halt.Store(haltAbort) }

// aborted reports whether the device should abandon the chain in hand;
// devices check it between the chunks of long work.
func (q *Queue) aborted() bool { return q.halt.Load() == haltAbort }

func (q *Queue) unmap() {
	q.mapped = false
	q.descRing, q.availRing, q.usedRing, q.availIdxWord = nil, nil, nil, nil
}

// MaxSize is the largest size the driver may set (queue_size on reset).
func (q *Queue) MaxSize() uint16 { return q.maxSize }

// Size is the queue size the driver chose.
func (q *Queue) Size() uint16 { return q.size }

// Ready reports whether the driver enabled the queue.
func (q *Queue) Ready() bool { return q.ready }

// DescTable is the guest address of the descriptor table.
func (q *Queue) DescTable() uint64 { return q.desc }

// AvailRing is the guest address of the available (driver) ring.
func (q *Queue) AvailRing() uint64 { return q.avail }

// UsedRing is the guest address of the used (device) ring.
func (q *Queue) UsedRing() uint64 { return q.used }

// SetSize sets the queue size: a power of two, at most MaxSize. It fails
// while the queue is ready, since the device may be walking the rings.
func (q *Queue) SetSize(n uint16) error {
	if q.ready {
		return errors.New("virtqueue: size changed while the queue is enabled")
	}
	if n == 0 || n&(n-1) != 0 || n > q.maxSize {
		return fmt.Errorf("virtqueue: size %d is not a power of two in [1, %d]", n, q.maxSize)
	}
	q.size = n
	return nil
}

// SetAddresses sets the guest addresses of the descriptor table, the
// available ring and the used ring. A transport whose registers hold
// 32-bit halves passes the other values back from the getters. It fails
// while the queue is ready; alignment is checked when it becomes ready.
func (q *Queue) SetAddresses(desc, avail, used uint64) error {
	if q.ready {
		return errors.New("virtqueue: addresses changed while the queue is enabled")
	}
	q.desc, q.avail, q.used = desc, avail, used
	return nil
}

// SetReady enables or disables the queue. Enabling checks the size and
// the alignment the spec requires of each ring (2.7: descriptor table
// 16, available ring 2, used ring 4) and leaves the queue disabled if
// they are wrong; whether the rings lie in guest RAM is checked on first
// use, where the Memory is at hand. Disabling keeps the indices, so a
// transport that resets the queue must call Reset.
func (q *Queue) SetReady(ready bool) error {
	q.unmap()
	if !ready {
		q.ready = false
		return nil
	}
	if err := q.checkLayout(); err != nil {
		q.ready = false
		return err
	}
	q.ready = true
	return nil
}

func (q *Queue) checkLayout() error {
	n := q.size
	if n == 0 || n&(n-1) != 0 || n > q.maxSize {
		return fmt.Errorf("virtqueue: size %d is not a power of two in [1, %d]", n, q.maxSize)
	}
	if q.desc%16 != 0 || q.avail%2 != 0 || q.used%4 != 0 {
		return fmt.Errorf("virtqueue: rings misaligned (desc %#x, avail %#x, used %#x)", q.desc, q.avail, q.used)
	}
	return nil
}

// mapRings checks that the rings lie in guest RAM and keeps views of
// them; after it succeeds every ring offset below is in bounds.
func (q *Queue) mapRings(mem Memory) error {
	if q.mapped {
		return nil
	}
	if !q.ready {
		return errors.New("virtqueue: queue is not enabled")
	}
	if err := q.checkLayout(); err != nil {
		return err
	}
	n := uint64(q.size)
	d, err := mem.Slice(q.desc, descSize*n)
	if err != nil {
		return fmt.Errorf("virtqueue: descriptor table: %w", err)
	}
	// flags, idx, ring[n], used_event
	a, err := mem.Slice(q.avail, 6+2*n)
	if err != nil {
		return fmt.Errorf("virtqueue: available ring: %w", err)
	}
	// flags, idx, ring[n] of {id, len}, avail_event
	u, err := mem.Slice(q.used, 6+8*n)
	if err != nil {
		return fmt.Errorf("virtqueue: used ring: %w", err)
	}
	if uint64(len(d)) != descSize*n || uint64(len(a)) != 6+2*n || uint64(len(u)) != 6+8*n {
		return errors.New("virtqueue: guest memory returned a short ring")
	}
	q.descRing, q.availRing, q.usedRing = d, a, u
	// avail.idx is a[2:4]; take whichever aligned word holds it. Both
	// candidates lie inside the ring (it has at least one entry).
	switch {
	case aligned4(a[2:]):
		q.availIdxWord, q.availIdxShift = a[2:6], 0
	case aligned4(a):
		q.availIdxWord, q.availIdxShift = a[0:4], 16
	default:
		q.availIdxWord = nil
	}
	q.usedWordOK = aligned4(u)
	q.mapped = true
	return nil
}

// fence is a full memory barrier: it orders our earlier stores before
// our later loads, which neither an atomic load nor x86's TSO gives.
func (q *Queue) fence() { q.fenceWord.Add(1) }

// loadAvailIdx reads avail.idx with acquire ordering, so that the ring
// entries and descriptors the driver wrote before publishing it are
// visible to the plain loads that follow.
func (q *Queue) loadAvailIdx() uint16 {
	if q.availIdxWord != nil {
		return uint16(atomicLoad32(q.availIdxWord) >> q.availIdxShift)
	}
	q.fence()
	v := binary.LittleEndian.Uint16(q.availRing[2:])
	q.fence()
	return v
}

// setAvailEvent writes avail_event (used ring tail, VIRTIO_F_EVENT_IDX):
// "notify me when you make entry v available". It is written even when
// EVENT_IDX was not negotiated: the field is part of the used ring the
// driver allocated, and a driver without the feature ignores it, which
// spares Queue from knowing the negotiated features. The aligned word
// around it would reach past the ring, hence a plain 16-bit store.
func (q *Queue) setAvailEvent(v uint16) {
	binary.LittleEndian.PutUint16(q.usedRing[4+8*int(q.size):], v)
}

// Recycle gives Pop chain c to reuse. Only Pop's caller may call it,
// once it has pushed c's head and keeps no reference to c: the next Pop
// overwrites it. At most a queue's worth is kept, and only chains of a
// few descriptors: a guest's long indirect chain (up to maxIndirect
// descriptors, 192 KiB of Descs) kept for reuse would hold that memory
// for the VM's life, a queue's worth of them tens of MiB.
func (q *Queue) Recycle(c *Chain) {
	if len(q.spare) < int(q.size) && cap(c.Descs) <= recycleMaxDescs {
		q.spare = append(q.spare, c)
	}
}

// recycleMaxDescs is the most descriptors a recycled chain may have room
// for: four times what walk starts a chain with.
const recycleMaxDescs = 16

// Pop returns the next available descriptor chain, or nil when the
// driver has made none available or the transport holds or aborted the
// queue (so a device's loop over Pop ends). An error means the queue is
// malformed (bad index, loop, address outside RAM, ...); Pop then leaves
// the queue where it was, and the device should stop using it.
func (q *Queue) Pop(mem Memory) (*Chain, error) {
	if q.halt.Load() != haltNone {
		return nil, nil
	}
	if err := q.mapRings(mem); err != nil {
		return nil, err
	}
	idx := q.loadAvailIdx()
	if idx == q.lastAvail {
		if q.notifyOff {
			return nil, nil
		}
		idx = q.armNotify()
		if idx == q.lastAvail {
			return nil, nil
		}
	}
	if pending := idx - q.lastAvail; pending > q.size {
		return nil, fmt.Errorf("virtqueue: avail idx %d is %d entries ahead of %d, queue size %d",
			idx, pending, q.lastAvail, q.size)
	}
	q.tel.saw(idx)
	slot := 4 + 2*int(q.lastAvail&(q.size-1))
	head := binary.LittleEndian.Uint16(q.availRing[slot:])
	c, err := q.walk(mem, head)
	if err != nil {
		return nil, err
	}
	q.tel.took(q.lastAvail)
	// avail_event stays where it was while the device has work: the
	// driver, which notifies only when its index crosses avail_event,
	// stays quiet until an empty Pop (or EnableNotify) asks again.
	q.lastAvail++
	return c, nil
}

// armNotify asks for a notification when the next entry arrives and
// returns avail.idx read afterwards: the driver may have published an
// entry before it could see our avail_event, and then it will not notify
// (2.7.10), so the caller must look again.
func (q *Queue) armNotify() uint16 {
	q.setAvailEvent(q.lastAvail)
	q.fence()
	return q.loadAvailIdx()
}

// SuppressNotify stops Pop from asking for notifications when the ring
// runs empty, for a caller that polls the ring (HasAvail) instead. With
// VIRTIO_F_EVENT_IDX the driver then stops notifying once it passed the
// last avail_event; without it the driver keeps notifying, which costs
// the same as before. Call it from the queue's Pop caller.
func (q *Queue) SuppressNotify() { q.notifyOff = true }

// EnableNotify undoes SuppressNotify and reports whether entries arrived
// meanwhile (the caller must serve them: no notification will come for
// them). A queue that cannot be read reports true, so that Pop finds and
// reports the error.
func (q *Queue) EnableNotify(mem Memory) bool {
	q.notifyOff = false
	if q.halt.Load() != haltNone {
		return false
	}
	if err := q.mapRings(mem); err != nil {
		return true
	}
	return q.armNotify() != q.lastAvail
}

// HasAvail reports whether Pop would find an entry: the driver made one
// available and the transport neither holds nor aborted the queue. It
// reads one index, so a poller can call it in a loop; a queue that cannot
// be read reports true, so that Pop finds and reports the error.
func (q *Queue) HasAvail(mem Memory) bool {
	if q.halt.Load() != haltNone {
		return false
	}
	if err := q.mapRings(mem); err != nil {
		return true
	}
	return q.loadAvailIdx() != q.lastAvail
}

// Unpop returns the chains the last n Pops took to the available ring,
// for a device that found it cannot use them yet (receive buffers too
// small for the frame at hand). Only valid while none of the chains
// Pop returned since has been pushed: the driver does not touch
// available entries the device has not used.
func (q *Queue) Unpop(n int) {
	q.lastAvail -= uint16(n)
}

// walk follows the chain starting at descriptor head and checks every
// step: an index inside its table, a length bounded by the table (which
// catches loops), buffers inside guest RAM, indirect tables well formed.
func (q *Queue) walk(mem Memory, head uint16) (*Chain, error) {
	var c *Chain
	if n := len(q.spare); n > 0 {
		c, q.spare = q.spare[n-1], q.spare[:n-1]
		c.Head, c.Descs = head, c.Descs[:0]
	} else {
		c = &Chain{Head: head, Descs: make([]Desc, 0, 4)}
	}
	table := q.descRing
	n := uint32(q.size)
	idx := uint32(head)
	indirect := false
	for count := uint32(0); ; count++ {
		if idx >= n {
			return nil, fmt.Errorf("virtqueue: chain %d: descriptor index %d beyond table of %d", head, idx, n)
		}
		if count >= n {
			return nil, fmt.Errorf("virtqueue: chain %d: longer than its table of %d (loop?)", head, n)
		}
		d := table[descSize*idx : descSize*(idx+1)]
		addr := binary.LittleEndian.Uint64(d[0:])
		length := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])

		if flags&descFlagIndirect != 0 {
			switch {
			case indirect:
				return nil, fmt.Errorf("virtqueue: chain %d: nested indirect descriptor", head)
			case flags&descFlagNext != 0:
				return nil, fmt.Errorf("virtqueue: chain %d: indirect descriptor with NEXT set", head)
			case length == 0 || length%descSize != 0:
				return nil, fmt.Errorf("virtqueue: chain %d: indirect table length %d not a multiple of %d", head, length, descSize)
			case length/descSize > maxIndirect:
				return nil, fmt.Errorf("virtqueue: chain %d: indirect table of %d descriptors, limit %d", head, length/descSize, maxIndirect)
			}
			t, err := mem.Slice(addr, uint64(length))
			if err != nil {
				return nil, fmt.Errorf("virtqueue: chain %d: indirect table: %w", head, err)
			}
			if uint64(len(t)) != uint64(length) {
				return nil, fmt.Errorf("virtqueue: chain %d: guest memory returned a short indirect table", head)
			}
			// The table replaces the rest of the chain (NEXT is clear),
			// with its own indices and its own length bound. The WRITE
			// flag on the indirect descriptor means nothing (2.7.5.3.2).
			table, n, idx, indirect = t, length/descSize, 0, true
			count = ^uint32(0) // incremented to 0 by the loop
			continue
		}

		buf, err := mem.Slice(addr, uint64(length))
		if err != nil {
			return nil, fmt.Errorf("virtqueue: chain %d: buffer: %w", head, err)
		}
		c.Descs = append(c.Descs, Desc{Addr: addr, Len: length, Write: flags&descFlagWrite != 0, buf: buf})
		if flags&descFlagNext == 0 {
			return c, nil
		}
		idx = uint32(next)
	}
}

// Push returns chain head to the driver with written bytes written into
// its device-writable buffers, and publishes it by advancing used.idx.
func (q *Queue) Push(mem Memory, head uint16, written uint32) error {
	if err := q.Put(mem, head, written); err != nil {
		return err
	}
	q.Publish()
	return nil
}

// Put writes the used element for chain head without publishing it: the
// driver sees it, with every element Put before it, at the next Publish.
// A device whose one request spans several chains (a received frame in
// mergeable buffers) puts them all and publishes once, since the driver
// may read used.idx at any moment and must find the whole request.
func (q *Queue) Put(mem Memory, head uint16, written uint32) error {
	if err := q.mapRings(mem); err != nil {
		return err
	}
	if head >= q.size {
		return fmt.Errorf("virtqueue: used descriptor %d beyond queue size %d", head, q.size)
	}
	e := q.usedRing[4+8*int(q.usedIdx&(q.size-1)):]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	q.usedIdx++
	return nil
}

// Publish advances used.idx past every element Put so far. The rings
// are mapped: Put succeeded before, or there is nothing new to publish
// (and then the store repeats the index).
func (q *Queue) Publish() {
	if !q.mapped {
		return
	}
	// The elements must be visible before the index that publishes
	// them: the atomic store is a release (and a full barrier on x86).
	// The device owns used.flags, so writing them as 0 with the index is
	// fine: this device never sets VIRTQ_USED_F_NO_NOTIFY, since with
	// EVENT_IDX avail_event does that job and without it notifications
	// are cheap ioeventfd writes.
	if q.usedWordOK {
		atomicStore32(q.usedRing[0:4], uint32(q.usedIdx)<<16)
	} else {
		q.fence()
		binary.LittleEndian.PutUint16(q.usedRing[2:], q.usedIdx)
		q.fence()
	}
}

// NeedsInterrupt reports whether the driver wants an interrupt for the
// buffers pushed since the last call: with VIRTIO_F_EVENT_IDX in
// features, when used.idx passed the driver's used_event; otherwise
// unless it set VIRTQ_AVAIL_F_NO_INTERRUPT. Call it after a batch of
// Push calls, and raise the interrupt when it returns true. A queue that
// cannot be read asks for the interrupt: a spurious one is harmless.
func (q *Queue) NeedsInterrupt(mem Memory, features uint64) bool {
	if err := q.mapRings(mem); err != nil {
		return true
	}
	// Our used.idx store must be visible before we read the driver's
	// suppression state, or we race with a driver re-enabling
	// interrupts and miss one (the store-load case of 2.7.10).
	q.fence()
	if features&FeatureRingEventIdx != 0 {
		event := binary.LittleEndian.Uint16(q.availRing[4+2*int(q.size):])
		old, now := q.signalled, q.usedIdx
		valid := q.signalledValid
		q.signalled, q.signalledValid = now, true
		// vring_need_event: event in [old, now), modulo 2^16.
		return !valid || now-event-1 < now-old
	}
	var flags uint16
	if q.availIdxWord != nil && q.availIdxShift == 16 {
		flags = uint16(atomicLoad32(q.availIdxWord))
	} else {
		flags = binary.LittleEndian.Uint16(q.availRing[0:])
	}
	return flags&availFlagNoInterrupt == 0
}

// Desc is one buffer of a chain, checked to lie in guest RAM.
type Desc struct {
	Addr  uint64 // guest physical address
	Len   uint32 // length in bytes
	Write bool   // device-writable (VIRTQ_DESC_F_WRITE) rather than readable

	buf []byte // guest memory [Addr, Addr+Len), from Pop's check
}

// Chain is a descriptor chain taken from the available ring. Indirect
// tables are already flattened into Descs. Its buffers split into a
// device-readable part and a device-writable part, each addressed by a
// byte offset that runs across the descriptors of that kind in order.
type Chain struct {
	Head  uint16 // index of the head descriptor, to give back to Push
	Descs []Desc
}

// ReadableLen is the total length of the device-readable buffers.
func (c *Chain) ReadableLen() uint64 { return c.partLen(false) }

// WritableLen is the total length of the device-writable buffers.
func (c *Chain) WritableLen() uint64 { return c.partLen(true) }

func (c *Chain) partLen(write bool) uint64 {
	var n uint64
	for i := range c.Descs {
		if c.Descs[i].Write == write {
			n += uint64(c.Descs[i].Len)
		}
	}
	return n
}

// Gather copies the device-readable bytes from offset off into p and
// returns how many it copied: fewer than len(p) at the end of the part.
func (c *Chain) Gather(p []byte, off uint64) int {
	n := 0
	for _, b := range c.Buffers(false, off, uint64(len(p))) {
		n += copy(p[n:], b)
	}
	return n
}

// Scatter copies p into the device-writable bytes from offset off and
// returns how many it copied: fewer than len(p) at the end of the part.
func (c *Chain) Scatter(p []byte, off uint64) int {
	n := 0
	for _, b := range c.Buffers(true, off, uint64(len(p))) {
		n += copy(b, p[n:])
	}
	return n
}

// Buffers returns the guest memory of the writable (write) or readable
// part from offset off for up to n bytes, clipped to the part's end, for
// zero-copy I/O (preadv into guest RAM). The slices alias guest memory:
// the driver may change them concurrently, so never validate data in
// them and then use it again.
func (c *Chain) Buffers(write bool, off, n uint64) [][]byte {
	return c.AppendBuffers(nil, write, off, n)
}

// AppendBuffers appends what Buffers returns to out, for a caller that
// reuses its slice.
func (c *Chain) AppendBuffers(out [][]byte, write bool, off, n uint64) [][]byte {
	for i := range c.Descs {
		d := &c.Descs[i]
		if d.Write != write || n == 0 {
			continue
		}
		l := uint64(len(d.buf))
		if off >= l {
			off -= l
			continue
		}
		b := d.buf[off:]
		off = 0
		if uint64(len(b)) > n {
			b = b[:n]
		}
		n -= uint64(len(b))
		out = append(out, b)
	}
	return out
}

// guestLog is embedded in every device and the transport: the log of
// what the guest did wrong (and of host errors while serving it), rate
// limited per kind. The transport hands its device the logger it got for
// the device from the VM's set (setGuestLog), before the device runs.
type guestLog struct{ warn *guestlog.Logger }

func newGuestLog(device string) guestLog { return guestLog{guestlog.New(device)} }

func (g *guestLog) setGuestLog(l *guestlog.Logger) { g.warn = l }
