package exitstats

import (
	"math"
	"math/bits"
	"runtime"

	"github.com/govmm/govmm/internal/monotime"
)

// VCPU holds the counters of one vCPU. Exactly one goroutine, the vCPU
// thread, may call Enter, Leave, RecordExit, Record and RecordGuest; any
// goroutine may call Snapshot at the same time. A nil *VCPU is valid: its methods do nothing.
type VCPU struct {
	id  int
	reg *Registry // bounds Kinds in Record and names rows in Snapshot

	// seq is odd while the writer is updating the counters. Readers retry
	// when they saw it odd or saw it change, so they never return a row (or
	// a set of rows) that is half of one update and half of another. No
	// store on the write side is a locked instruction (word.go).
	seq   word
	guest counter
	rows  [MaxKinds]counter // indexed by Kind
	// rips, indexed by Kind, finds the guest RIPs behind each row; nil
	// unless the registry tracks RIPs (Registry.TrackRIPs), as it costs
	// 96 KiB per vCPU and a few ns per exit.
	rips *[MaxKinds]ripCounter
	// entered is the monotime.Now of the KVM_RUN entry the vCPU is in, +1
	// (0: outside the guest); set by Enter, cleared when the exit or the
	// span is recorded. A snapshot reports the time since as InGuest, so
	// that a vCPU halted in the kernel for seconds shows its guest time
	// as it passes, not in one lump at its next exit (live rates of 800%
	// of a 2-vCPU VM; found by an audit).
	entered word
	// left is the monotime.Now at which the run that entered began came
	// back, +1 (Leave), until the exit is recorded: a snapshot then stops
	// the span there, so that guest time + InGuest never goes down when
	// the exit is recorded.
	left word
}

// Enter notes that the vCPU enters the guest at monotime.Now() at. Only
// the vCPU thread calls it, between recordings.
func (v *VCPU) Enter(at int64) {
	if v != nil {
		v.left.store(0) // a run that came back without an exit (EAGAIN) goes on
		v.entered.store(uint64(at) + 1)
	}
}

// Leave notes that the run Enter began came back at at, the time the exit
// will be charged to. Only the vCPU thread calls it.
func (v *VCPU) Leave(at int64) {
	if v != nil {
		v.left.store(uint64(at) + 1)
	}
}

// counter accumulates one row. Its fields are words (word.go): stored by the
// single writer, made consistent for readers by VCPU.seq.
//
// There is no count field: the count is the sum of the histogram, so one
// store fewer per exit.
type counter struct {
	// minInv is the complement of the smallest duration, so that the zero
	// value means "none yet" (min = math.MaxUint64) and a new VCPU needs
	// no stores into its rows: the pages of rows never used stay untouched.
	minInv word
	max    word
	sum    word // saturates instead of wrapping
	// The sum of squares is kept exactly in 128 bits: a float64 running sum
	// would lose the low bits of every small exit once the sum is large, and
	// 1e9 exits of 1 s each (1e27 ns^2) fit with room to spare.
	sqLo word
	sqHi word
	hist [NumFineBuckets]word // see fineIndex
}

// ID returns the vCPU id given to NewVCPU.
func (v *VCPU) ID() int {
	if v == nil {
		return -1
	}
	return v.id
}

// RecordExit charges one exit: guestNS nanoseconds from KVM_RUN entry to the
// exit to the TIMEINGUEST row, and handleNS of user-space handling to row k,
// whose top guest RIPs count rip (when RIPs are tracked). It is Record and
// RecordGuest in one write section, the vCPU loop's one call per exit. It
// takes no lock and does not allocate.
func (v *VCPU) RecordExit(k Kind, rip, guestNS, handleNS uint64) {
	if v == nil {
		return
	}
	k = v.bound(k)
	s := v.begin()
	v.entered.store(0)
	v.guest.add(guestNS)
	v.rows[k].add(handleNS)
	if v.rips != nil {
		v.rips[k].add(rip)
	}
	v.seq.store(s + 2)
}

// Record charges ns nanoseconds of user-space handling to row k. A Kind the
// registry never handed out is charged to KindOther. It takes no lock and
// does not allocate.
func (v *VCPU) Record(k Kind, ns uint64) {
	if v == nil {
		return
	}
	c := &v.rows[v.bound(k)]
	s := v.begin()
	c.add(ns)
	v.seq.store(s + 2)
}

