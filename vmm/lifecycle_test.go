package vmm

import (
	"testing"
	"time"

	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/vcpu"
)

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Pause parks the vCPUs (exits stop), Resume lets them go on, Stop ends
// the run; no exit is lost or double-counted on the way.
func TestPauseResumeStop(t *testing.T) {
	needKVM(t)
	{
		vm, err := New(Config{
			// ecx = 0: the loop wraps and runs for 2^32 iterations.
			Raw:     &RawGuest{Code: tiny.PortLoop16(testPort, 0), LoadAddr: tiny.LoadAddr},
			MemSize: 2 << 20, CPUs: 1, ExitStats: true, SyncRegs: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		dev := &counter{}
		if _, err := vm.IOBus.Register("test", testPort, 1, dev); err != nil {
			t.Fatal(err)
		}
		done := make(chan Outcome, 1)
		go func() { done <- vm.Run() }()

		waitFor(t, "exits", func() bool { return dev.n.Load() > 100 })
		vm.Pause()
		if !vm.VCPUs()[0].Paused() {
			t.Error("vCPU not parked after Pause")
		}
		paused := dev.n.Load()
		time.Sleep(50 * time.Millisecond)
		if n := dev.n.Load(); n != paused {
			t.Errorf("%d exits while paused", n-paused)
		}
		vm.Resume()
		waitFor(t, "exits after resume", func() bool { return dev.n.Load() > paused+100 })

		start := time.Now()
		vm.Stop()
		var out Outcome
		select {
		case out = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return 5 s after Stop")
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("Stop took %v", took)
		}
		if out.Reason != vcpu.Stopped || out.Err != nil {
			t.Errorf("outcome %v (%v), want stopped", out.Reason, out.Err)
		}
		st, _ := vm.Stats().Total().Row("IO:test")
		if st.Count != dev.n.Load() {
			t.Errorf("table counts %d exits, the device saw %d", st.Count, dev.n.Load())
		}
		vm.Close()
	}
}
