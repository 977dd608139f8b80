package main

import (
	"testing"
	"time"
)

// cpuInfo is the part of a query-cpus entry these tests look at.
type cpuInfo struct {
	CPU      int   `json:"CPU"`
	Halted   bool  `json:"halted"`
	ThreadID int   `json:"thread_id"`
	PC       int64 `json:"pc"`
}

func queryCPUs(t *testing.T, vm *ttyVM) []cpuInfo {
	t.Helper()
	var cpus []cpuInfo
	if err := runQMP(vm.mon, "query-cpus", nil, &cpus); err != nil {
		t.Fatal(err)
	}
	if len(cpus) != 2 {
		t.Fatalf("query-cpus: %d CPUs, want 2: %+v", len(cpus), cpus)
	}
	return cpus
}

// query-cpus on an idle Linux guest: its vCPUs wait in HLT inside KVM
// (they never exit to govmm for it), yet query-cpus sees them halted at a
// kernel address, running or paused; paused, the state holds still.
func TestQueryCPUsOfIdleLinux(t *testing.T) {
	vm := startOnTTY(t)
	// An idle guest's vCPUs are halted nearly all the time; wait for a
	// sample that catches one, which the old query-cpus never showed.
	deadline := time.Now().Add(endBound)
	for halted := false; !halted; {
		if time.Now().After(deadline) {
			t.Fatalf("no halted vCPU in %v of samples of an idle guest", endBound)
		}
		for _, c := range queryCPUs(t, vm) {
			halted = halted || c.Halted && c.PC < 0 // a kernel address is negative
		}
	}
	vm.pause(t)
	first := queryCPUs(t, vm)
	for i := 0; i < 5; i++ {
		again := queryCPUs(t, vm)
		for j := range first {
			if again[j] != first[j] {
				t.Fatalf("paused vCPU %d moved: %+v, then %+v", j, first[j], again[j])
			}
		}
	}
	for _, c := range first {
		if c.PC == 0 || c.ThreadID == 0 {
			t.Errorf("paused vCPU %+v: want a RIP and a thread", c)
		}
	}
}
