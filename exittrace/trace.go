package exittrace

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/internal/monotime"
)

// Trace is the timeline of one VM: a ring per vCPU and two per traced
// virtqueue (its notifies, its interrupts). A nil *Trace is tracing off:
// it hands out nil tracks, whose methods do nothing.
type Trace struct {
	events int                     // ring size of every track
	names  *exitstats.Registry     // names the vCPUs' exit rows
	base   int64                   // monotime of New: time 0 of the trace
	symbol func(rip uint64) string // names guest RIPs; nil: addresses only

	mu     sync.Mutex // guards vcpus and queues: set-up and readers only
	vcpus  []*VCPU
	queues []*Queue

	notifies atomic.Uint64 // numbers the notifies, for flow links
}

// New returns a trace whose tracks each hold the last events events
// (rounded up to a power of two, at most MaxEvents); names names the
// exit rows the vCPUs record.
func New(events int, names *exitstats.Registry) *Trace {
	if events <= 0 {
		events = DefaultEvents
	}
	return &Trace{events: roundEvents(events), names: names, base: monotime.Now()}
}

// Symbolize has Write name each exit's RIP (function+0xoff) with symbol,
// which returns "" where it knows none. Call it before the VM runs.
func (t *Trace) Symbolize(symbol func(rip uint64) string) { t.symbol = symbol }

// Events is how many events each track holds.
func (t *Trace) Events() int { return t.events }

// VCPU is the ring of one vCPU. Only the vCPU's own thread records.
type VCPU struct {
	id   int
	ring singleRing
}

// NewVCPU adds the track of vCPU id.
func (t *Trace) NewVCPU(id int) *VCPU {
	if t == nil {
		return nil
	}
	v := &VCPU{id: id, ring: singleRing{ring: newRing(t.events)}}
	t.mu.Lock()
	t.vcpus = append(t.vcpus, v)
	t.mu.Unlock()
	return v
}

// Exit records one exit: it left the guest at exitAt (monotime ns) after
// guest ns in it, and was handled in handle ns, as row kind, at guest RIP
// rip (0 when unknown). Only the vCPU thread may call it; it takes no lock
// and does not allocate.
func (v *VCPU) Exit(kind exitstats.Kind, exitAt, handle, guest int64, rip uint64) {
	v.ring.record(event{start: exitAt, dur: handle, a: uint64(guest), b: rip, c: uint64(kind)})
}

// Queue traces one virtqueue: the device's work on each notify (a slice
// on the queue's notify track) and the interrupts it raises (slices on
// its interrupt track), each interrupt linked to the notify it was raised
// in. A nil *Queue records nothing.
type Queue struct {
	trace          *Trace
	name           string // "virtio-blk q0"
	notifies, irqs sharedRing
	// current is the number of the notify being served, 0 between them.
	// The transport serves one notify per queue at a time; an interrupt
	// another goroutine raises for this queue while one is served (a
	// received frame, console input) is linked to it too.
	current atomic.Uint64
}

// NewQueue adds the tracks of queue q of device.
func (t *Trace) NewQueue(device string, q int) *Queue {
	if t == nil {
		return nil
	}
	qu := &Queue{trace: t, name: fmt.Sprintf("%s q%d", device, q)}
	qu.notifies.ring = newRing(t.events)
	qu.irqs.ring = newRing(t.events)
	t.mu.Lock()
	t.queues = append(t.queues, qu)
	t.mu.Unlock()
	return qu
}

// Span is a notify or an interrupt in progress.
type Span struct {
	start int64  // monotime
	id    uint64 // a notify's number; an interrupt's notify, or 0
}

// BeginNotify marks the start of the device's work on a notify of the
// queue. The transport calls it and EndNotify around Device.Notify, one
// notify of a queue at a time.
func (q *Queue) BeginNotify() Span {
	if q == nil {
		return Span{}
	}
	s := Span{start: monotime.Now(), id: q.trace.notifies.Add(1)}
	q.current.Store(s.id)
	return s
}

// EndNotify records the notify s, now served.
func (q *Queue) EndNotify(s Span) {
	if q == nil {
		return
	}
	q.current.Store(0)
	q.notifies.record(event{start: s.start, dur: monotime.Now() - s.start, a: s.id})
}

// BeginInterrupt marks the start of an interrupt for the queue.
func (q *Queue) BeginInterrupt() Span {
	if q == nil {
		return Span{}
	}
	return Span{start: monotime.Now(), id: q.current.Load()}
}

// EndInterrupt records the interrupt s, now delivered to KVM.
func (q *Queue) EndInterrupt(s Span) {
	if q == nil {
		return
	}
	q.irqs.record(event{start: s.start, dur: monotime.Now() - s.start, a: s.id})
}
