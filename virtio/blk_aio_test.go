package virtio

import (
	"bytes"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// aioReads is a batch of page-sized reads of sectors 0, 8, 16, ...
// published on a cache=none disk's queue, each with its own data page
// and status byte (0xff until the device writes it).
type aioReads struct {
	e            *directEnv
	page         uint64
	head         []uint16
	data, status []uint64
}

// newAIOEnv is a cache=none disk whose queue 0 has an AIO context, and
// its context; it skips where O_DIRECT wants offsets above a page.
func newAIOEnv(t *testing.T) (*directEnv, *blkAIO) {
	t.Helper()
	e := newDirectEnv(t, false)
	if uint64(os.Getpagesize())%uint64(e.d.offAlign) != 0 {
		t.Skipf("O_DIRECT offset alignment %d above a page", e.d.offAlign)
	}
	a := e.b.queues[0].aio
	if a == nil {
		t.Fatal("a cache=none queue has no AIO context")
	}
	return e, a
}

// publishReads publishes n reads, which go to AIO in one batch.
func (e *directEnv) publishReads(n int) *aioReads {
	page := uint64(os.Getpagesize())
	r := &aioReads{e: e, page: page}
	for i := range uint64(n) {
		data, status := 0x200000+i*page, directStatus+i
		clear(e.mem[data : data+page])
		e.mem[status] = 0xff
		head := e.chainAt([]uint64{directHeader + 16*i, data, status},
			rd(blkHeader(blkTIn, 8*i)), wr(uint32(page)), wr(1))
		e.publish(head)
		r.head, r.data, r.status = append(r.head, head), append(r.data, data), append(r.status, status)
	}
	return r
}

// ok reports whether read i returned the image's data.
func (r *aioReads) ok(i int) bool {
	at, off := r.data[i], uint64(8*i*SectorSize)
	return bytes.Equal(r.e.mem[at:at+r.page], r.e.disk[off:off+r.page])
}

// notifyWithin runs Notify(0) and fails the test if it does not return
// within a generous bound: the point is that it ends at all.
func notifyWithin(t *testing.T, b *Block) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- b.Notify(0) }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Notify did not return within 10 s")
		return nil
	}
}

// checkAllOK checks that every read came back once, with the image's
// data.
func (r *aioReads) checkAllOK(t *testing.T) {
	t.Helper()
	for i := range r.head {
		r.e.mustUsed()
		if st := r.e.mem[r.status[i]]; st != blkSOK || !r.ok(i) {
			t.Errorf("read %d: status %d, data right %v", i, st, r.ok(i))
		}
	}
	r.e.noUsed()
}

// checkAllFailed checks that every read came back once, with IOERR, and
// the device counted each as a failed read and the context failure once.
func (r *aioReads) checkAllFailed(t *testing.T, err error) {
	t.Helper()
	e := r.e
	if err == nil {
		t.Error("Notify returned no error for a failed AIO context")
	}
	for i := range r.head {
		e.mustUsed()
		if st := e.mem[r.status[i]]; st != blkSIOErr {
			t.Errorf("read %d: status %d, want IOERR", i, st)
		}
	}
	e.noUsed()
	if got := e.b.Stats().FailedReadOps; got != uint64(len(r.head)) {
		t.Errorf("%d failed reads counted, want %d", got, len(r.head))
	}
	if got := e.b.warn.Counts()["aio_failure"]; got != 1 {
		t.Errorf("%d AIO failures in the guest log, want 1", got)
	}
}

// reactivate resets the device, as a driver that saw DEVICE_NEEDS_RESET
// does, and activates it again on a fresh queue in the same memory.
func (e *directEnv) reactivate(t *testing.T) {
	t.Helper()
	e.b.Reset()
	e.testDriver = newTestDriverIn(t, e.mem, e.q, e.size, 0x1000, 0)
	if err := e.b.Activate(e.mem, FeatureVersion1|blkFFlush, []*Queue{e.q}, newTestIRQ()); err != nil {
		t.Fatal(err)
	}
}

