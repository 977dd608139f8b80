package virtio

import (
	"sync/atomic"
	"time"

	"github.com/govmm/govmm/exitstats"
)

// Request telemetry: per queue and kind of request, how long requests
// took from the notification that made the device look at the queue to
// the interrupt that told the driver they were done, in three phases
// that add up to that total:
//
//   - queue: notification to the device popping the request (the
//     goroutine's time on earlier requests of the same batch included);
//   - io: the device serving it (blk: the preadv, pwritev or fdatasync;
//     net: the tap write; rng: getrandom);
//   - completion: the used ring update, then the interrupt (the irqfd
//     write or KVM_SIGNAL_MSI returned), or the device finding that the
//     driver wants none; requests completed in one batch share one
//     interrupt, so the first ones wait for the last.
//
// A notification is stamped when govmm sees it: for an ioeventfd, when
// the notifier goroutine wakes from its read, so KVM's eventfd signal
// and the goroutine's wake-up come before any phase. Requests a device
// finds without a notification of their own (with EVENT_IDX, a batch
// that grew while it worked) are timed from when it first saw them in
// the available ring.
//
// Recording costs a few clock reads and atomic adds per request, no lock
// and no allocation; monitors read the histograms at any time.

// Op is a kind of request: an index into the names the device gives its
// queue (RequestOps), 0 for a device that does not tell them apart.
type Op uint8

// requestOps is implemented by devices whose queues carry more than one
// kind of request, or that name their one kind.
type requestOps interface {
	// RequestOps names the kinds of request queue carries, indexed by
	// the Op the device reports for each.
	RequestOps(queue int) []string
}

// defaultOps names the requests of a device without RequestOps.
var defaultOps = []string{"request"}

// telemetryEpoch anchors monotonic timestamps in int64 nanoseconds.
var telemetryEpoch = time.Now()

func monotonicNow() int64 { return int64(time.Since(telemetryEpoch)) }

// opTelemetry is one kind of request's histograms.
type opTelemetry struct {
	queue, io, completion, total exitstats.Histogram // ns
	bytes                        exitstats.Histogram
}

// pendingRequest is a request pushed to the used ring whose interrupt
// has not gone out yet; times are monotonicNow values.
type pendingRequest struct {
	op                       Op
	bytes                    uint64
	start, popped, completed int64
}

// queueTelemetry is one queue's request telemetry. A nil one records
// nothing and reads no clock. The histograms are read concurrently; the
// rest belongs to whoever serves the queue, one goroutine at a time (the
// device's lock for the queue serializes them).
type queueTelemetry struct {
	ops   []string
	stats []opTelemetry

	// notified is the time of the last notification, written by the
	// transport before it runs the device's Notify.
	notified atomic.Int64
	// What the queue's popper (one goroutine at a time) saw: seenAt
	// holds, for each avail ring entry up to seenIdx (free-running,
	// indexed modulo its length, the queue's maximum size), the time its
	// request counts from; lastLook is when new entries last showed up;
	// start is the time of the entry Pop took last.
	seenAt   []int64
	seenIdx  uint16
	lastLook int64
	start    int64
	// pending holds the requests pushed since the last interrupt; its
	// capacity, the queue size, is allocated once.
	pending []pendingRequest
}

func newQueueTelemetry(ops []string, size uint16) *queueTelemetry {
	if len(ops) == 0 {
		ops = defaultOps
	}
	return &queueTelemetry{
		ops:     ops,
		stats:   make([]opTelemetry, len(ops)),
		pending: make([]pendingRequest, 0, size),
		seenAt:  make([]int64, size),
	}
}

// now is the time to stamp a phase boundary with, 0 when off.
func (t *queueTelemetry) now() int64 {
	if t == nil {
		return 0
	}
	return monotonicNow()
}

// notify stamps a notification.
func (t *queueTelemetry) notify() {
	if t != nil {
		t.notified.Store(monotonicNow())
	}
}

// saw is Pop's look at the available ring: entries before idx are
// there. New ones count from the notification that announced them, if
// one came since the ring was last found to grow, else from now: with
// EVENT_IDX the driver does not notify while the device works, and a
// request found on the way has waited since it was put there, not since
// the notification that started the device's loop.
func (t *queueTelemetry) saw(idx uint16) {
	if t == nil {
		return
	}
	n := idx - t.seenIdx
	if n == 0 || int(n) > len(t.seenAt) {
		return // nothing new, or an index that went back: seen already
	}
	now := monotonicNow()
	at := now
	if notified := t.notified.Load(); notified > t.lastLook {
		at = notified
	}
	for i := t.seenIdx; i != idx; i++ {
		t.seenAt[int(i)%len(t.seenAt)] = at
	}
	t.seenIdx, t.lastLook = idx, now
}

