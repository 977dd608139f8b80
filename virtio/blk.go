package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// SectorSize is the virtio-blk sector: capacity and request offsets
// count 512-byte units whatever the backing store's block size.
const SectorSize = 512

// virtio-blk feature bits (virtio 1.2, 5.2.3).
const (
	blkFSizeMax     = 1 << 1
	blkFSegMax      = 1 << 2
	blkFRO          = 1 << 5
	blkFBlkSize     = 1 << 6
	blkFFlush       = 1 << 9
	blkFMQ          = 1 << 12
	blkFDiscard     = 1 << 13
	blkFWriteZeroes = 1 << 14
)

// Request types and status values (5.2.6).
const (
	blkTIn    = 0
	blkTOut   = 1
	blkTFlush = 4
	blkTGetID = 8
	// DISCARD and WRITE_ZEROES carry segments of struct
	// virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors,
	// le32 flags (bit 0: the device may unmap, WRITE_ZEROES only).
	blkTDiscard     = 11
	blkTWriteZeroes = 13
	blkSegLen       = 16
	blkWZUnmap      = 1

	// blkSNoSpace is no status a driver ever sees: a write or flush
	// that failed for want of space on the host is kept by the device
	// and run again once the VM resumes (SetNoSpace).
	blkSNoSpace = 0xff
	blkSOK      = 0
	blkSIOErr   = 1
	blkSUnsupp  = 2
)

const (
	blkQueueSize = 256
	// BlockMaxQueues bounds num_queues: far above any vCPU count govmm
	// runs, far below what the transport's MSI-X table holds.
	BlockMaxQueues = 64
	// blkWorkers bounds the requests of one queue that run on goroutines
	// of their own beside the one the queue's notifier serves itself:
	// enough to overlap slow host I/O, few enough that a guest cannot
	// make us start many threads' worth of work per queue.
	blkWorkers = 4
	// blkSegMax leaves two descriptors of a queue-sized chain for the
	// request header and the status byte, as Linux expects. It is
	// enforced: a request of more descriptors than seg_max+2 fails.
	blkSegMax = blkQueueSize - 2
	// blkSizeMax is size_max, the largest descriptor a request may
	// have; with seg_max it bounds a request to about 254 MiB (QEMU's
	// bound is BDRV_REQUEST_MAX_BYTES, 2 GiB; Firecracker takes one data
	// descriptor, under 4 GiB). Linux merges pages into segments no
	// larger than this, so no request of its own comes near the bound.
	blkSizeMax = 1 << 20
	// blkIOChunk bounds one preadv or pwritev: between chunks the
	// device looks whether the transport aborted the queue, so a reset
	// or stop waits for one chunk of a request, never for all of it.
	blkIOChunk = 1 << 20
	// blkCachedMax bounds the reads tryCached serves on the queue's
	// loop: a larger copy (~10 us for 64 KiB) is worth a worker, so that
	// large reads copy in parallel and the loop goes on taking requests.
	blkCachedMax = 64 << 10
	blkHeaderLen = 16 // le32 type, le32 reserved, le64 sector
	blkIDLen     = 20 // VIRTIO_BLK_ID_BYTES
	// iovMax is Linux's IOV_MAX, the most buffers one preadv, or one
	// iocb of io_submit, takes. A request's data is one buffer per
	// descriptor (Chain.Buffers), and seg_max keeps that below it (the
	// compile-time check below), so the AIO path never has to split one.
	iovMax = 1024
	// The discard and write-zeroes limits advertised, and enforced:
	// segments of at most blkDiscardSectors (512 MiB), at most
	// blkDiscardSegs of them per request. Each segment is one fallocate
	// (metadata work, not data), with a stop check between them.
	blkDiscardSectors = 1 << 20
	blkDiscardSegs    = 16
)

// A request's data fits in one vector: this fails to compile otherwise.
const _ = uint(iovMax - blkSegMax)

// Block is a virtio-blk device backed by a raw image file, reading and
// writing guest memory directly with preadv/pwritev. Each request queue
// is served by its own notifier (Notify runs concurrently for different
// queues); within a queue, requests run concurrently too (serveQueue).
type Block struct {
	name string
	guestLog
	readOnly bool
	capacity uint64 // in sectors; a partial trailing sector is not exposed
	nq       int    // request queues offered (num_queues)
	// workers is blkWorkers; 0 serves each queue's requests one at a
	// time, in ring order (the fuzz target's model needs that order).
	workers int
	id      [blkIDLen]byte
	config  [64]byte

	// mu is held for reading by every Notify, and for writing by
	// Activate, Reset and Close, which so wait for the requests in
	// progress.
	mu     sync.RWMutex
	f      *os.File
	fd     int
	direct *directIO // cache=none: the O_DIRECT side (blk_direct.go); nil with the page cache
	// noNowait is set once the host refused a read with RWF_NOWAIT
	// (tryCached): every read then goes the blocking way.
	noNowait atomic.Bool
	// cachedReads counts the reads tryCached served.
	cachedReads atomic.Uint64
	aios        []*blkAIO // cache=none: each queue's AIO context (blk_aio.go)
	closed      bool
	// Set by Activate, cleared by Reset.
	mem      Memory
	features uint64
	queues   []*blkQueue // nil for a queue the driver did not enable
	irq      Interrupt

	errMu sync.Mutex
	err   error // the queue error that broke the device, until Reset

	stats blkCounters // lock-free: monitors read them while requests run

	// noSpace, when set (SetNoSpace), is told when a write is kept for
	// want of space; waitSpace says kept requests wait for Resume.
	noSpace   atomic.Pointer[func(err error)]
	waitSpace atomic.Bool
	// syncFailed holds the error every flush gets once an fdatasync of
	// the image has failed (sync); nil before.
	syncFailed atomic.Pointer[error]
}