// checkRecovered checks that after a reset the queue works again, with
// a new AIO context.
func (e *directEnv) checkRecovered(t *testing.T, old *blkAIO) {
	t.Helper()
	e.reactivate(t)
	a := e.b.queues[0].aio
	if a == nil || a == old || a.dead {
		t.Fatalf("after the reset the queue's AIO context is %p (dead %v), the failed one %p", a, a != nil && a.dead, old)
	}
	r := e.publishReads(4)
	if err := notifyWithin(t, e.b); err != nil {
		t.Fatalf("Notify after the reset: %v", err)
	}
	r.checkAllOK(t)
	if a.submitted != 4 {
		t.Errorf("%d reads went to the new context, want 4", a.submitted)
	}
}

// TestBlockAIOGetEventsFails: io_getevents failing for good ends the
// queue's loop (it used to spin): every read in flight completes with
// IOERR, the queue breaks, and after a reset a new context serves it.
func TestBlockAIOGetEventsFails(t *testing.T) {
	e, a := newAIOEnv(t)
	a.sys.getEvents = func(uint64, []ioEvent) (int, error) { return 0, unix.EIO }
	r := e.publishReads(4)
	r.checkAllFailed(t, notifyWithin(t, e.b))
	if !a.dead || a.inflight() != 0 {
		t.Errorf("context dead %v with %d in flight, want dead and none", a.dead, a.inflight())
	}
	if err := notifyWithin(t, e.b); err == nil {
		t.Error("the broken queue took another notification")
	}
	e.checkRecovered(t, a)
}

// TestBlockAIOEventfdFails: the completion eventfd failing for good ends
// the loop the same way.
func TestBlockAIOEventfdFails(t *testing.T) {
	e, a := newAIOEnv(t)
	a.sys.getEvents = func(uint64, []ioEvent) (int, error) { return 0, nil } // nothing yet, for ever
	a.sys.wait = func(*eventfdReader, time.Duration) error { return unix.EBADF }
	r := e.publishReads(4)
	r.checkAllFailed(t, notifyWithin(t, e.b))
	e.checkRecovered(t, a)
}

// TestBlockAIOUnknownCompletion: a completion that names no request in
// flight (a slot out of range, or an idle one) fails the context: the
// requests whose completions arrived complete as they are, the others
// with IOERR after io_destroy, none twice, and nothing panics.
func TestBlockAIOUnknownCompletion(t *testing.T) {
	for _, bad := range []uint64{1 << 40, blkQueueSize - 1} { // slots are taken from 0 up
		e, a := newAIOEnv(t)
		corrupted := false
		a.sys.getEvents = func(ctx uint64, ev []ioEvent) (int, error) {
			n, err := ioGetEvents(ctx, ev)
			if n > 0 && !corrupted {
				ev[0].data, corrupted = bad, true
			}
			return n, err
		}
		r := e.publishReads(4)
		if err := notifyWithin(t, e.b); err == nil {
			t.Errorf("slot %d: Notify returned no error", bad)
		}
		seen, failed := map[uint32]bool{}, 0
		for range r.head {
			id, _ := e.mustUsed()
			if seen[id] {
				t.Errorf("slot %d: request %d completed twice", bad, id)
			}
			seen[id] = true
		}
		e.noUsed()
		for i := range r.head {
			switch st := e.mem[r.status[i]]; {
			case st == blkSIOErr:
				failed++
			case st != blkSOK || !r.ok(i):
				t.Errorf("slot %d: read %d: status %d, data right %v", bad, i, st, r.ok(i))
			}
		}
		if failed == 0 {
			t.Errorf("slot %d: the read whose completion was lost did not fail", bad)
		}
		if !a.dead {
			t.Errorf("slot %d: the context lives on", bad)
		}
		e.checkRecovered(t, a)
	}
}

