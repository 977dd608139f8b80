package main

import (
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/vmm"
)

// A live frame shows each row's rate, mean and percentiles over the
// interval between two readings.
func TestWriteLive(t *testing.T) {
	r := exitstats.NewRegistry()
	k := r.Kind("IO:serial")
	v := r.NewVCPU(0)
	v.RecordExit(k, 0, 1000, 2000)
	t0 := time.Unix(100, 0)
	a := sample{at: t0, table: vmm.ExitTable{User: r.Snapshot()}}
	for range 99 {
		v.RecordExit(k, 0, 1000, 8000)
	}
	v.RecordExit(k, 0, 1000, 900000)
	b := sample{at: t0.Add(time.Second), table: vmm.ExitTable{User: r.Snapshot()}}

	var out strings.Builder
	if err := writeLive(&out, "test", a, b); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	for _, l := range strings.Split(out.String(), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "IO:serial" {
			// 100 exits: 99 of 8 us (in (7.6, 8.0] us) and one of 900 us.
			if want := []string{"IO:serial", "100", "16.920", "7.80", "7.80", "0.17"}; strings.Join(f, " ") != strings.Join(want, " ") {
				t.Errorf("line %q, want %q", f, want)
			}
			return
		}
	}
	t.Errorf("no IO:serial line:\n%s", out.String())
}

// TIMEINGUEST counts the runs in progress: a vCPU in the guest for the
// whole interval, with no exit, shows 100% of it, where it showed nothing
// and then its whole halt in one interval (800% of a 2-vCPU VM, an audit).
func TestLiveGuestTimeInProgress(t *testing.T) {
	ta := exitstats.VCPUSnapshot{Guest: exitstats.Stats{Count: 1, Sum: 1e9}, InGuest: 5e8}
	tb := exitstats.VCPUSnapshot{Guest: exitstats.Stats{Count: 1, Sum: 1e9}, InGuest: 15e8}
	g, ok := guestRate(ta, tb, 1)
	if !ok || g.share != 100 || g.rate != 0 || g.p50 != "-" {
		t.Errorf("guest row %+v (%v), want 100%% and no runs ended", g, ok)
	}
}
