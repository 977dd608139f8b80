package keepawake

import (
	"runtime"
	"testing"
	"time"
)

// TestKeeperLetsTheWorldStop: with the keeper waiting in its raw system
// call, stop-the-world still happens (the garbage collector's, and
// GOMAXPROCS's own), and Stop gives the P back. A keeper the runtime
// cannot preempt stops the whole process, this test's timers included:
// the failure is the test binary's timeout (-timeout), with the
// goroutine dump, which is what happens without the runtime.Gosched in
// wait.
func TestKeeperLetsTheWorldStop(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	k, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != procs+1 {
		t.Errorf("GOMAXPROCS %d while the keeper runs, want %d", got, procs+1)
	}
	for range 100 {
		runtime.GC()
	}
	// Longer than sysmon's 10 ms preemption of a goroutine that runs on:
	// the keeper, to the scheduler, never stops running.
	time.Sleep(50 * time.Millisecond)
	runtime.GC()
	if err := k.Stop(); err != nil {
		t.Error(err)
	}
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Errorf("GOMAXPROCS %d after Stop, want %d", got, procs)
	}
}
