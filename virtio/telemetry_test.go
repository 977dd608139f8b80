package virtio

import (
	"bytes"
	"slices"
	"sync"
	"testing"
	"time"
)

// newTelemetryBlkEnv is a blk device whose queue keeps telemetry, as the
// transport sets it up with RequestTelemetry.
func newTelemetryBlkEnv(t *testing.T) *blkEnv {
	t.Helper()
	path, _ := testImage(t, "disk.img", 64)
	e := newBlkEnv(t, path, false, blkFFlush)
	e.q.tel = newQueueTelemetry(e.b.RequestOps(0), e.size)
	// One request at a time, so that a batch is one run of the ring (with
	// workers, how many interrupts a batch takes depends on which
	// finishes when).
	e.b.workers = 0
	return e
}

func opStats(t *testing.T, tel *queueTelemetry, op string) RequestStats {
	t.Helper()
	for _, r := range tel.snapshot() {
		if r.Op == op {
			return r
		}
	}
	t.Fatalf("no %q requests in %v", op, tel.snapshot())
	return RequestStats{}
}

// Each kind of request is counted with the bytes it moved, and its
// phases add up to its total.
func TestTelemetryCountsAndPhasesAddUp(t *testing.T) {
	e := newTelemetryBlkEnv(t)
	tel := e.q.tel
	for range 3 {
		tel.notify()
		e.do(rd(blkHeader(blkTIn, 2)), wr(1024), wr(1))
	}
	tel.notify()
	e.do(rd(blkHeader(blkTOut, 5)), rd(make([]byte, 512)), wr(1))
	e.do(rd(blkHeader(blkTFlush, 0)), wr(1))
	e.do(rd(blkHeader(blkTGetID, 0)), wr(blkIDLen), wr(1))
	e.do(rd(blkHeader(99, 0)), wr(1))        // no such type
	e.do(rd([]byte("short")), wr(1))         // no full header
	e.add(rd(blkHeader(blkTIn, 0)), rd(nil)) // no status byte: dropped
	e.b.Notify(0)
	e.mustUsed()

	want := map[string]struct{ count, bytes uint64 }{
		"read": {3, 3 * 1024}, "write": {1, 512}, "flush": {1, 0},
		"get_id": {1, blkIDLen}, "unsupported": {1, 0}, "bad": {2, 0},
	}
	snap := tel.snapshot()
	if len(snap) != len(want) {
		t.Errorf("%d kinds of request, want %d: %+v", len(snap), len(want), snap)
	}
	for op, w := range want {
		r := opStats(t, tel, op)
		if r.Count() != w.count || r.Bytes.Count != w.count || r.Bytes.Sum != w.bytes {
			t.Errorf("%s: %d requests, %d byte samples, %d bytes; want %d, %d bytes", op, r.Count(), r.Bytes.Count, r.Bytes.Sum, w.count, w.bytes)
		}
		for i, p := range r.Phases() {
			if p.Count != r.Total.Count {
				t.Errorf("%s: phase %s counts %d, total %d", op, PhaseNames[i], p.Count, r.Total.Count)
			}
		}
		if sum := r.Queue.Sum + r.IO.Sum + r.Completion.Sum; sum != r.Total.Sum {
			t.Errorf("%s: phases add up to %d ns, total %d ns", op, sum, r.Total.Sum)
		}
		if r.Total.Sum == 0 {
			t.Errorf("%s: took no time at all", op)
		}
	}
	// Telemetry agrees with the disk's own counters.
	if s := e.b.Stats(); s.ReadOps != want["read"].count || s.WriteOps != 1 || s.FlushOps != 1 {
		t.Errorf("blockstats %+v", s)
	}
	// A reset forgets what was pushed without its interrupt, not what was
	// counted.
	e.q.Reset()
	if r := opStats(t, tel, "read"); r.Count() != 3 {
		got := r.Count()
		t.Errorf("reset lost counted reads: %d", got)
	}
}

// Requests served in one batch share the batch's interrupt: every one is
// recorded once the interrupt went out, none before.
func TestTelemetryBatchSharesInterrupt(t *testing.T) {
	e := newTelemetryBlkEnv(t)
	tel := e.q.tel
	tel.notify()
	for range 5 {
		e.add(rd(blkHeader(blkTIn, 0)), wr(512), wr(1))
	}
	if err := e.b.Notify(0); err != nil {
		t.Fatal(err)
	}
	if n := e.irq.count(0); n != 1 {
		t.Fatalf("%d interrupts, want 1", n)
	}
	r := opStats(t, tel, "read")
	if r.Count() != 5 || len(tel.pending) != 0 {
		t.Errorf("%d reads recorded, %d pending; want 5 and 0", r.Count(), len(tel.pending))
	}
}

