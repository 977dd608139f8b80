package vmm

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/internal/monotime"
)

// A VM switches the exit clock to the TSC where the host keeps time with
// it, and at the rate KVM gives, the clock ticks with the runtime's: a
// wrong rate would skew every duration in the exit table.
func TestExitClockFollowsRuntimeClock(t *testing.T) {
	needKVM(t)
	vm, err := New(Config{Raw: &RawGuest{Code: tiny.PortLoop16(testPort, 1), LoadAddr: tiny.LoadAddr}, MemSize: 2 << 20, CPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	src, _ := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	if strings.TrimSpace(string(src)) != "tsc" {
		t.Skipf("host clocksource %q: the exit clock stays the runtime's", strings.TrimSpace(string(src)))
	}
	if !monotime.OnTSC() {
		t.Fatal("the host keeps time with the TSC, but the exit clock does not read it")
	}
	// Each pair reads the exit clock between two runtime readings close
	// together, so a preemption between them cannot skew it.
	pair := func() (time.Time, int64) {
		for range 1000 {
			a := time.Now()
			m := monotime.Now()
			if d := time.Since(a); d < 20*time.Microsecond {
				return a.Add(d / 2), m
			}
		}
		t.Fatal("could not read both clocks within 20 us")
		return time.Time{}, 0
	}
	t0, m0 := pair()
	for time.Since(t0) < 100*time.Millisecond {
	}
	t1, m1 := pair()
	// A scale off by 1% is 1 ms here; pairs add at most 20 us.
	if d := time.Duration(m1-m0) - t1.Sub(t0); d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("over %v the exit clock moved %v more than the runtime clock", t1.Sub(t0), d)
	}
}
