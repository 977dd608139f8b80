package vcpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/govmm/govmm/guests/tiny"
)

// bound is how long anything here may take before it counts as a hang: a
// generous bound on "it ends at all", not a performance target.
const bound = 10 * time.Second

// runningVCPU is a vCPU whose Run is executing on a goroutine of its own.
type runningVCPU struct {
	done   chan struct{} // closed when Run has returned
	reason StopReason
	err    error
}

// start runs v on a goroutine, and makes sure it has returned before the
// test's cleanup closes the vCPU, whatever the test did.
func start(t *testing.T, v *VCPU) *runningVCPU {
	r := &runningVCPU{done: make(chan struct{})}
	go func() {
		r.reason, r.err = v.Run()
		close(r.done)
	}()
	t.Cleanup(func() {
		v.Stop()
		<-r.done
	})
	return r
}

// wantStopped waits for Run to return Stopped.
func wantStopped(t *testing.T, r *runningVCPU) {
	t.Helper()
	select {
	case <-r.done:
		if r.reason != Stopped || r.err != nil {
			t.Fatalf("Run returned %v (%v), want stopped", r.reason, r.err)
		}
	case <-time.After(bound):
		t.Fatalf("Run still running %v after Stop", bound)
	}
}

// within fails the test if f does not return within bound.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(bound):
		t.Fatalf("%s did not return within %v", what, bound)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// portLoop is a guest that exits to the test port for ever (ecx = 0 wraps:
// 2^32 iterations).
func portLoop() []byte { return tiny.PortLoop16(testPort, 0) }

// A paused vCPU waits on a condition variable; Stop must wake it, and Run
// must return (the bug: a paused VM could not be ended).
func TestStopWhilePaused(t *testing.T) {
	v, dev := newGuestVCPU(t, portLoop(), false)
	done := start(t, v)
	waitUntil(t, "exits", func() bool { return dev.n.Load() > 10 })
	within(t, "Pause", v.Pause)
	if !v.Paused() {
		t.Fatal("vCPU not parked after Pause")
	}
	n := dev.n.Load()
	time.Sleep(20 * time.Millisecond)
	if m := dev.n.Load(); m != n {
		t.Errorf("%d exits while paused", m-n)
	}
	v.Stop()
	wantStopped(t, done)
	if v.Paused() {
		t.Error("vCPU still reports parked after Run returned")
	}
}

// Pause while a stop is under way returns (it does not wait for a park
// that will never come), and so does Pause after Run has returned.
func TestPauseWhileStopping(t *testing.T) {
	v, dev := newGuestVCPU(t, portLoop(), false)
	done := start(t, v)
	waitUntil(t, "exits", func() bool { return dev.n.Load() > 10 })
	v.Stop()
	within(t, "Pause during Stop", v.Pause)
	wantStopped(t, done)
	within(t, "Pause after Run returned", v.Pause)
	v.Resume()
}

// Stop before Run starts: Run returns Stopped without entering the guest.
func TestStopBeforeRun(t *testing.T) {
	v, dev := newGuestVCPU(t, portLoop(), false)
	v.Stop()
	wantStopped(t, start(t, v))
	if n := dev.n.Load(); n != 0 {
		t.Errorf("the guest ran: %d exits", n)
	}
}

// Pause before Run starts: Run parks before its first entry, Resume lets
// it go, and Stop still ends it.
func TestPauseBeforeRun(t *testing.T) {
	v, dev := newGuestVCPU(t, portLoop(), false)
	within(t, "Pause before Run", v.Pause)
	done := start(t, v)
	waitUntil(t, "the park", v.Paused)
	if n := dev.n.Load(); n != 0 {
		t.Errorf("the guest ran while paused: %d exits", n)
	}
	v.Resume()
	waitUntil(t, "exits after Resume", func() bool { return dev.n.Load() > 10 })
	v.Stop()
	wantStopped(t, done)
}

// A guest that never exits by itself leaves only kicks to get the vCPU
// out: a lost kick hangs Pause for ever. Many pause/resume rounds give a
// lost kick many chances to show.
func TestKickNeverLost(t *testing.T) {
	v, _ := newGuestVCPU(t, tiny.Spin16(), false)
	done := start(t, v)
	waitUntil(t, "Run to start", func() bool { return v.ThreadID() != 0 })
	within(t, "500 pause/resume rounds", func() {
		for i := 0; i < 500; i++ {
			v.Pause()
			if !v.Paused() {
				t.Errorf("round %d: Pause returned before the park", i)
				return
			}
			v.Resume()
			// Let the loop leave its park before the next Pause, so that
			// the request lands while it re-enters or runs the guest.
			for deadline := time.Now().Add(bound); v.Paused() && time.Now().Before(deadline); {
				runtime.Gosched()
			}
		}
	})
	v.Stop()
	wantStopped(t, done)
}

