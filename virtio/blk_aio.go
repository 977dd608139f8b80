package virtio

import (
	"encoding/binary"
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

// blkAIO is one request queue's AIO context. The queue's one notifier
// uses it, one Notify at a time (the transport serializes them).
type blkAIO struct {
	ctx    uint64   // aio_context_t
	done   *os.File // eventfd the kernel signals per completion; non-blocking, so the netpoller waits on it
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
	a := &blkAIO{slots: make([]aioSlot, depth), events: make([]ioEvent, depth)}
	if err := ioSetup(depth, &a.ctx); err != nil {
		return nil, fmt.Errorf("io_setup: %w", err)
	}
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		ioDestroy(a.ctx)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	a.done, a.doneFd = os.NewFile(uintptr(fd), "virtio-blk-aio"), fd
	for i := depth - 1; i >= 0; i-- {
		a.free = append(a.free, i)
	}
	return a, nil
}

// Close releases the context; nothing may be in flight.
func (a *blkAIO) Close() error {
	err := ioDestroy(a.ctx)
	if cerr := a.done.Close(); err == nil {
		err = cerr
	}
	return err
}

func (a *blkAIO) inflight() int { return len(a.slots) - len(a.free) }

// prepare adds chain c to the batch if it is a read or write AIO can
// serve as it is, and reports whether it did. It looks at the request
// without a word to the guest log or the counters: what it declines, the
// ordinary path serves and judges.
func (b *Block) prepareAIO(a *blkAIO, c *Chain, telStart, popped int64) bool {
	if len(a.free) == 0 || c.WritableLen() == 0 || sizeProblem(c) != "" {
		return false
	}
	var hdr [blkHeaderLen]byte
	if c.Gather(hdr[:], 0) < blkHeaderLen {
		return false
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	write := typ == blkTOut
	if typ != blkTIn && !write || write && b.readOnly {
		return false
	}
	n := c.WritableLen() - 1
	if write {
		n = c.ReadableLen() - blkHeaderLen
	}
	if n > blkIOChunk || !b.inDisk(sector, n) || a.bytes+n > blkAIOMaxBytes {
		return false
	}
	d := dataRequest{write: write, sector: sector, off: int64(sector * SectorSize), n: n}
	if write {
		d.bufs = c.Buffers(false, blkHeaderLen, n)
	} else {
		d.bufs = c.Buffers(true, 0, n)
	}
	d.bufs = skipEmpty(d.bufs)
	if len(d.bufs) > iovMax || b.direct.path(d.bufs, d.off) != dioDirect {
		return false
	}
	i := a.free[len(a.free)-1]
	a.free = a.free[:len(a.free)-1]
	a.bytes += n
	s := &a.slots[i]
	*s = aioSlot{iov: s.iov[:0], chain: c, d: d, r: served{op: blkOpOf(typ), bytes: n}, start: time.Now(), telStart: telStart, pop: popped}
	for _, buf := range d.bufs {
		s.iov = append(s.iov, unix.Iovec{Base: &buf[0], Len: uint64(len(buf))})
	}
	s.cb = iocb{data: uint64(i), opcode: iocbCmdPreadv, fd: uint32(b.direct.fd), nbytes: uint64(len(s.iov)),
		offset: d.off, flags: iocbFlagResfd, resfd: uint32(a.doneFd)}
	if write {
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
func (b *Block) serveQueueAIO(bq *blkQueue, a *blkAIO) error {
	tel := bq.q.tel
	var errs []error
	record := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
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
			// The one request in flight runs here, as serveQueue runs its
			// last: a blocking read costs no wake-up through the netpoller.
			alone := a.inflight() == 0 && len(a.batch) == 0 && !bq.q.HasAvail(b.mem)
			if alone || !b.prepareAIO(a, c, start, popped) {
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
		n, err := ioSubmit(a.ctx, a.submit)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			// EAGAIN (no room in the kernel) or a refusal: serve the
			// rest synchronously, which reports real errors per request.
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
// that has one.
func (b *Block) reapAIO(bq *blkQueue, a *blkAIO) error {
	var buf [8]byte
	for {
		n, err := ioGetEvents(a.ctx, a.events[:a.inflight()])
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("io_getevents: %w", err)
		}
		if n > 0 {
			var errs []error
			for _, e := range a.events[:n] {
				errs = append(errs, b.finishAIO(bq, a, int(e.data), e.res))
			}
			return errors.Join(errs...)
		}
		// Nothing yet: sleep on the eventfd, in the netpoller.
		if _, err := a.done.Read(buf[:]); err != nil {
			return fmt.Errorf("AIO eventfd: %w", err)
		}
	}
}

// finishAIO completes slot i, whose AIO returned res: the bytes moved or
// a negative errno. A short transfer, or one O_DIRECT refused after all
// (EINVAL), is finished by the ordinary path.
func (b *Block) finishAIO(bq *blkQueue, a *blkAIO, i int, res int64) error {
	if i < 0 || i >= len(a.slots) {
		return fmt.Errorf("AIO completion for slot %d of %d", i, len(a.slots))
	}
	s := &a.slots[i]
	var err error
	switch {
	case res == int64(s.d.n):
	case res >= 0 || res == -int64(unix.EINVAL):
		done := max(res, 0)
		err = b.transfer(bq.q, advance(s.d.bufs, int(done)), s.d.off+done, s.d.write)
	default:
		err = unix.Errno(-res)
	}
	status, written := b.finishData(s.d, err, s.start)
	return b.completeAIO(bq, a, i, status, written)
}

// completeAIO replies to slot i's request, returns it to the driver and
// frees the slot.
func (b *Block) completeAIO(bq *blkQueue, a *blkAIO, i int, status byte, written uint64) error {
	s := &a.slots[i]
	reply(s.chain, status, written, &s.r)
	err := b.complete(bq, s.chain, s.r, s.telStart, s.pop)
	a.bytes -= s.d.n
	s.chain, s.d = nil, dataRequest{}
	a.free = append(a.free, i)
	return err
}
