package virtio

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A cache=none disk serves its aligned reads and writes with Linux AIO
// (io_submit), as QEMU's aio=native: a queue's notifier submits every
// request it finds in one call and waits for their completions on an
// eventfd through Go's netpoller, so a request costs no thread of its
// own, no blocking system call and no scheduler hand-off, where the
// page-cache path blocks a goroutine's thread in preadv per request.
// Linux AIO is asynchronous only with O_DIRECT, hence cache=none only.
// Every other request (flush, discard, get-id, a read or write that needs
// a bounce buffer, the page cache or more than blkIOChunk bytes) is
// served as before, on the notifier.

// Linux AIO ABI (include/uapi/linux/aio_abi.h).
const (
	iocbCmdPreadv  = 7
	iocbCmdPwritev = 8
	iocbFlagResfd  = 1 << 0
)

// iocb is struct iocb (little-endian x86-64 layout).
type iocb struct {
	data      uint64 // aio_data: the slot
	key       uint32
	rwFlags   uint32
	opcode    uint16
	reqprio   int16
	fd        uint32
	buf       uint64 // the iovec array
	nbytes    uint64 // iovecs in it
	offset    int64
	reserved2 uint64
	flags     uint32
	resfd     uint32
}

// ioEvent is struct io_event.
type ioEvent struct {
	data, obj uint64
	res, res2 int64
}

// blkAIOMaxBytes bounds the data one queue has in flight through AIO.
// AIO cannot be cancelled, so a reset or a stop waits for all of it: the
// bound keeps that wait to a few chunks (the worker path's is one chunk
// per worker), whatever the guest queues: 256 requests of a chunk each
// would be 256 MiB. Requests past it are served on the ordinary path.
const blkAIOMaxBytes = 8 * blkIOChunk

// aioCalls are the kernel's side of a blkAIO: the system calls, and the
// wait on the completion eventfd. Tests replace them to make the kernel
// fail.
type aioCalls struct {
	submit    func(ctx uint64, cbs []*iocb) (int, error)
	getEvents func(ctx uint64, events []ioEvent) (int, error)
	destroy   func(ctx uint64) error
	wait      func(done *eventfdReader, timeout time.Duration) error
}

var linuxAIO = aioCalls{submit: ioSubmit, getEvents: ioGetEvents, destroy: ioDestroy, wait: waitEventfd}

// aioRecheck is how long the loop waits on the completion eventfd before
// it asks io_getevents again anyway: a wake-up that never comes then
// costs a delay, not a queue that waits for ever.
const aioRecheck = 100 * time.Millisecond

// blkAIO is one request queue's AIO context. The queue's one notifier
// uses it, one Notify at a time (the transport serializes them).
type blkAIO struct {
	sys    aioCalls
	ctx    uint64         // aio_context_t
	dead   bool           // destroyed after a failure (failAIO): never used again
	done   *eventfdReader // eventfd the kernel signals per completion; non-blocking, so the netpoller waits on it
	doneFd int
	slots  []aioSlot
	free   []int  // indices of idle slots
	bytes  uint64 // data in flight, at most blkAIOMaxBytes
	events []ioEvent
	submit []*iocb // the batch being submitted
	batch  []int   // its slots

	submitted uint64 // requests the kernel took, for tests
}

// aioSlot is one request in flight: the iocb and iovecs the kernel
// reads at submission, and what completing the request needs.
type aioSlot struct {
	cb            iocb
	iov           []unix.Iovec
	chain         *Chain
	d             dataRequest
	r             served
	start         time.Time
	telStart, pop int64
}

// newBlkAIO makes an AIO context of depth requests.
func newBlkAIO(depth int) (*blkAIO, error) {
	a := &blkAIO{sys: linuxAIO, slots: make([]aioSlot, depth), events: make([]ioEvent, depth)}
	if err := ioSetup(depth, &a.ctx); err != nil {
		return nil, fmt.Errorf("io_setup: %w", err)
	}
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		ioDestroy(a.ctx)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "virtio-blk-aio")
	if a.done, err = newEventfdReader(f); err != nil {
		f.Close()
		ioDestroy(a.ctx)
		return nil, err
	}
	a.doneFd = fd
	for i := depth - 1; i >= 0; i-- {
		a.free = append(a.free, i)
	}
	return a, nil
}