// SetNoSpace makes the disk keep a write or flush that fails for want of
// space on the host (ENOSPC, EDQUOT) instead of failing it, and call
// stop, once until Resume, so the VM can be stopped: kept requests run
// again, in the order they failed, once Resume is called (QEMU's
// werror=enospc, its default). The guest sees no error and its file
// system loses nothing while the host's owner makes room; without it a
// full host disk failed the guest's writes (an audit: "lost async page
// write" in the guest). stop runs on a device goroutine and must not
// wait for the device.
func (b *Block) SetNoSpace(stop func(err error)) { b.noSpace.Store(&stop) }

// WaitsForSpace reports whether the disk keeps writes for want of space
// and waits for Resume (QMP's io-status "nospace").
func (b *Block) WaitsForSpace() bool { return b.waitSpace.Load() }

// Resume implements resumer: requests kept for want of space run again
// at the queues' next service (the transport kicks every ready queue).
func (b *Block) Resume() { b.waitSpace.Store(false) }

// keptRequest is a request kept for want of space, with its telemetry
// times.
type keptRequest struct {
	c             *Chain
	start, popped int64
}

// blkQueue is one request queue of an active device.
type blkQueue struct {
	index int
	q     *Queue
	aio   *blkAIO // nil: requests run on goroutines (serveQueue)
	// pushMu serializes completions (Push, the interrupt decision and
	// the telemetry), which the queue's workers make concurrently.
	pushMu sync.Mutex
	// unsignalled counts the requests pushed since the last interrupt
	// decision; pushMu guards it.
	unsignalled int
	// kept are the requests waiting for space, in the order they
	// failed; pushMu guards it.
	kept []keptRequest
}

// BlockConfig describes a virtio-blk disk.
type BlockConfig struct {
	Path     string // raw image file or block device
	ReadOnly bool   // open read-only and tell the guest (VIRTIO_BLK_F_RO)
	// Queues is the number of request queues offered (VIRTIO_BLK_F_MQ
	// when more than one), 1 to BlockMaxQueues; 0 means 1.
	Queues int
	// Direct serves the guest's reads and writes with O_DIRECT, around
	// the host's page cache (QEMU's cache=none); FLUSH still syncs.
	// Requests O_DIRECT cannot take as they are still succeed
	// (blk_direct.go).
	Direct bool
}

// NewBlock opens the raw disk image at path (a file or a block device)
// as a disk with one request queue. With readOnly the file is opened
// read-only and the guest is told so (VIRTIO_BLK_F_RO); writes then
// fail with an I/O error.
func NewBlock(path string, readOnly bool) (*Block, error) {
	return OpenBlock(BlockConfig{Path: path, ReadOnly: readOnly})
}

// OpenBlock opens the disk c describes.
func OpenBlock(c BlockConfig) (*Block, error) {
	nq := max(c.Queues, 1)
	if nq > BlockMaxQueues {
		return nil, fmt.Errorf("virtio-blk %s: %d queues, at most %d", c.Path, c.Queues, BlockMaxQueues)
	}
	f, size, err := openImage(c.Path, c.ReadOnly) // image.go
	if err != nil {
		return nil, err
	}
	var direct *directIO
	var aios []*blkAIO
	if c.Direct {
		if direct, err = openDirect(f, c.ReadOnly); err != nil {
			f.Close()
			return nil, fmt.Errorf("virtio-blk %s: %w", c.Path, err)
		}
		for range nq {
			a, err := newBlkAIO(blkQueueSize)
			if err != nil {
				for _, a := range aios {
					a.Close()
				}
				direct.Close()
				f.Close()
				return nil, fmt.Errorf("virtio-blk %s: cache=none: Linux AIO (fs.aio-max-nr?): %w", c.Path, err)
			}
			aios = append(aios, a)
		}
	}
	b := &Block{
		name:     "virtio-blk",
		readOnly: c.ReadOnly,
		capacity: uint64(size) / SectorSize,
		nq:       nq,
		workers:  blkWorkers,
		f:        f,
		fd:       int(f.Fd()), // not pollable: Fd does not change its mode
		direct:   direct,
		aios:     aios,
	}
	b.guestLog = newGuestLog("virtio-blk " + c.Path)
	binary.LittleEndian.PutUint64(b.config[0:], b.capacity)
	binary.LittleEndian.PutUint32(b.config[8:], blkSizeMax)
	binary.LittleEndian.PutUint32(b.config[12:], blkSegMax)
	binary.LittleEndian.PutUint32(b.config[20:], SectorSize)
	binary.LittleEndian.PutUint16(b.config[34:], uint16(nq))
	if !c.ReadOnly {
		binary.LittleEndian.PutUint32(b.config[36:], blkDiscardSectors) // max_discard_sectors
		binary.LittleEndian.PutUint32(b.config[40:], blkDiscardSegs)    // max_discard_seg
		binary.LittleEndian.PutUint32(b.config[44:], 1)                 // discard_sector_alignment
		binary.LittleEndian.PutUint32(b.config[48:], blkDiscardSectors) // max_write_zeroes_sectors
		binary.LittleEndian.PutUint32(b.config[52:], blkDiscardSegs)    // max_write_zeroes_seg
		b.config[56] = 1                                                // write_zeroes_may_unmap
	}
	// The serial the guest sees (/sys/block/vda/serial): the file name,
	// which is what tells disks apart in a VM's config.
	copy(b.id[:], filepath.Base(c.Path))
	return b, nil
}