// TestBlockAIODestroyFails: where io_destroy fails too, nothing says the
// kernel is done with the buffers in flight: those requests are
// abandoned (not used, their status byte untouched), the queue breaks,
// and the device still closes at once.
func TestBlockAIODestroyFails(t *testing.T) {
	e, a := newAIOEnv(t)
	a.sys.getEvents = func(uint64, []ioEvent) (int, error) { return 0, unix.EIO }
	a.sys.destroy = func(ctx uint64) error {
		ioDestroy(ctx) // the test's own hygiene: the device sees a failure
		return unix.EIO
	}
	r := e.publishReads(4)
	if err := notifyWithin(t, e.b); err == nil {
		t.Error("Notify returned no error")
	}
	e.noUsed()
	for i := range r.head {
		if st := e.mem[r.status[i]]; st != 0xff {
			t.Errorf("read %d: status byte written (%d) for a request that never completed", i, st)
		}
	}
	if a.inflight() != 0 || !a.dead {
		t.Errorf("%d in flight, dead %v", a.inflight(), a.dead)
	}
	closed := make(chan error, 1)
	go func() { closed <- e.b.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10 s")
	}
}

// TestBlockAIOLostWakeup: completions whose eventfd signal was consumed
// before io_getevents saw them (io_getevents found nothing twice here)
// are still found: the wait on the eventfd gives up now and then and the
// loop asks again, instead of sleeping for ever.
func TestBlockAIOLostWakeup(t *testing.T) {
	e, a := newAIOEnv(t)
	hidden := 0
	a.sys.getEvents = func(ctx uint64, ev []ioEvent) (int, error) {
		if hidden < 2 {
			hidden++
			return 0, nil
		}
		return ioGetEvents(ctx, ev)
	}
	r := e.publishReads(4)
	if err := notifyWithin(t, e.b); err != nil {
		t.Fatal(err)
	}
	r.checkAllOK(t)
	if a.dead || e.b.warn.Counts()["aio_failure"] != 0 {
		t.Error("a slow wake-up failed the context")
	}
}

// TestBlockAIOSubmitRefused: what io_submit does not take (EAGAIN) is
// served synchronously, with the right data.
func TestBlockAIOSubmitRefused(t *testing.T) {
	e, a := newAIOEnv(t)
	a.sys.submit = func(uint64, []*iocb) (int, error) { return 0, unix.EAGAIN }
	r := e.publishReads(4)
	if err := notifyWithin(t, e.b); err != nil {
		t.Fatal(err)
	}
	r.checkAllOK(t)
	if a.submitted != 0 || a.inflight() != 0 || a.dead {
		t.Errorf("submitted %d, in flight %d, dead %v", a.submitted, a.inflight(), a.dead)
	}
}

// TestBlockAIOEmptyDescriptors: zero-length descriptors among a read's
// data go to AIO as they are: Chain.Buffers drops them, so the iovecs
// prepareAIO builds never point at an empty buffer (which it no longer
// checks for).
func TestBlockAIOEmptyDescriptors(t *testing.T) {
	e, a := newAIOEnv(t)
	page := uint64(os.Getpagesize())
	const reads = 2
	for i := range uint64(reads) {
		data, status := 0x200000+i*page, directStatus+i
		e.mem[status] = 0xff
		e.publish(e.chainAt([]uint64{directHeader + 16*i, 0x300000, data, 0x300000, status},
			rd(blkHeader(blkTIn, 8*i)), wr(0), wr(uint32(page)), wr(0), wr(1)))
	}
	if err := notifyWithin(t, e.b); err != nil {
		t.Fatal(err)
	}
	for i := range uint64(reads) {
		e.mustUsed()
		data := 0x200000 + i*page
		if st := e.mem[directStatus+i]; st != blkSOK || !bytes.Equal(e.mem[data:data+page], e.disk[8*i*SectorSize:8*i*SectorSize+page]) {
			t.Errorf("read %d: status %d or data wrong", i, st)
		}
	}
	if a.submitted != reads {
		t.Errorf("%d reads went to AIO, want %d", a.submitted, reads)
	}
}

// TestBlockAIOLoneRequest: a read alone in the ring, with nothing in
// flight, goes through AIO like any other: serving it with a blocking
// preadv on the notifier cost a QD32 guest a sixth of its IOPS (README,
// Storage).
func TestBlockAIOLoneRequest(t *testing.T) {
	e, a := newAIOEnv(t)
	r := e.publishReads(1)
	if err := notifyWithin(t, e.b); err != nil {
		t.Fatal(err)
	}
	r.checkAllOK(t)
	if a.submitted != 1 || a.inflight() != 0 {
		t.Errorf("%d reads went to AIO, %d in flight; want 1, 0", a.submitted, a.inflight())
	}
}