// Pause, Resume and Stop from several goroutines at once: whatever the
// order, every call returns and Run ends Stopped. Run with -race.
func TestConcurrentPauseResumeStop(t *testing.T) {
	v, dev := newGuestVCPU(t, portLoop(), false)
	done := start(t, v)
	waitUntil(t, "exits", func() bool { return dev.n.Load() > 10 })
	var wg sync.WaitGroup
	var rounds atomic.Int64
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				v.Pause()
				v.Resume()
				rounds.Add(1)
			}
		}()
	}
	// A fifth goroutine stops the vCPU in the middle of the churn.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for rounds.Load() < 100 {
			time.Sleep(100 * time.Microsecond)
		}
		v.Stop()
	}()
	within(t, "the pausing goroutines", wg.Wait)
	wantStopped(t, done)
}

// A running vCPU's state is sampled now, by its own thread: the RIP is in
// the loop the guest is in, not the RIP of its last exit to user space,
// and it moves on when the guest does.
func TestStateOfRunningVCPU(t *testing.T) {
	v, dev := newGuestVCPU(t, tiny.WaitPort16(testPort), false)
	done := start(t, v)
	waitUntil(t, "the guest polling the port", func() bool { return dev.n.Load() > 0 })
	for i := 0; i < 20; i++ {
		s := v.State(time.Now().Add(bound))
		if s.Err != nil || s.Halted || s.PC < tiny.LoadAddr || s.PC >= tiny.SpinAt {
			t.Fatalf("sample %d: %+v, want RIP in the polling loop [%#x, %#x), not halted", i, s, tiny.LoadAddr, tiny.SpinAt)
		}
	}
	dev.in.Store(1) // let the guest leave the polling loop
	waitUntil(t, "a sample at the final loop", func() bool { return v.State(time.Now().Add(bound)).PC == tiny.SpinAt })
	for i := 0; i < 20; i++ {
		// The guest spins at SpinAt without exiting: the last exit's RIP
		// is in the polling loop, only a fresh sample shows SpinAt.
		if s := v.State(time.Now().Add(bound)); s.Err != nil || s.Halted || s.PC != tiny.SpinAt {
			t.Fatalf("sample %d after release: %+v, want RIP %#x, not halted (last exit at %#x)", i, s, tiny.SpinAt, v.PC())
		}
	}
	within(t, "Pause", v.Pause)
	if s := v.State(time.Now().Add(bound)); s.Err != nil || s.PC != tiny.SpinAt {
		t.Errorf("paused: %+v, want RIP %#x", s, tiny.SpinAt)
	}
	v.Stop()
	wantStopped(t, done)
	if s := v.State(time.Now().Add(bound)); s.Err != nil || s.PC != tiny.SpinAt {
		t.Errorf("after Run: %+v, want RIP %#x", s, tiny.SpinAt)
	}
}

// A vCPU halted inside KVM (in-kernel irqchip, interrupts off) never
// exits by itself: State must still answer, and say halted; Stop must
// still end it.
func TestStateOfHaltedVCPU(t *testing.T) {
	v, _ := newGuestVCPU(t, tiny.HaltLoop16(), true)
	done := start(t, v)
	var s State
	waitUntil(t, "a halted sample", func() bool {
		s = v.State(time.Now().Add(bound))
		return s.Err != nil || s.Halted
	})
	if s.Err != nil || s.PC != tiny.HaltedAt {
		t.Fatalf("halted sample %+v, want RIP %#x", s, tiny.HaltedAt)
	}
	within(t, "Pause of a halted vCPU", v.Pause)
	if s := v.State(time.Now().Add(bound)); s.Err != nil || !s.Halted || s.PC != tiny.HaltedAt {
		t.Errorf("paused: %+v, want halted at %#x", s, tiny.HaltedAt)
	}
	v.Resume()
	v.Stop()
	wantStopped(t, done)
}

// State with a deadline already past returns at once with the last known
// RIP and an error, unless the vCPU can be read without waiting for it.
func TestStateDeadline(t *testing.T) {
	v, _ := newGuestVCPU(t, tiny.Spin16(), false)
	if s := v.State(time.Now()); s.Err != nil || s.PC != tiny.LoadAddr {
		t.Errorf("before Run: %+v, want RIP %#x", s, tiny.LoadAddr)
	}
	done := start(t, v)
	waitUntil(t, "Run to start", func() bool { return v.ThreadID() != 0 })
	within(t, "State with a past deadline", func() { v.State(time.Now().Add(-time.Second)) })
	v.Stop()
	wantStopped(t, done)
}