// Queues is the number of request queues the disk offers.
func (b *Block) Queues() int { return b.nq }

// Capacity is the disk size in 512-byte sectors.
func (b *Block) Capacity() uint64 { return b.capacity }

// ID is the 20-byte serial GET_ID returns: the image's file name,
// truncated, NUL-padded.
func (b *Block) ID() [blkIDLen]byte { return b.id }

// Name implements Device.
func (b *Block) Name() string { return b.name }

// Type implements Device.
func (b *Block) Type() uint16 { return IDBlock }

// Features implements Device. FLUSH makes the guest's write cache
// explicit: writes land in the host page cache and reach the disk on
// FLUSH, as the guest's fsync demands.
func (b *Block) Features() uint64 {
	f := uint64(RingFeatures | blkFSizeMax | blkFSegMax | blkFBlkSize | blkFFlush)
	if b.readOnly {
		f |= blkFRO
	} else {
		// fstrim and mkfs in the guest give the space back to the host.
		f |= blkFDiscard | blkFWriteZeroes
	}
	if b.nq > 1 {
		f |= blkFMQ
	}
	return f
}

// QueueSizes implements Device: the request queues.
func (b *Block) QueueSizes() []uint16 {
	sizes := make([]uint16, b.nq)
	for i := range sizes {
		sizes[i] = blkQueueSize
	}
	return sizes
}

// ReadConfig implements Device: struct virtio_blk_config (5.2.4).
func (b *Block) ReadConfig(offset uint64, data []byte) { readConfig(b.config[:], offset, data) }

// WriteConfig implements Device. Nothing is writable: the writeback
// field needs VIRTIO_BLK_F_CONFIG_WCE, which is not offered.
func (b *Block) WriteConfig(offset uint64, data []byte) {}

// Activate implements Device. Queue 0 must be enabled; a driver may
// leave later ones disabled (Linux uses one per vCPU at most).
func (b *Block) Activate(mem Memory, features uint64, queues []*Queue, irq Interrupt) error {
	if len(queues) < 1 || queues[0] == nil {
		return errors.New("virtio-blk: request queue not enabled")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("virtio-blk: device closed")
	}
	b.queues = make([]*blkQueue, len(queues))
	for i, q := range queues {
		if q != nil {
			b.queues[i] = &blkQueue{index: i, q: q}
			if i < len(b.aios) {
				b.queues[i].aio = b.renewAIO(i)
			}
		}
	}
	b.mem, b.features, b.irq = mem, features, irq
	b.setErr(nil)
	return nil
}

// renewAIO returns queue i's AIO context, a new one in place of one
// that failed (failAIO); mu must be held for writing. Where no new one
// can be made, the queue is served without AIO (nil).
func (b *Block) renewAIO(i int) *blkAIO {
	if a := b.aios[i]; a == nil || !a.dead {
		return a
	}
	b.aios[i].Close()
	a, err := newBlkAIO(blkQueueSize)
	if err != nil {
		b.warn.Printf("aio_failure", "queue %d: new Linux AIO context: %v; the queue goes without", i, err)
	}
	b.aios[i] = a
	return a
}

// Reset implements Device. It waits for the requests in progress.
func (b *Block) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mem, b.features, b.queues, b.irq = nil, 0, nil, nil // kept requests too
	b.waitSpace.Store(false)
	b.setErr(nil)
}

// setErr records the error that broke the device (the first one), or
// clears it with nil.
func (b *Block) setErr(err error) {
	b.errMu.Lock()
	defer b.errMu.Unlock()
	if err == nil || b.err == nil {
		b.err = err
	}
}

func (b *Block) broken() error {
	b.errMu.Lock()
	defer b.errMu.Unlock()
	return b.err
}

// Close flushes the image to stable storage and closes it; the device
// must not be used afterwards.
func (b *Block) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.queues = nil
	var err error
	// AIO cannot be cancelled: closing a context waits for its writes,
	// which the sync below must then cover.
	for _, a := range b.aios {
		if a == nil {
			continue
		}
		if cerr := a.Close(); err == nil {
			err = cerr
		}
	}
	if !b.readOnly {
		if serr := b.f.Sync(); err == nil {
			err = serr
		}
		if failed := b.syncFailed.Load(); failed != nil && err == nil {
			err = *failed // this sync found nothing left to fail on
		}
	}
	if b.direct != nil {
		if cerr := b.direct.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("virtio-blk: close disk image: %w", err)
	}
	return nil
}

