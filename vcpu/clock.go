package vcpu

import "github.com/govmm/govmm/internal/monotime"

// now is the clock exits are stamped with (monotime.Now: one RDTSC where
// the VM switched it to the TSC, else one vDSO call); exittrace stamps
// device events with the same clock.
func now() int64 { return monotime.Now() }
