// Package monotime is the clock exits and traces are stamped with.
//
// It starts as the runtime's monotonic clock (one vDSO clock_gettime,
// where time.Now makes two). The vCPU loop reads it twice per exit, and
// through Go's vDSO call (a switch to the system stack) and the vDSO's
// ordered, sequence-locked read that costs ~30 ns a read here: ~1% of a
// port-I/O exit. Where the kernel itself keeps time with the TSC, UseTSC
// switches the clock to one RDTSC scaled by KVM's TSC frequency (~11 ns),
// continuing from the time of the switch. Device goroutines read the same
// clock, so their trace events line up with the vCPUs'.
package monotime

import (
	"math/bits"
	"sync/atomic"
	_ "unsafe" // for go:linkname
)

//go:linkname nanotime runtime.nanotime
func nanotime() int64

// tscClock turns TSC readings into nanoseconds since the runtime clock's
// epoch: base + (tsc-tsc0) * mult / 2^32.
type tscClock struct {
	base int64  // nanotime at the switch
	tsc0 uint64 // the TSC at the switch
	mult uint64 // nanoseconds per tick, 32.32 fixed point
}

// ns converts a TSC reading to the clock's time. The 128-bit product
// cannot overflow; a reading before the switch (another CPU's TSC a few
// ticks behind, read just after it) is the switch's time.
func (c *tscClock) ns(tsc uint64) int64 {
	d := tsc - c.tsc0
	if int64(d) < 0 {
		return c.base
	}
	hi, lo := bits.Mul64(d, c.mult)
	return c.base + int64(hi<<32|lo>>32)
}

var tsc atomic.Pointer[tscClock]

// Now is the clock in nanoseconds: monotonic, and shared by every
// goroutine.
func Now() int64 {
	if c := tsc.Load(); c != nil {
		return c.ns(rdtsc())
	}
	return nanotime()
}

// OnTSC reports whether Now reads the TSC.
func OnTSC() bool { return tsc.Load() != nil }

// UseTSC switches Now to the TSC, ticking at khz kHz (KVM_GET_TSC_KHZ of a
// vCPU on a host without TSC scaling, which is the host's own rate), if
// the TSC is a clock to trust here: the kernel's clocksource is the TSC
// (so it is constant, runs in every state and agrees across CPUs: the
// kernel checked) and RDTSC works in user space. It reports whether Now
// reads the TSC; once switched it stays so (a second call keeps the
// first rate).
func UseTSC(khz uint32) bool {
	if tsc.Load() != nil {
		return true
	}
	if khz == 0 || !tscTrusted() {
		return false
	}
	c := &tscClock{mult: (uint64(1e6) << 32) / uint64(khz)}
	c.base, c.tsc0 = nanotime(), rdtsc()
	return tsc.CompareAndSwap(nil, c) || tsc.Load() != nil
}