// Notify implements Device: it serves every available request of queue.
// Queues are served concurrently, each by its own notifier.
func (b *Block) Notify(queue int) error {
	if queue < 0 || queue >= b.nq {
		return fmt.Errorf("virtio-blk: notify for queue %d, device has %d", queue, b.nq)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if queue >= len(b.queues) || b.queues[queue] == nil {
		// Not active (a notification that raced a reset), or a queue the
		// driver did not enable.
		return nil
	}
	bq := b.queues[queue]
	if err := b.broken(); err != nil {
		return err
	}
	serve := b.serveQueue
	if bq.aio != nil {
		serve = func(bq *blkQueue) error { return b.serveQueueAIO(bq, bq.aio) }
	}
	if err := serve(bq); err != nil {
		b.setErr(fmt.Errorf("virtio-blk: queue %d: %w", queue, err))
	}
	return b.broken()
}

// Kinds of request, for telemetry (RequestOps).
const (
	blkOpRead Op = iota
	blkOpWrite
	blkOpFlush
	blkOpGetID
	blkOpUnsupported // a type the device does not implement
	blkOpBad         // no header or no status byte
	blkOpDiscard
)

var blkOps = []string{"read", "write", "flush", "get_id", "unsupported", "bad", "discard"}

// RequestOps implements requestOps: the request types, plus requests
// too malformed to have one.
func (b *Block) RequestOps(queue int) []string { return blkOps }

// blkOpOf is the telemetry kind of request type typ.
func blkOpOf(typ uint32) Op {
	switch typ {
	case blkTIn:
		return blkOpRead
	case blkTOut, blkTWriteZeroes:
		// WRITE_ZEROES is a write, as the disk's counters (and QEMU's)
		// count it, so that the two agree.
		return blkOpWrite
	case blkTFlush:
		return blkOpFlush
	case blkTGetID:
		return blkOpGetID
	case blkTDiscard:
		return blkOpDiscard
	}
	return blkOpUnsupported
}

// serveQueue serves every request available on bq and returns once each
// has completed. A request runs on the calling goroutine when it is the
// last one available; otherwise it gets a goroutine of its own, once
// fewer than b.workers run. So one request in flight costs no hand-off
// between threads, and many overlap their host I/O. While others wait
// behind a request the loop waits for a worker rather than serving it
// itself: blocked in that request's I/O, it could not hand the next one
// to a worker that finished (at depth a read then waited three times its
// I/O to be taken; README, Storage). A read whose data the host's page
// cache holds is served on the loop instead, without blocking (tryCached):
// at depth, handing such reads to workers cost more than the copy.
// Requests go to the used ring in the order they finish, which the ring
// allows; the interrupt for them goes out when the ring runs empty (after
// each worker that finishes while the loop waits), and after every
// queue-size batch, so a driver that keeps the queue full still sees
// completions.
//
// The loop ends when Pop finds nothing, which includes a queue the
// transport holds or aborted: that is how a stop, reset or BAR move wins
// over a driver that keeps the queue full, and an aborted request (a
// transfer gives up between chunks) is abandoned, not completed. An
// error is a broken queue or a failed interrupt.
func (b *Block) serveQueue(bq *blkQueue) error {
	tel := bq.q.tel
	done := make(chan error, b.workers)
	var errs []error
	record := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	record(b.retryKept(bq))
	inflight := 0
	wait := func() {
		record(<-done)
		inflight--
	}
	for len(errs) == 0 {
		c, err := bq.q.Pop(b.mem)
		if err != nil {
			record(err)
			break
		}
		if c == nil {
			record(b.signal(bq))
			if inflight == 0 {
				break
			}
			wait() // and look again: the driver may have added more
			continue
		}
		start, popped := tel.popStart(), tel.now()
		if b.workers > 0 && bq.q.HasAvail(b.mem) {
			if ok, err := b.tryCached(bq, c, start, popped); ok {
				record(err)
				continue
			}
			if inflight == b.workers {
				wait()
			}
			inflight++
			go func() { done <- b.complete(bq, c, b.handle(bq.q, c), start, popped) }()
			continue
		}
		record(b.complete(bq, c, b.handle(bq.q, c), start, popped))
	}
	for inflight > 0 {
		wait()
	}
	// Requests completed before an error still get their interrupt.
	record(b.signal(bq))
	return errors.Join(errs...)
}

// tryCached serves c on the calling goroutine if it is a read whose data
// the host's page cache holds, and reports whether it did; if not,
// nothing was done but the guest's buffers may hold part of the data,
// which serving c the ordinary way overwrites. preadv2 with RWF_NOWAIT
// copies what is cached and never waits for the disk. A 4 KiB read from
// the page cache takes a few microseconds, less than waking a worker's
// thread, and a read that keeps its Go processor through the call holds
// one of the few the workers share (Go hands a processor on only after
// ~20 us in a system call): at depth 32, reads served by workers ran at
// 0.6x QEMU's thread pool (README, Storage).
func (b *Block) tryCached(bq *blkQueue, c *Chain, start, popped int64) (bool, error) {
	if b.direct != nil || b.noNowait.Load() || bq.q.aborted() {
		return false, nil
	}
	// Only reads: look at the type before parse builds a write's buffer
	// list, which the worker then builds again.
	var typ [4]byte
	w := c.WritableLen()
	if w == 0 || c.Gather(typ[:], 0) < len(typ) || binary.LittleEndian.Uint32(typ[:]) != blkTIn {
		return false, nil
	}
	p := b.parse(c, w-1)
	if p.fault != blkFine || p.typ != blkTIn || p.d.n > blkCachedMax || len(p.d.bufs) > iovMax {
		return false, nil
	}
	at := time.Now()
	n, err := unix.Preadv2(b.fd, p.d.bufs, p.d.off, unix.RWF_NOWAIT)
	if err == unix.EOPNOTSUPP || err == unix.EINVAL || err == unix.ENOSYS {
		b.noNowait.Store(true) // this host or file system cannot
	}
	if err != nil || uint64(n) != p.d.n {
		return false, nil
	}
	b.cachedReads.Add(1)
	r := served{op: blkOpRead, bytes: p.d.n}
	status, data := b.finishData(p.d, nil, at)
	reply(c, status, data, &r)
	return true, b.complete(bq, c, r, start, popped)
}

// complete returns chain c, served as r, to the driver; a request the
// transport aborted is abandoned instead. start and popped time it for
// telemetry, which the push lock serializes as it does the ring.
func (b *Block) complete(bq *blkQueue, c *Chain, r served, start, popped int64) error {
	bq.pushMu.Lock()
	defer bq.pushMu.Unlock()
	if bq.q.aborted() {
		return nil
	}
	if r.keep {
		bq.kept = append(bq.kept, keptRequest{c, start, popped})
		return nil
	}
	tel := bq.q.tel
	done := tel.now()
	if err := bq.q.Push(b.mem, c.Head, r.written); err != nil {
		return err
	}
	tel.pushed(r.op, r.bytes, start, popped, done)
	if bq.unsignalled++; bq.unsignalled >= int(bq.q.Size()) {
		return b.signalLocked(bq)
	}
	return nil
}

// signal raises the queue's interrupt for the requests pushed since the
// last one, if the driver wants it now.
func (b *Block) signal(bq *blkQueue) error {
	bq.pushMu.Lock()
	defer bq.pushMu.Unlock()
	return b.signalLocked(bq)
}

// signalLocked is signal with pushMu held.
func (b *Block) signalLocked(bq *blkQueue) error {
	if bq.unsignalled == 0 {
		return nil
	}
	bq.unsignalled = 0
	var err error
	if bq.q.NeedsInterrupt(b.mem, b.features) {
		err = b.irq.Queue(bq.index)
	}
	tel := bq.q.tel
	tel.interrupted(tel.now())
	if err != nil {
		return fmt.Errorf("interrupt: %w", err)
	}
	return nil
}

// handle serves one request from q and reports the number of bytes it
// wrote into the chain, status byte included, and what telemetry wants
// to know. A malformed request is the guest's problem, not the device's:
// it gets IOERR if it has a status byte, and nothing otherwise.
func (b *Block) handle(q *Queue, c *Chain) served {
	r := served{op: blkOpBad}
	w := c.WritableLen()
	if w == 0 {
		b.warn.Printf("bad_request", "request %d has no status byte, dropped", c.Head)
		return r
	}
	// The status byte is the last writable byte; data comes before it.
	status, n := b.request(q, c, w-1, &r)
	if status == blkSNoSpace {
		r.keep = true
		return r
	}
	reply(c, status, n, &r)
	return r
}

// keepsForSpace reports whether a write or flush that failed with err is
// kept to run again (SetNoSpace) rather than failed, and if so asks for
// the VM to stop, once until Resume.
func (b *Block) keepsForSpace(err error) bool {
	stop := b.noSpace.Load()
	if stop == nil || !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EDQUOT) {
		return false
	}
	if b.waitSpace.CompareAndSwap(false, true) {
		b.warn.Printf("no_space", "%v: requests kept until the VM resumes", err)
		(*stop)(err)
	}
	return true
}