// took records that Pop took the entry at free-running index i.
func (t *queueTelemetry) took(i uint16) {
	if t != nil {
		t.start = t.seenAt[int(i)%len(t.seenAt)]
	}
}

// popStart is when the request Pop returned last counts from: the
// notification that announced it, or when the device first saw it.
func (t *queueTelemetry) popStart() int64 {
	if t == nil {
		return 0
	}
	return t.start
}

// pushed records that a request of kind op that moved bytes, which the
// device learned of at start and popped at popped, was served and went
// to the used ring at completed; completed (its interrupt) follows.
func (t *queueTelemetry) pushed(op Op, bytes uint64, start, popped, completed int64) {
	if t == nil {
		return
	}
	if int(op) >= len(t.stats) {
		op = Op(len(t.stats) - 1) // a device bug; keep the request counted
	}
	// A request found before any notification (or a clock that went
	// backwards) spent no time queued.
	start = min(max(start, 0), popped)
	if len(t.pending) == cap(t.pending) {
		// A device that pushes more than a queue's worth without an
		// interrupt: count the oldest now rather than allocate.
		t.interrupted(completed)
	}
	t.pending = append(t.pending, pendingRequest{op: op, bytes: bytes, start: start, popped: popped, completed: completed})
}

// interrupted records every pending request as completed at end: the
// interrupt for them went out (or was not wanted) then.
func (t *queueTelemetry) interrupted(end int64) {
	if t == nil {
		return
	}
	for _, r := range t.pending {
		s := &t.stats[r.op]
		end := max(end, r.completed)
		s.queue.Record(uint64(r.popped - r.start))
		s.io.Record(uint64(r.completed - r.popped))
		s.completion.Record(uint64(end - r.completed))
		s.total.Record(uint64(end - r.start))
		s.bytes.Record(r.bytes)
	}
	t.pending = t.pending[:0]
}

// drop forgets pending requests and what was seen: the queue was reset,
// and its indices start again at 0.
func (t *queueTelemetry) drop() {
	if t != nil {
		t.pending = t.pending[:0]
		t.seenIdx, t.lastLook, t.start = 0, 0, 0
	}
}

// RequestStats is the telemetry of one kind of request on one queue.
// Times are in ns; the phase histograms and Total count the same
// requests, and each request's phases add up to its total.
type RequestStats struct {
	Op         string                      `json:"op"`
	Queue      exitstats.HistogramSnapshot `json:"queue_ns"`
	IO         exitstats.HistogramSnapshot `json:"io_ns"`
	Completion exitstats.HistogramSnapshot `json:"completion_ns"`
	Total      exitstats.HistogramSnapshot `json:"total_ns"`
	// Bytes counts the data each request moved (blk: the sectors read
	// or written; net: the frame without its virtio header).
	Bytes exitstats.HistogramSnapshot `json:"bytes"`
}

// Count is the number of requests.
func (r *RequestStats) Count() uint64 { return r.Total.Count }

// PhaseNames name the phases in the order Phases returns them.
var PhaseNames = [3]string{"queue", "io", "completion"}

// Phases returns the phase histograms in the order of PhaseNames.
func (r *RequestStats) Phases() [3]*exitstats.HistogramSnapshot {
	return [3]*exitstats.HistogramSnapshot{&r.Queue, &r.IO, &r.Completion}
}

// snapshot returns the kinds of request seen so far, in the device's
// order.
func (t *queueTelemetry) snapshot() []RequestStats {
	if t == nil {
		return nil
	}
	var out []RequestStats
	for i := range t.stats {
		s := &t.stats[i]
		r := RequestStats{
			Op: t.ops[i], Queue: s.queue.Snapshot(), IO: s.io.Snapshot(),
			Completion: s.completion.Snapshot(), Total: s.total.Snapshot(), Bytes: s.bytes.Snapshot(),
		}
		if r.Count() > 0 {
			out = append(out, r)
		}
	}
	return out
}
