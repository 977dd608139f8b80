package exittrace

import (
	"testing"

	"github.com/govmm/govmm/exitstats"
)

// BenchmarkTraceExit is the vCPU loop's cost of tracing one exit: one
// VCPU.Exit into a ring that has wrapped (every page already touched).
func BenchmarkTraceExit(b *testing.B) {
	tr := New(DefaultEvents, exitstats.NewRegistry())
	v := tr.NewVCPU(0)
	for i := 0; i < DefaultEvents; i++ {
		v.Exit(1, int64(i), 1, 1, 0xffffffff81000000)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v.Exit(1, int64(i), 100, 1000, 0xffffffff81000000)
	}
}