// retryKept serves again the requests kept for want of space, unless
// they still wait for Resume or the queue is held.
func (b *Block) retryKept(bq *blkQueue) error {
	if b.waitSpace.Load() || bq.q.halt.Load() != haltNone {
		return nil
	}
	bq.pushMu.Lock()
	kept := bq.kept
	bq.kept = nil
	bq.pushMu.Unlock()
	var errs []error
	for _, k := range kept {
		errs = append(errs, b.complete(bq, k.c, b.handle(bq.q, k.c), k.start, k.popped))
	}
	return errors.Join(errs...)
}

// reply writes status into c's last writable byte, after the n data
// bytes the request wrote, and records the used length in r.
func reply(c *Chain, status byte, n uint64, r *served) {
	c.Scatter([]byte{status}, c.WritableLen()-1)
	r.written = uint32(min(n+1, math.MaxUint32))
}

// sizeProblem enforces the seg_max and size_max the device advertises,
// which bound the memory one request covers and so the work it makes:
// it says how c breaks them; "" if it does not.
func sizeProblem(c *Chain) string {
	if len(c.Descs) > blkSegMax+2 {
		return fmt.Sprintf("%d descriptors, seg_max %d allows %d", len(c.Descs), blkSegMax, blkSegMax+2)
	}
	for _, d := range c.Descs {
		if d.Len > blkSizeMax {
			return fmt.Sprintf("%d-byte descriptor, size_max %d", d.Len, blkSizeMax)
		}
	}
	return ""
}

