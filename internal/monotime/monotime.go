// Package monotime is the clock exits and traces are stamped with.
package monotime

import _ "unsafe" // for go:linkname

// Now is the runtime's monotonic clock in nanoseconds: one vDSO
// clock_gettime, where time.Now makes two (wall and monotonic). The vCPU
// loop reads it twice per exit, so the difference shows in the exit
// benchmark; device goroutines read the same clock, so their trace events
// line up with the vCPUs'.
//
//go:linkname Now runtime.nanotime
func Now() int64
