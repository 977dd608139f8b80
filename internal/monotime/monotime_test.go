package monotime

import (
	"math"
	"runtime"
	"testing"
)

func TestTSCClockConversion(t *testing.T) {
	half := &tscClock{base: 100, tsc0: 1000, mult: 1 << 31} // 0.5 ns a tick
	for _, c := range []struct {
		tsc  uint64
		want int64
	}{{1000, 100}, {1001, 100}, {1002, 101}, {3000, 1100}, {990, 100}} {
		if got := half.ns(c.tsc); got != c.want {
			t.Errorf("0.5 ns/tick: ns(%d) = %d, want %d", c.tsc, got, c.want)
		}
	}
	// Readings far past the switch must not overflow the product.
	one := &tscClock{mult: 1 << 32}
	if got := one.ns(1<<63 - 1); got != 1<<63-1 {
		t.Errorf("1 ns/tick: ns(2^63-1) = %d", got)
	}
	ghz := &tscClock{mult: (uint64(1e6) << 32) / 2_300_000}
	if got, want := ghz.ns(2_300_000_000*3600), int64(3600e9); math.Abs(float64(got-want)) > 1e3 {
		t.Errorf("2.3 GHz: an hour of ticks is %d ns, want %d", got, want)
	}
}

// pair reads the runtime clock and the TSC at one instant: the TSC between
// two runtime readings, retried until they are close, so a preemption
// between them cannot skew it.
func pair(t *testing.T) (int64, uint64) {
	for range 1000 {
		a := nanotime()
		x := rdtsc()
		b := nanotime()
		if b-a < 20_000 {
			return a + (b-a)/2, x
		}
	}
	t.Fatal("could not read the two clocks within 20 us of each other")
	return 0, 0
}

// TestUseTSCFollowsRuntimeClock switches to the TSC at its measured rate
// and checks that Now stays monotonic and with the runtime clock.
func TestUseTSCFollowsRuntimeClock(t *testing.T) {
	if runtime.GOARCH != "amd64" || !tscTrusted() {
		t.Skip("the kernel does not keep time with the TSC here: Now stays the runtime clock")
	}
	n0, c0 := pair(t)
	for nanotime()-n0 < 50e6 {
	}
	n1, c1 := pair(t)
	khz := uint32(float64(c1-c0) / float64(n1-n0) * 1e6)
	if !UseTSC(khz) {
		t.Fatal("UseTSC refused a trusted TSC")
	}
	if !UseTSC(1) {
		t.Fatal("a second UseTSC must keep the clock, and say so")
	}
	start, last := Now(), Now()
	for last-start < 100e6 {
		now := Now()
		if now < last {
			t.Fatalf("Now went back from %d to %d", last, now)
		}
		last = now
	}
	// The rate came from 50 ms of pairs read within 20 us: its error
	// is below 0.1%, 100 us over 100 ms; a wrong scale is far off.
	if d := Now() - nanotime(); d < -1e6 || d > 1e6 {
		t.Errorf("after 100 ms the TSC clock is %d ns from the runtime's", d)
	}
}