// The pending list never grows past the queue size: a device that pushes
// more without an interrupt has the oldest counted at once.
func TestTelemetryPendingBounded(t *testing.T) {
	tel := newQueueTelemetry(nil, 4)
	for i := range int64(10) {
		tel.pushed(0, 1, i, i+1, i+2)
	}
	if len(tel.pending) > 4 || cap(tel.pending) != 4 {
		t.Fatalf("pending %d of capacity %d", len(tel.pending), cap(tel.pending))
	}
	tel.interrupted(100)
	r := tel.snapshot()
	if len(r) != 1 || r[0].Op != "request" || r[0].Count() != 10 {
		t.Fatalf("snapshot %+v", r)
	}
	// An op the device did not name is counted as its last kind.
	tel.pushed(7, 1, 0, 0, 0)
	tel.interrupted(1)
	if got := tel.snapshot()[0].Count(); got != 11 {
		t.Errorf("count %d after an unnamed op, want 11", got)
	}
	// Without telemetry nothing is recorded and no clock is read.
	var off *queueTelemetry
	off.notify()
	off.pushed(0, 1, 1, 2, 3)
	off.interrupted(off.now())
	if off.now() != 0 || off.snapshot() != nil {
		t.Error("nil telemetry recorded")
	}
}

// A request counts from the notification that announced it, or, found
// without one (EVENT_IDX keeps the driver quiet while the device works),
// from when the device first saw it in the available ring.
func TestTelemetryRequestStart(t *testing.T) {
	tel := newQueueTelemetry(nil, 8)
	tel.notified.Store(1) // a notification, before the device looked
	tel.saw(2)
	for i := range uint16(2) {
		if tel.took(i); tel.popStart() != 1 {
			t.Errorf("entry %d counts from %d, want the notification's 1", i, tel.popStart())
		}
	}
	before := monotonicNow()
	tel.saw(5) // three more, with no notification since the last look
	for i := uint16(2); i < 5; i++ {
		if tel.took(i); tel.popStart() < before {
			t.Errorf("entry %d counts from %d, before it was seen (%d)", i, tel.popStart(), before)
		}
	}
	tel.notified.Store(tel.lastLook + 1) // announced again
	tel.saw(6)
	if tel.took(5); tel.popStart() != tel.notified.Load() {
		t.Errorf("entry 5 counts from %d, want the notification's %d", tel.popStart(), tel.notified.Load())
	}
	// An index that went back shows nothing new; a reset starts over.
	seen := tel.seenIdx
	if tel.saw(3); tel.seenIdx != seen {
		t.Errorf("an index going back moved seenIdx from %d to %d", seen, tel.seenIdx)
	}
	tel.drop()
	if tel.seenIdx != 0 || tel.lastLook != 0 {
		t.Errorf("after a reset: seenIdx %d, lastLook %d", tel.seenIdx, tel.lastLook)
	}
	// Without telemetry, Pop's calls do nothing.
	var off *queueTelemetry
	off.saw(3)
	off.took(1)
	if off.popStart() != 0 {
		t.Error("nil telemetry has a start")
	}
}

// Monitors read the histograms while the device records (run with
// -race): each snapshot's counts only grow, and nothing is lost.
func TestTelemetryConcurrentScrape(t *testing.T) {
	e := newTelemetryBlkEnv(t)
	tel := e.q.tel
	const requests = 300
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var last uint64
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, r := range tel.snapshot() {
				if r.Count() < last {
					t.Errorf("count went back from %d to %d", last, r.Count())
				}
				last = r.Count()
				r.Total.Quantile(0.99)
			}
		}
	}()
	for range requests {
		tel.notify()
		e.do(rd(blkHeader(blkTIn, 1)), wr(512), wr(1))
	}
	close(stop)
	wg.Wait()
	if r := opStats(t, tel, "read"); r.Count() != requests {
		got := r.Count()
		t.Errorf("%d reads counted, want %d", got, requests)
	}
}

// The transport names each queue's requests from the device, stamps
// notifications, and keeps no telemetry unless asked.
func TestTransportRequestTelemetry(t *testing.T) {
	r := newRigConfig(t, newFakeDevice(16, 16), TransportConfig{Memory: make(sliceMemory, 1<<20), RequestTelemetry: true}, false)
	if got := r.tr.queues[1].tel.ops; !slices.Equal(got, []string{"request"}) {
		t.Errorf("ops of a device without names: %v", got)
	}
	r.enableMSIX()
	r.negotiate(FeatureVersion1)
	r.setupQueue(0, 16, 1)
	r.write(ccDeviceStatus, 1, 0xf)
	before := r.tr.queues[0].tel.notified.Load()
	r.write(pciNotifyOff, 2, 0)
	if after := r.tr.queues[0].tel.notified.Load(); after <= before {
		t.Errorf("MMIO notify not stamped: %d then %d", before, after)
	}
	if s := r.tr.RequestStats(); len(s) != 2 || s[0].Queue != 0 || s[1].Queue != 1 || len(s[0].Ops) != 0 {
		t.Errorf("request stats %+v", s)
	}

	path, _ := testImage(t, "disk.img", 8)
	b, err := NewBlock(path, false)
	if err != nil {
		t.Fatal(err)
	}
	plain := newRigWith(t, b, make(sliceMemory, 1<<20), false)
	if plain.tr.queues[0].tel != nil || plain.tr.RequestStats() != nil {
		t.Error("telemetry kept without RequestTelemetry")
	}
	path2, _ := testImage(t, "disk2.img", 8)
	b2, err := NewBlock(path2, false)
	if err != nil {
		t.Fatal(err)
	}
	named := newRigConfig(t, b2, TransportConfig{Memory: make(sliceMemory, 1<<20), RequestTelemetry: true}, false)
	if got := named.tr.queues[0].tel.ops; !slices.Equal(got, blkOps) {
		t.Errorf("blk ops %v", got)
	}
}