// RecordGuest charges ns nanoseconds, from KVM_RUN entry to the exit, to the
// TIMEINGUEST row. It takes no lock and does not allocate.
func (v *VCPU) RecordGuest(ns uint64) {
	if v == nil {
		return
	}
	s := v.begin()
	v.entered.store(0)
	v.guest.add(ns)
	v.seq.store(s + 2)
}

// bound returns k, or KindOther for a Kind the registry never handed out.
func (v *VCPU) bound(k Kind) Kind {
	if uint32(k) >= v.reg.n.Load() {
		return KindOther
	}
	return k
}

// begin opens a write section and returns the even sequence number it
// found; the caller closes the section by storing that number plus 2. Only
// the vCPU thread writes seq, so a load and a store are enough.
func (v *VCPU) begin() uint64 {
	s := v.seq.load()
	v.seq.store(s + 1)
	return s
}

// add must be called by the single writer inside a write section. It skips
// the stores that would not change a field.
func (c *counter) add(ns uint64) {
	if ^ns > c.minInv.load() {
		c.minInv.store(^ns)
	}
	if ns > c.max.load() {
		c.max.store(ns)
	}
	b := &c.hist[fineIndex(ns)]
	b.store(b.load() + 1)
	c.sum.store(addSat(c.sum.load(), ns))

	sqHi, sqLo := bits.Mul64(ns, ns)
	oldHi := c.sqHi.load()
	lo, carry := bits.Add64(c.sqLo.load(), sqLo, 0)
	hi, carry := bits.Add64(oldHi, sqHi, carry)
	if carry != 0 {
		hi, lo = math.MaxUint64, math.MaxUint64
	}
	c.sqLo.store(lo)
	if hi != oldHi {
		c.sqHi.store(hi)
	}
}

// load copies the counter into s; the caller provides the consistency. s
// must be zero, or the copy of this counter at an earlier time.
func (c *counter) load(s *Stats) {
	s.Min, s.Max = ^c.minInv.load(), c.max.load()
	s.Sum = c.sum.load()
	s.SumSq = float64(c.sqHi.load())*0x1p64 + float64(c.sqLo.load())
	// Every duration counted lies between min and max, so the buckets
	// outside theirs are zero: copying only the range between keeps the
	// read short (a row's durations span a few powers of two, not all 25)
	// and so keeps a reader from being overrun by a busy writer. If min
	// and max were torn, the range may be wrong, but then the sequence
	// number has changed and the caller reads again. What an earlier
	// reading left in s outside the range is zero: buckets, min and max
	// only ever grow outward, so a bucket that was non-zero then is
	// inside the range now.
	for i := fineIndex(s.Min); i <= fineIndex(s.Max); i++ {
		s.Hist[i] = c.hist[i].load()
	}
	s.Count = s.Hist.Total()
	if s.Count == 0 {
		*s = Stats{}
	}
}

// read copies the first len(rows) rows, their top RIPs when tracked (into
// rips, as long as rows), and the guest row as one consistent state of
// the vCPU, and returns the entry time of the run the vCPU is in (Enter,
// +1; 0: outside the guest). rows and guest must be zero.
func (v *VCPU) read(rows []Stats, guest *Stats, rips []ripSlots) (entered, left uint64) {
	for tries := 0; ; tries++ {
		s := v.seq.load()
		if s&1 == 0 {
			for k := range rows {
				v.rows[k].load(&rows[k])
				if v.rips != nil {
					v.rips[k].load(&rips[k])
				}
			}
			v.guest.load(guest)
			// After the guest row: an exit recorded in between changes
			// seq, and an Enter after it only starts a new span.
			entered, left = v.entered.load(), v.left.load()
			if v.seq.load() == s {
				return entered, left
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
	var rips []ripSlots
	if v.rips != nil {
		rips = make([]ripSlots, len(t.names))
	}
	snap := VCPUSnapshot{ID: v.id}
	if entered, left := v.read(raw, &snap.Guest, rips); entered != 0 {
		end := uint64(monotime.Now()) + 1
		if left >= entered { // this run came back: its exit is charged to left
			end = left
		}
		snap.InGuest = max(end, entered) - entered
	}
	snap.Rows = make([]Row, 0, len(raw))
	for k, s := range raw {
		if s.Count != 0 {
			row := Row{Name: t.names[k], Stats: s}
			if rips != nil {
				row.TopRIPs = rips[k].list()
			}
			snap.Rows = append(snap.Rows, row)
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
