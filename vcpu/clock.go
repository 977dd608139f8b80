package vcpu

import _ "unsafe" // for go:linkname

// now is the runtime's monotonic clock in nanoseconds: one vDSO
// clock_gettime, where time.Now makes two (wall and monotonic). It is
// read twice per exit, so the difference shows in the exit benchmark.
//
//go:linkname now runtime.nanotime
func now() int64
