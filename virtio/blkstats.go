package virtio

import (
	"sync/atomic"
	"time"
)

// BlockStats are a disk's request counters since it was opened, in the
// terms of QEMU's query-blockstats: completed requests with their bytes
// and total service time, requests the host failed (an I/O error, a write
// to a read-only disk) and requests the guest got wrong (outside the
// disk, or not whole sectors). GET_ID and unsupported requests are not
// block I/O and are not counted, as in QEMU. DISCARD counts as unmap,
// WRITE_ZEROES as a write, as QEMU counts them.
type BlockStats struct {
	ReadBytes, WriteBytes, UnmapBytes                             uint64
	ReadOps, WriteOps, FlushOps, UnmapOps                         uint64
	ReadTimeNs, WriteTimeNs, FlushTimeNs, UnmapTimeNs             uint64 // service time of completed requests
	FailedReadOps, FailedWriteOps, FailedFlushOps, FailedUnmapOps uint64
	InvalidReadOps, InvalidWriteOps, InvalidUnmapOps              uint64
	WriteHighestOffset                                            uint64 // end of the highest byte written
}

// blkOp is the kind of a counted request.
type blkOp int

const (
	opRead blkOp = iota
	opWrite
	opFlush
	opDiscard
)

// blkOpCounters count one kind of request.
type blkOpCounters struct {
	ops, bytes, ns, failed, invalid atomic.Uint64
}

// blkCounters are updated by the request path and read by monitors
// (QMP, Prometheus) at any time without taking the device lock, which a
// long request holds.
type blkCounters struct {
	op         [4]blkOpCounters
	highestEnd atomic.Uint64
}

// done counts a completed request of n bytes that started at start.
func (c *blkCounters) done(op blkOp, n uint64, start time.Time) {
	o := &c.op[op]
	o.ops.Add(1)
	o.bytes.Add(n)
	o.ns.Add(uint64(time.Since(start)))
}

// wrote records that a write ended at byte end.
func (c *blkCounters) wrote(end uint64) {
	for {
		cur := c.highestEnd.Load()
		if end <= cur || c.highestEnd.CompareAndSwap(cur, end) {
			return
		}
	}
}

func (c *blkCounters) failed(op blkOp)  { c.op[op].failed.Add(1) }
func (c *blkCounters) invalid(op blkOp) { c.op[op].invalid.Add(1) }

// Stats returns the disk's counters. Each counter is read atomically;
// together they are a snapshot only when no request is in flight.
func (b *Block) Stats() BlockStats {
	c := &b.stats
	r, w, f, u := &c.op[opRead], &c.op[opWrite], &c.op[opFlush], &c.op[opDiscard]
	return BlockStats{
		ReadBytes: r.bytes.Load(), WriteBytes: w.bytes.Load(), UnmapBytes: u.bytes.Load(),
		ReadOps: r.ops.Load(), WriteOps: w.ops.Load(), FlushOps: f.ops.Load(), UnmapOps: u.ops.Load(),
		ReadTimeNs: r.ns.Load(), WriteTimeNs: w.ns.Load(), FlushTimeNs: f.ns.Load(), UnmapTimeNs: u.ns.Load(),
		FailedReadOps: r.failed.Load(), FailedWriteOps: w.failed.Load(), FailedFlushOps: f.failed.Load(), FailedUnmapOps: u.failed.Load(),
		InvalidReadOps: r.invalid.Load(), InvalidWriteOps: w.invalid.Load(), InvalidUnmapOps: u.invalid.Load(),
		WriteHighestOffset: c.highestEnd.Load(),
	}
}
