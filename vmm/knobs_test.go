package vmm

import (
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// --cpu-affinity takes the CPU IDs this process may run on, whatever
// their number: under `taskset -c 1` CPU 1 is valid and CPU 0 is not,
// though runtime.NumCPU() is 1 there.
func TestCPUAffinityChecksIDsAgainstTheAffinityMask(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	last := -1
	for c := 0; c < len(all)*64; c++ {
		if all.IsSet(c) {
			last = c
		}
	}
	if last < 1 {
		t.Skip("needs a host CPU other than 0 to restrict the mask to")
	}
	// As `taskset -c LAST` would: only the highest CPU, on this thread
	// (the mask is per thread; validate reads the calling thread's).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var only unix.CPUSet
	only.Set(last)
	if err := unix.SchedSetaffinity(0, &only); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &all)

	if err := (Knobs{CPUAffinity: []int{last}}).validate(nil); err != nil {
		t.Errorf("CPU %d, the one allowed: %v", last, err)
	}
	for _, c := range []int{0, -1, last + 1, 1 << 20} {
		err := (Knobs{CPUAffinity: []int{last, c}}).validate(nil)
		if err == nil || !strings.Contains(err.Error(), "may run on") {
			t.Errorf("CPU %d outside the mask: err %v, want a refusal", c, err)
		}
	}
}
