package exitstats

import (
	"bytes"
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	run := func(hlt, io int, ioNs uint64) Snapshot {
		r := NewRegistry()
		v := r.NewVCPU(0)
		for i := 0; i < hlt; i++ {
			v.Record(r.Kind("HLT"), 1000)
		}
		for i := 0; i < io; i++ {
			v.Record(r.Kind("IO:serial"), ioNs)
		}
		v.RecordGuest(1e6)
		return r.Snapshot()
	}
	a, b := run(100, 10, 2000), run(0, 20, 1000)
	byName := map[string]RowDiff{}
	for _, d := range Diff(a, b) {
		byName[d.Name] = d
	}
	hlt := byName["HLT"]
	if !hlt.InA || hlt.InB || hlt.CountA != 100 || hlt.CountB != 0 {
		t.Errorf("HLT diff %+v", hlt)
	}
	io := byName["IO:serial"]
	if io.CountA != 10 || io.CountB != 20 || io.AvgA != 2000 || io.AvgB != 1000 {
		t.Errorf("IO diff %+v", io)
	}
	if !io.HasP99A || !io.HasP99B || io.P99A != 2000 || io.P99B != 1000 || !hlt.HasP99A || hlt.HasP99B {
		t.Errorf("p99s: IO %+v, HLT %+v", io, hlt)
	}
	if g := byName[GuestName]; g.CountA != 1 || g.CountB != 1 {
		t.Errorf("guest diff %+v", g)
	}
	var out bytes.Buffer
	if err := WriteDiff(&out, a, b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"HLT", "gone", "IO:serial", "+100.0%", "-50.0%", GuestName, "p99 A(us)", "2.00"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("diff table lacks %q:\n%s", want, out.String())
		}
	}
}

// A run saved before histograms existed has no percentiles: the diff
// says "-" rather than comparing with zero.
func TestDiffWithoutHistogram(t *testing.T) {
	old := Snapshot{VCPUs: []VCPUSnapshot{{Rows: []Row{{Name: "HLT", Stats: Stats{Count: 1, Min: 5, Max: 5, Sum: 5}}}}}}
	r := NewRegistry()
	r.NewVCPU(0).Record(r.Kind("HLT"), 5)
	var out bytes.Buffer
	if err := WriteDiff(&out, old, r.Snapshot()); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "HLT" {
			if got := strings.Join(f[7:10], " "); got != "- 0.005 -" {
				t.Errorf("HLT p99 columns %q, want \"- 0.005 -\":\n%s", got, out.String())
			}
			return
		}
	}
	t.Errorf("no HLT line:\n%s", out.String())
}