// blkRequest is a request read from its chain and checked, once, by the
// one parser both ways of serving it share: request serves it, and
// prepareAIO (blk_aio.go) hands the reads and writes it can take to
// Linux AIO. Why a request cannot be served is in fault and why; parse
// says nothing to the guest log or the counters, since what prepareAIO
// declines the ordinary path serves and judges.
type blkRequest struct {
	typ    uint32
	sector uint64
	fault  blkFault
	why    string      // what is wrong, for the guest log
	d      dataRequest // a read's or write's transfer, checked (fault blkFine)
}

// blkFault is what parse found wrong with a request.
type blkFault int

const (
	blkFine     blkFault = iota
	blkNoHeader          // shorter than its header
	blkTooLarge          // breaks seg_max or size_max
	blkReadOnly          // a write to a read-only disk
	blkOutside           // not whole sectors inside the disk
)

// parse reads and checks the request in c, whose writable part has
// dataLen data bytes before the status byte. The header is copied out of
// guest memory before it is looked at: the guest may change it under us.
func (b *Block) parse(c *Chain, dataLen uint64) blkRequest {
	var hdr [blkHeaderLen]byte
	if c.Gather(hdr[:], 0) < blkHeaderLen {
		return blkRequest{fault: blkNoHeader, why: fmt.Sprintf("header shorter than %d bytes", blkHeaderLen)}
	}
	p := blkRequest{typ: binary.LittleEndian.Uint32(hdr[0:]), sector: binary.LittleEndian.Uint64(hdr[8:])}
	if p.why = sizeProblem(c); p.why != "" {
		p.fault = blkTooLarge
		return p
	}
	write := p.typ == blkTOut
	if p.typ != blkTIn && !write {
		return p
	}
	p.d = dataRequest{write: write, sector: p.sector, n: dataLen}
	if write {
		if b.readOnly {
			p.fault = blkReadOnly
			return p
		}
		p.d.n = c.ReadableLen() - blkHeaderLen
	}
	if !b.inDisk(p.sector, p.d.n) {
		p.fault, p.why = blkOutside, b.outsideMsg(p.sector, p.d.n)
		return p
	}
	p.d.off = int64(p.sector * SectorSize)
	if write {
		p.d.bufs = c.Buffers(false, blkHeaderLen, p.d.n)
	} else {
		p.d.bufs = c.Buffers(true, 0, p.d.n)
	}
	return p
}

// request performs the request in c whose writable data part is dataLen
// bytes from q, and returns its status and the data bytes it wrote; it
// puts the request's kind and the data it moved in r, for telemetry.
func (b *Block) request(q *Queue, c *Chain, dataLen uint64, r *served) (status byte, written uint64) {
	p := b.parse(c, dataLen)
	if p.fault == blkNoHeader {
		b.warn.Printf("bad_request", "request %d: %s", c.Head, p.why)
		return blkSIOErr, 0
	}
	r.op = blkOpOf(p.typ)
	start := time.Now()
	if p.fault == blkTooLarge {
		b.warn.Printf("request_size", "request %d: %s", c.Head, p.why)
		switch p.typ {
		case blkTIn:
			b.stats.invalid(opRead)
		case blkTOut:
			b.stats.invalid(opWrite)
		}
		return blkSIOErr, 0
	}

	switch p.typ {
	case blkTIn, blkTOut:
		op := opRead
		if p.d.write {
			op = opWrite
		}
		switch p.fault {
		case blkReadOnly:
			b.stats.failed(op)
			return blkSIOErr, 0
		case blkOutside:
			r.bytes = p.d.n
			b.warn.Printf("bad_request", "%s", p.why)
			b.stats.invalid(op)
			return blkSIOErr, 0
		}
		r.bytes = p.d.n
		return b.finishData(p.d, b.transfer(q, p.d.bufs, p.d.off, p.d.write), start)
	case blkTFlush:
		if err := b.sync(); err != nil {
			if b.keepsForSpace(err) {
				return blkSNoSpace, 0
			}
			b.stats.failed(opFlush)
			return blkSIOErr, 0
		}
		b.stats.done(opFlush, 0, start)
		return blkSOK, 0
	case blkTGetID:
		r.bytes = uint64(c.Scatter(b.id[:min(dataLen, blkIDLen)], 0))
		return blkSOK, r.bytes
	case blkTDiscard, blkTWriteZeroes:
		return b.discard(q, c, p.typ == blkTWriteZeroes, start, r), 0
	}
	return blkSUnsupp, 0
}