// BenchmarkTelemetryRequest is what telemetry adds to one request served
// alone: the notification stamp, three clock reads, and recording five
// histograms at the interrupt.
func BenchmarkTelemetryRequest(b *testing.B) {
	tel := newQueueTelemetry(blkOps, 256)
	for i := range b.N {
		tel.notify()
		tel.saw(uint16(i + 1))
		tel.took(uint16(i))
		start := tel.popStart()
		popped := tel.now()
		done := tel.now()
		tel.pushed(blkOpRead, uint64(i&0xffff), start, popped, done)
		tel.interrupted(tel.now())
	}
}

// withTelemetry gives a test queue the telemetry the transport would,
// with the device's names for queue.
func withTelemetry(q *Queue, dev requestOps, queue int) *queueTelemetry {
	q.tel = newQueueTelemetry(dev.RequestOps(queue), q.MaxSize())
	return q.tel
}

// wantRequests checks the count and bytes of one kind of request, and
// that its phases add up.
func wantRequests(t *testing.T, tel *queueTelemetry, op string, count, bytes uint64) {
	t.Helper()
	r := opStats(t, tel, op)
	if r.Count() != count || r.Bytes.Sum != bytes {
		t.Errorf("%s: %d requests of %d bytes, want %d of %d", op, r.Count(), r.Bytes.Sum, count, bytes)
	}
	if sum := r.Queue.Sum + r.IO.Sum + r.Completion.Sum; sum != r.Total.Sum {
		t.Errorf("%s: phases add up to %d ns, total %d ns", op, sum, r.Total.Sum)
	}
}

// Console, rng and net get the same telemetry: through serve on their
// transmit and request queues, by hand on their receive queues.
func TestTelemetryOtherDevices(t *testing.T) {
	t.Run("console", func(t *testing.T) {
		var out bytes.Buffer
		c, rx, tx, _ := newConsoleEnv(t, &out)
		rxTel, txTel := withTelemetry(rx.q, c, 0), withTelemetry(tx.q, c, 1)
		tx.add(rd([]byte("hello ")), rd([]byte("world")))
		tx.add(rd([]byte("\n")), wr(8))
		if err := c.Notify(1); err != nil {
			t.Fatal(err)
		}
		rx.add(wr(16))
		c.Input([]byte("abc"))
		wantRequests(t, txTel, "tx", 2, 12)
		wantRequests(t, rxTel, "rx", 1, 3)
	})
	t.Run("rng", func(t *testing.T) {
		r := NewRNG()
		d := newTestDriver(t, r.QueueSizes()[0])
		tel := withTelemetry(d.q, r, 0)
		if err := r.Activate(d.mem, 0, []*Queue{d.q}, newTestIRQ()); err != nil {
			t.Fatal(err)
		}
		d.add(wr(100), wr(200))
		d.add(wr(rngMaxRequest + 1))
		if err := r.Notify(0); err != nil {
			t.Fatal(err)
		}
		wantRequests(t, tel, "entropy", 2, 300+rngMaxRequest)
	})
	t.Run("net", func(t *testing.T) {
		e := newNetEnv(t, true)
		rxTel, txTel := withTelemetry(e.rx.q, e.n, 0), withTelemetry(e.tx.q, e.n, 1)
		e.tx.add(rd(frame(NetHdrLen+60, 1)))
		e.tx.add(rd(make([]byte, 4))) // shorter than the header: dropped
		if err := e.n.Notify(1); err != nil {
			t.Fatal(err)
		}
		wantRequests(t, txTel, "tx", 1, 60)
		wantRequests(t, txTel, "tx_dropped", 1, 0)

		e.rx.add(wr(1526))
		if err := e.n.Notify(0); err != nil {
			t.Fatal(err)
		}
		if _, err := e.host.Write(frame(NetHdrLen+100, 7)); err != nil {
			t.Fatal(err)
		}
		waitIRQ(t, e.irq, 0)
		// The receive goroutine records the frame once its interrupt
		// returned, just after the test saw it: wait for that, boundedly.
		deadline := time.Now().Add(5 * time.Second)
		for len(rxTel.snapshot()) == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		wantRequests(t, rxTel, "rx", 1, 100)
	})
}