// Close releases the context; nothing may be in flight.
func (a *blkAIO) Close() error {
	var err error
	if !a.dead {
		err = a.sys.destroy(a.ctx)
	}
	if cerr := a.done.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// waitEventfd waits until done is signalled, or timeout passes, and
// clears it.
func waitEventfd(done *eventfdReader, timeout time.Duration) error {
	if err := done.f.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := done.Read(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return nil
}

func (a *blkAIO) inflight() int { return len(a.slots) - len(a.free) }

// prepareAIO adds chain c to the batch if it is a read or write AIO can
// serve as it is, and reports whether it did. It looks at the request
// through parse, without a word to the guest log or the counters: what
// it declines, the ordinary path serves and judges.
func (b *Block) prepareAIO(a *blkAIO, c *Chain, telStart, popped int64) bool {
	w := c.WritableLen()
	if len(a.free) == 0 || w == 0 {
		return false
	}
	p := b.parse(c, w-1)
	d := p.d
	if p.fault != blkFine || p.typ != blkTIn && p.typ != blkTOut ||
		d.n > blkIOChunk || a.bytes+d.n > blkAIOMaxBytes || b.direct.path(d.bufs, d.off) != dioDirect {
		return false
	}
	// Chain.Buffers gives no empty buffer and at most one per descriptor,
	// which seg_max bounds below iovMax: the request is one iocb as it is.
	i := a.free[len(a.free)-1]
	a.free = a.free[:len(a.free)-1]
	a.bytes += d.n
	s := &a.slots[i]
	*s = aioSlot{iov: s.iov[:0], chain: c, d: d, r: served{op: blkOpOf(p.typ), bytes: d.n}, start: time.Now(), telStart: telStart, pop: popped}
	for _, buf := range d.bufs {
		s.iov = append(s.iov, unix.Iovec{Base: &buf[0], Len: uint64(len(buf))})
	}
	s.cb = iocb{data: uint64(i), opcode: iocbCmdPreadv, fd: uint32(b.direct.fd), nbytes: uint64(len(s.iov)),
		offset: d.off, flags: iocbFlagResfd, resfd: uint32(a.doneFd)}
	if d.write {
		s.cb.opcode = iocbCmdPwritev
	}
	s.cb.buf = iovecAddress(s.iov)
	a.submit, a.batch = append(a.submit, &s.cb), append(a.batch, i)
	return true
}

// serveQueueAIO is serveQueue for a queue with an AIO context: it takes
// every available request, submits the reads and writes in one batch and
// serves the rest at once, then waits for completions, completes them
// and looks again, until the ring is empty and nothing is in flight.
// Interrupts go out after each round of completions (as the driver's
// used_event allows), and after every queue-size batch. A queue the
// transport holds or aborted stops being popped; what is in flight still
// completes (an aborted queue's requests are abandoned by complete).
//
// Every round that waits ends with at least one request completed or
// with the context given up (failAIO, which leaves nothing in flight),
// so the loop ends however the kernel behaves.
func (b *Block) serveQueueAIO(bq *blkQueue, a *blkAIO) error {
	tel := bq.q.tel
	var errs []error
	record := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	record(b.retryKept(bq))
	for {
		took := false
		for len(errs) == 0 && len(a.free) > 0 {
			c, err := bq.q.Pop(b.mem)
			if err != nil {
				record(err)
				break
			}
			if c == nil {
				break
			}
			took = true
			start, popped := tel.popStart(), tel.now()
			// A request alone in the ring goes through AIO too: served
			// here with a blocking preadv, it made the scheduler hand off
			// the notifier's processor and wake its monitor thread, on
			// the cores the vCPUs need (README, Storage).
			if !b.prepareAIO(a, c, start, popped) {
				record(b.complete(bq, c, b.handle(bq.q, c), start, popped))
			}
		}
		b.submitAIO(bq, a, record)
		if a.inflight() == 0 && (!took || len(errs) > 0) {
			break
		}
		if a.inflight() > 0 {
			record(b.reapAIO(bq, a))
		}
		record(b.signal(bq))
	}
	record(b.signal(bq))
	return errors.Join(errs...)
}

// submitAIO submits the batch; what the kernel does not take is served
// on the calling goroutine instead.
func (b *Block) submitAIO(bq *blkQueue, a *blkAIO, record func(error)) {
	defer func() { a.submit, a.batch = a.submit[:0], a.batch[:0] }()
	for len(a.submit) > 0 {
		n, err := a.sys.submit(a.ctx, a.submit)
		if err != nil || n <= 0 || n > len(a.submit) {
			// EAGAIN (no room in the kernel), EINTR or a refusal: serve
			// the rest synchronously, which reports real errors per
			// request.
			for _, i := range a.batch {
				s := &a.slots[i]
				status, written := b.finishData(s.d, b.transfer(bq.q, s.d.bufs, s.d.off, s.d.write), s.start)
				record(b.completeAIO(bq, a, i, status, written))
			}
			return
		}
		a.submitted += uint64(n)
		a.submit, a.batch = a.submit[n:], a.batch[n:]
	}
}

// reapAIO waits for at least one completion and completes every request
// that has one. A context that fails (io_getevents or the eventfd
// fails, or a completion names no request in flight) is given up
// (failAIO): its error breaks the queue.
func (b *Block) reapAIO(bq *blkQueue, a *blkAIO) error {
	for {
		n, err := a.sys.getEvents(a.ctx, a.events[:a.inflight()])
		switch {
		case err == unix.EINTR:
			n = 0
		case err != nil:
			return b.failAIO(bq, a, fmt.Errorf("io_getevents: %w", err))
		case n < 0 || n > a.inflight():
			return b.failAIO(bq, a, fmt.Errorf("io_getevents returned %d events for %d requests", n, a.inflight()))
		}
		if n > 0 {
			var errs []error
			var lost error
			for _, e := range a.events[:n] {
				if e.data >= uint64(len(a.slots)) || a.slots[e.data].chain == nil {
					lost = fmt.Errorf("completion for slot %d, which has no request in flight", e.data)
					continue
				}
				errs = append(errs, b.finishAIO(bq, a, int(e.data), e.res))
			}
			if lost != nil {
				// The request the kernel did complete is unknown: only
				// io_destroy can say all of them are done.
				errs = append(errs, b.failAIO(bq, a, lost))
			}
			return errors.Join(errs...)
		}
		// Nothing yet: sleep on the eventfd, in the netpoller.
		if err := a.sys.wait(a.done, aioRecheck); err != nil {
			return b.failAIO(bq, a, fmt.Errorf("AIO eventfd: %w", err))
		}
	}
}

// failAIO gives up a's context after err. io_destroy cancels what it can
// and waits for the rest, after which no request in flight touches guest
// memory any more: each then completes with IOERR (and no data). If
// io_destroy fails too, nothing says when the kernel is done with their
// buffers, so they are abandoned: never completed, their status never
// written. Either way nothing is left in flight, and the error breaks
// the queue (DEVICE_NEEDS_RESET, as a malformed ring does) until the
// driver resets the device, whose next Activate makes a new context.
// Logged once per failure; the guest log counts them (aio_failure).
func (b *Block) failAIO(bq *blkQueue, a *blkAIO, err error) error {
	n := a.inflight()
	derr := a.sys.destroy(a.ctx)
	a.dead = true
	if derr != nil {
		b.warn.Printf("aio_failure", "queue %d: Linux AIO failed (%v), and io_destroy (%v): %d requests in flight abandoned",
			bq.index, err, derr, n)
		for i := range a.slots {
			a.slots[i].chain, a.slots[i].d = nil, dataRequest{}
		}
		a.free, a.bytes = a.free[:0], 0
		for i := len(a.slots) - 1; i >= 0; i-- {
			a.free = append(a.free, i)
		}
		return fmt.Errorf("Linux AIO: %w (io_destroy: %v)", err, derr)
	}
	b.warn.Printf("aio_failure", "queue %d: Linux AIO failed (%v): %d requests in flight end with IOERR", bq.index, err, n)
	var errs []error
	for i := range a.slots {
		s := &a.slots[i]
		if s.chain == nil {
			continue
		}
		if s.d.write {
			b.stats.failed(opWrite)
		} else {
			b.stats.failed(opRead)
		}
		errs = append(errs, b.completeAIO(bq, a, i, blkSIOErr, 0))
	}
	return errors.Join(append(errs, fmt.Errorf("Linux AIO: %w", err))...)
}

// finishAIO completes slot i, whose AIO returned res: the bytes moved or
// a negative errno. A short transfer is finished by the ordinary path;
// one O_DIRECT refused (refusedDirect), through the page cache.
func (b *Block) finishAIO(bq *blkQueue, a *blkAIO, i int, res int64) error {
	s := &a.slots[i]
	var err error
	switch {
	case res == int64(s.d.n):
	case res >= 0 && res < int64(s.d.n):
		err = b.transfer(bq.q, advance(s.d.bufs, int(res)), s.d.off+res, s.d.write)
	case res < 0 && refusedDirect(unix.Errno(-res)):
		err = b.transferBy(b.viaPageCache, bq.q, s.d.bufs, s.d.off, s.d.write)
	case res < 0:
		err = unix.Errno(-res)
	default:
		err = fmt.Errorf("AIO moved %d bytes of %d", res, s.d.n)
	}
	status, written := b.finishData(s.d, err, s.start)
	return b.completeAIO(bq, a, i, status, written)
}

// completeAIO replies to slot i's request, returns it to the driver and
// frees the slot.
func (b *Block) completeAIO(bq *blkQueue, a *blkAIO, i int, status byte, written uint64) error {
	s := &a.slots[i]
	if status == blkSNoSpace {
		s.r.keep = true
	} else {
		reply(s.chain, status, written, &s.r)
	}
	err := b.complete(bq, s.chain, s.r, s.telStart, s.pop)
	a.bytes -= s.d.n
	s.chain, s.d = nil, dataRequest{}
	a.free = append(a.free, i)
	return err
}
