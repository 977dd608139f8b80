package vmm

import (
	"testing"

	"github.com/govmm/govmm/guests/tiny"
)

// query-cpus shows where a vCPU is now: a guest spinning without exits
// has never told govmm its RIP, yet each sample is inside its loop, both
// while it runs (the vCPU samples itself when kicked) and when paused.
func TestCPUStatesOfSpinningGuest(t *testing.T) {
	needKVM(t)
	vm, err := New(Config{
		Raw:     &RawGuest{Code: tiny.Spin16(), LoadAddr: tiny.LoadAddr},
		MemSize: 2 << 20, CPUs: 1, SyncRegs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan Outcome, 1)
	go func() { done <- vm.Run() }()
	t.Cleanup(func() {
		vm.Stop()
		<-done
		vm.Close()
	})
	waitFor(t, "the vCPU thread", func() bool { return vm.VCPUs()[0].ThreadID() != 0 })
	c := &control{vm: vm}
	end := tiny.LoadAddr + uint64(len(tiny.Spin16()))
	check := func(when string) {
		t.Helper()
		for i := 0; i < 10; i++ {
			cpus := c.CPUStates()
			if len(cpus) != 1 {
				t.Fatalf("%s: %d CPUs, want 1", when, len(cpus))
			}
			s := cpus[0]
			if s.PC < tiny.LoadAddr || s.PC >= end || s.Halted || s.ThreadID == 0 {
				t.Fatalf("%s: %+v, want RIP in [%#x, %#x), not halted, a thread", when, s, tiny.LoadAddr, end)
			}
		}
	}
	check("running")
	vm.Pause()
	check("paused")
	vm.Resume()
	check("resumed")
}