// discard serves DISCARD (punch the segments' ranges out of the image,
// giving the space back to the host) and, with zero, WRITE_ZEROES (make
// them read as zeroes: punched out when the driver allows unmapping,
// zeroed in place otherwise). Every segment is checked before any is
// acted on, so a bad one fails the request and changes nothing.
func (b *Block) discard(q *Queue, c *Chain, zero bool, start time.Time, r *served) byte {
	feature, op := uint64(blkFDiscard), opDiscard
	if zero {
		feature, op = blkFWriteZeroes, opWrite
	}
	if b.features&feature == 0 {
		return blkSUnsupp // a driver that did not negotiate it
	}
	if b.readOnly {
		b.stats.failed(op)
		return blkSIOErr
	}
	n := c.ReadableLen() - blkHeaderLen
	if n == 0 || n%blkSegLen != 0 || n/blkSegLen > blkDiscardSegs {
		b.warn.Printf("bad_request", "request %d: %d bytes of discard/write-zeroes segments, want 1-%d of %d bytes",
			c.Head, n, blkDiscardSegs, blkSegLen)
		b.stats.invalid(op)
		return blkSIOErr
	}
	// Copied out of guest memory once: the guest may change it under us.
	segs := make([]byte, n)
	c.Gather(segs, blkHeaderLen)
	var total uint64
	for seg := segs; len(seg) > 0; seg = seg[blkSegLen:] {
		sector := binary.LittleEndian.Uint64(seg[0:])
		count := uint64(binary.LittleEndian.Uint32(seg[8:]))
		flags := binary.LittleEndian.Uint32(seg[12:])
		if flags&^blkWZUnmap != 0 || (!zero && flags != 0) {
			// Unknown flags, or unmap on a discard (5.2.6.2).
			return blkSUnsupp
		}
		if count > blkDiscardSectors {
			b.warn.Printf("bad_request", "request %d: segment of %d sectors, limit %d", c.Head, count, blkDiscardSectors)
			b.stats.invalid(op)
			return blkSIOErr
		}
		if _, ok := b.span(sector, count*SectorSize); !ok {
			b.stats.invalid(op)
			return blkSIOErr
		}
		total += count * SectorSize
	}
	r.bytes = total
	var highest uint64
	for seg := segs; len(seg) > 0; seg = seg[blkSegLen:] {
		off := binary.LittleEndian.Uint64(seg[0:]) * SectorSize
		length := uint64(binary.LittleEndian.Uint32(seg[8:])) * SectorSize
		unmap := !zero || binary.LittleEndian.Uint32(seg[12:])&blkWZUnmap != 0
		if err := b.deallocate(q, int64(off), int64(length), zero, unmap); err != nil {
			if zero && b.keepsForSpace(err) { // zeroes in place take space
				return blkSNoSpace
			}
			b.ioFailed("discard/write-zeroes", off/SectorSize, length, err)
			b.stats.failed(op)
			return blkSIOErr
		}
		highest = max(highest, off+length)
	}
	if zero {
		if b.features&blkFFlush == 0 {
			if err := b.sync(); err != nil { // write-through, as for writes
				if b.keepsForSpace(err) {
					return blkSNoSpace
				}
				b.stats.failed(op)
				return blkSIOErr
			}
		}
		b.stats.wrote(highest)
	}
	b.stats.done(op, total, start)
	return blkSOK
}

