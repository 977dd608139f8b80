package exitstats

import (
	"math"
	"math/bits"
	"runtime"
	"sync/atomic"
)

// VCPU holds the counters of one vCPU. Exactly one goroutine, the vCPU
// thread, may call Record and RecordGuest; any goroutine may call Snapshot at
// the same time. A nil *VCPU is valid: its methods do nothing.
type VCPU struct {
	id  int
	reg *Registry // bounds Kinds in Record and names rows in Snapshot

	// seq is odd while the writer is updating a counter. Readers retry when
	// they saw it odd or saw it change, so they never return a row (or a
	// set of rows) that is half of one update and half of another.
	seq   atomic.Uint64
	guest counter
	rows  [MaxKinds]counter // indexed by Kind
}

// counter accumulates one row. Every field is atomic only so that readers
// racing with the writer are well defined (and -race stays quiet); the
// sequence lock, not the atomics, is what makes a copy consistent.
//
// There is no count field: the count is the sum of the buckets. Each atomic
// store is a full barrier on the hot path, so the bucket store replaces the
// count store rather than adding one.
type counter struct {
	min atomic.Uint64 // math.MaxUint64 until the first duration
	max atomic.Uint64
	sum atomic.Uint64 // saturates instead of wrapping
	// The sum of squares is kept exactly in 128 bits: a float64 running sum
	// would lose the low bits of every small exit once the sum is large, and
	// 1e9 exits of 1 s each (1e27 ns^2) fit with room to spare.
	sqLo    atomic.Uint64
	sqHi    atomic.Uint64
	buckets [NumBuckets]atomic.Uint64 // see bucketOf
}

// init readies an empty counter: min starts high so that add needs no
// "first duration" case.
func (c *counter) init() { c.min.Store(math.MaxUint64) }

// ID returns the vCPU id given to NewVCPU.
func (v *VCPU) ID() int {
	if v == nil {
		return -1
	}
	return v.id
}

// Record charges ns nanoseconds of user-space handling to row k. A Kind the
// registry never handed out is charged to KindOther. It takes no lock and
// does not allocate.
func (v *VCPU) Record(k Kind, ns uint64) {
	if v == nil {
		return
	}
	if uint32(k) >= v.reg.n.Load() {
		k = KindOther
	}
	c := &v.rows[k]
	// Only this goroutine writes seq, so Load+Store is enough; an atomic
	// add would cost a locked instruction for nothing.
	s := v.seq.Load()
	v.seq.Store(s + 1)
	c.add(ns)
	v.seq.Store(s + 2)
}

// RecordGuest charges ns nanoseconds, from KVM_RUN entry to the exit, to the
// TIMEINGUEST row. It takes no lock and does not allocate.
func (v *VCPU) RecordGuest(ns uint64) {
	if v == nil {
		return
	}
	s := v.seq.Load()
	v.seq.Store(s + 1)
	v.guest.add(ns)
	v.seq.Store(s + 2)
}

// add must be called by the single writer inside a sequence-lock write
// section. It skips stores that would not change a field, because each atomic
// store is a full barrier on the vCPU's hot path.
func (c *counter) add(ns uint64) {
	if ns < c.min.Load() {
		c.min.Store(ns)
	}
	if ns > c.max.Load() {
		c.max.Store(ns)
	}
	b := &c.buckets[bucketOf(ns)]
	b.Store(b.Load() + 1)
	c.sum.Store(addSat(c.sum.Load(), ns))

	sqHi, sqLo := bits.Mul64(ns, ns)
	oldHi := c.sqHi.Load()
	lo, carry := bits.Add64(c.sqLo.Load(), sqLo, 0)
	hi, carry := bits.Add64(oldHi, sqHi, carry)
	if carry != 0 {
		hi, lo = math.MaxUint64, math.MaxUint64
	}
	c.sqLo.Store(lo)
	if hi != oldHi {
		c.sqHi.Store(hi)
	}
}

// load copies the counter; the caller provides the consistency.
func (c *counter) load() Stats {
	s := Stats{
		Max:   c.max.Load(),
		Sum:   c.sum.Load(),
		SumSq: float64(c.sqHi.Load())*0x1p64 + float64(c.sqLo.Load()),
	}
	for i := range c.buckets {
		s.Buckets[i] = c.buckets[i].Load()
	}
	s.Count = s.Buckets.Total()
	if s.Count > 0 {
		s.Min = c.min.Load()
	}
	return s
}

// read copies the first len(rows) rows and the guest row as one consistent
// state of the vCPU.
func (v *VCPU) read(rows []Stats) Stats {
	for tries := 0; ; tries++ {
		s := v.seq.Load()
		if s&1 == 0 {
			for k := range rows {
				rows[k] = v.rows[k].load()
			}
			guest := v.guest.load()
			if v.seq.Load() == s {
				return guest
			}
		}
		// A write section is a few stores long, so spinning briefly is
		// cheapest; past that the writer may have been preempted on our P
		// and needs it back to finish.
		if tries >= 4 {
			runtime.Gosched()
		}
	}
}

// Snapshot returns a consistent copy of this vCPU's counters, rows with a
// count of zero left out. It may run concurrently with Record.
func (v *VCPU) Snapshot() VCPUSnapshot {
	if v == nil {
		return VCPUSnapshot{ID: -1}
	}
	t := v.reg.kinds.Load()
	raw := make([]Stats, len(t.names))
	guest := v.read(raw)
	snap := VCPUSnapshot{ID: v.id, Guest: guest, Rows: make([]Row, 0, len(raw))}
	for k, s := range raw {
		if s.Count != 0 {
			snap.Rows = append(snap.Rows, Row{Name: t.names[k], Stats: s})
		}
	}
	snap.finish()
	return snap
}

// addSat adds without wrapping: a sum that has overflowed is reported as the
// largest value rather than as a small, plausible-looking one.
func addSat(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}