// deallocate gives [off, off+n) of the image back to the host (unmap)
// or zeroes it in place. Where the host cannot punch holes a discard,
// which is only a hint, does nothing, and zeroes are written instead;
// where it cannot zero a range in place either, they are written with
// pwritev, a chunk at a time with a stop check between.
func (b *Block) deallocate(q *Queue, off, n int64, zero, unmap bool) error {
	modes := []uint32{unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE}
	if unmap {
		modes = append([]uint32{unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE}, modes...)
	}
	if !zero {
		modes = modes[:1] // the punch alone
	}
	for _, mode := range modes {
		err := unix.Fallocate(b.fd, mode, off, n)
		for err == unix.EINTR {
			err = unix.Fallocate(b.fd, mode, off, n)
		}
		if err != unix.EOPNOTSUPP {
			return err
		}
	}
	if !zero {
		return nil
	}
	for n > 0 {
		k := min(n, int64(len(zeroChunk)))
		if err := b.transfer(q, [][]byte{zeroChunk[:k]}, off, true); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// zeroChunk is what WRITE_ZEROES writes where the host cannot zero a
// range in place. Never written to, so its pages are never resident; an
// array rather than a make, so that it lies in the binary's zeroed data
// and not in the Go heap, where it counted as 1 MiB of live heap and
// brought the first GC forward into start-up (0.5 MiB more RSS at the
// end of a boot; README, VMM overhead).
var zeroChunk [blkIOChunk]byte

// span checks that n bytes at sector are whole sectors inside the disk,
// at least one, and returns their byte offset.
func (b *Block) span(sector, n uint64) (int64, bool) {
	if !b.inDisk(sector, n) {
		b.warn.Printf("bad_request", "%s", b.outsideMsg(sector, n))
		return 0, false
	}
	return int64(sector * SectorSize), true
}

func (b *Block) outsideMsg(sector, n uint64) string {
	return fmt.Sprintf("request for %d bytes at sector %d outside disk of %d sectors (or not whole sectors)", n, sector, b.capacity)
}

// inDisk is span's check, without a word to the guest log.
func (b *Block) inDisk(sector, n uint64) bool {
	return n != 0 && n%SectorSize == 0 && sector <= b.capacity && n/SectorSize <= b.capacity-sector
}

// dataRequest is a read (IN) or write (OUT) checked against the disk.
type dataRequest struct {
	write  bool
	sector uint64
	off    int64    // byte offset in the image
	n      uint64   // bytes to move
	bufs   [][]byte // the guest's data buffers, n bytes
}

// finishData accounts for d, whose transfer (from start) ended with err,
// and returns its status and the data bytes it wrote into the chain.
func (b *Block) finishData(d dataRequest, err error, start time.Time) (status byte, written uint64) {
	op, what := opRead, "read"
	if d.write {
		op, what = opWrite, "write"
	}
	if err != nil {
		if d.write && b.keepsForSpace(err) {
			return blkSNoSpace, 0
		}
		b.ioFailed(what, d.sector, d.n, err)
		b.stats.failed(op)
		return blkSIOErr, 0
	}
	if !d.write {
		b.stats.done(opRead, d.n, start)
		return blkSOK, d.n
	}
	if b.features&blkFFlush == 0 {
		// A driver that did not take FLUSH expects a write-through disk
		// (5.2.6.2): make each write durable before it completes.
		if err := b.sync(); err != nil {
			if b.keepsForSpace(err) {
				return blkSNoSpace, 0
			}
			b.stats.failed(opWrite)
			return blkSIOErr, 0
		}
	}
	b.stats.done(opWrite, d.n, start)
	b.stats.wrote(uint64(d.off) + d.n)
	return blkSOK, 0
}

// sync makes what was written to the image durable. Once fdatasync has
// failed, every later sync fails without trying, for as long as the image
// is open: Linux marks the pages whose writeback failed clean, so the
// next fdatasync succeeds though their data never reached the disk, and a
// guest that retried its flush was told its data was safe (found by an
// audit). QEMU's file driver does the same (page_cache_inconsistent). The
// error it then returns is no ENOSPC, so a flush kept for want of space
// and retried after cont fails rather than stopping the VM again.
func (b *Block) sync() error {
	if b.readOnly {
		return nil // nothing of ours to flush
	}
	if err := b.syncFailed.Load(); err != nil {
		b.warn.Printf("host_io", "%v", *err)
		return *err
	}
	if err := unix.Fdatasync(b.fd); err != nil {
		b.warn.Printf("host_io", "fdatasync: %v", err)
		latched := fmt.Errorf("an fdatasync of the image failed (%v): what was written before it may not be on disk, and every flush fails until govmm opens the image again", err)
		b.syncFailed.CompareAndSwap(nil, &latched)
		return err
	}
	return nil
}

// errAborted ends a transfer the transport aborted.
var errAborted = errors.New("aborted by a device reset or stop")

// transfer reads the image at off into bufs, or writes bufs there, in
// calls of at most blkIOChunk bytes, and gives up between them once q is
// aborted. EOF before the end is an error, since the range was checked
// against the disk size.
func (b *Block) transfer(q *Queue, bufs [][]byte, off int64, write bool) error {
	return b.transferBy(b.rw, q, bufs, off, write) // blk_direct.go
}

// transferBy is transfer with each call made by rw.
func (b *Block) transferBy(rw func(iov [][]byte, off int64, write bool) (int, error), q *Queue, bufs [][]byte, off int64, write bool) error {
	for bufs = skipEmpty(bufs); len(bufs) > 0; bufs = skipEmpty(bufs) {
		if q.aborted() {
			return errAborted
		}
		n, err := rw(firstBytes(bufs, blkIOChunk), off, write)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n == 0 && write:
			return io.ErrShortWrite
		case n == 0:
			return io.ErrUnexpectedEOF
		}
		off += int64(n)
		bufs = advance(bufs, n)
	}
	return nil
}

func (b *Block) ioFailed(op string, sector, n uint64, err error) {
	if !errors.Is(err, errAborted) {
		b.warn.Printf("host_io", "%s sector %d+%d: %v", op, sector, n/SectorSize, err)
	}
}

// firstBytes returns the first n bytes of bufs as a vector of at most
// iovMax buffers (Linux's limit for one call), for one syscall: bufs
// itself when it fits, which is every request of Linux's own.
func firstBytes(bufs [][]byte, n int) [][]byte {
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	if total <= n && len(bufs) <= iovMax {
		return bufs
	}
	iov := make([][]byte, 0, min(len(bufs), iovMax))
	for _, b := range bufs {
		if n == 0 || len(iov) == iovMax {
			break
		}
		b = b[:min(len(b), n)]
		iov = append(iov, b)
		n -= len(b)
	}
	return iov
}

// skipEmpty drops leading empty buffers, so that a zero transfer means
// end of file rather than nothing asked.
func skipEmpty(bufs [][]byte) [][]byte {
	for len(bufs) > 0 && len(bufs[0]) == 0 {
		bufs = bufs[1:]
	}
	return bufs
}

// advance drops the first n bytes of bufs.
func advance(bufs [][]byte, n int) [][]byte {
	for n > 0 && len(bufs) > 0 {
		if n < len(bufs[0]) {
			bufs[0] = bufs[0][n:]
			return bufs
		}
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	return bufs
}

// readConfig copies config space from offset into data; bytes beyond
// the structure read as zero.
func readConfig(config []byte, offset uint64, data []byte) {
	clear(data)
	if offset < uint64(len(config)) {
		copy(data, config[offset:])
	}
}
