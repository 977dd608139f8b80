package exitstats

import (
	"math"
	"testing"
)

func near(got, want float64) bool {
	if got == want {
		return true
	}
	return math.Abs(got-want) <= 1e-9*math.Max(math.Abs(got), math.Abs(want))
}

// fineOf returns the histogram of the durations listed.
func fineOf(ns ...uint64) FineBuckets {
	var h FineBuckets
	for _, d := range ns {
		h[fineIndex(d)]++
	}
	return h
}

func TestRecordStats(t *testing.T) {
	tests := []struct {
		name   string
		ns     []uint64
		want   Stats
		avg    float64
		stddev float64
	}{
		{"one", []uint64{7}, Stats{Count: 1, Min: 7, Max: 7, Sum: 7, SumSq: 49, Hist: fineOf(7)}, 7, 0},
		{"equal", []uint64{5, 5, 5}, Stats{Count: 3, Min: 5, Max: 5, Sum: 15, SumSq: 75, Hist: fineOf(5, 5, 5)}, 5, 0},
		{"textbook", []uint64{2, 4, 4, 4, 5, 5, 7, 9}, Stats{Count: 8, Min: 2, Max: 9, Sum: 40, SumSq: 232,
			Hist: fineOf(2, 4, 4, 4, 5, 5, 7, 9)}, 5, 2},
		{"quarter", []uint64{4, 3, 2, 1}, Stats{Count: 4, Min: 1, Max: 4, Sum: 10, SumSq: 30, Hist: fineOf(1, 2, 3, 4)}, 2.5, math.Sqrt(1.25)},
		{"zero first", []uint64{0, 10}, Stats{Count: 2, Min: 0, Max: 10, Sum: 10, SumSq: 100, Hist: fineOf(0, 10)}, 5, 5},
		{"one second and one ns", []uint64{1e9, 1}, Stats{Count: 2, Min: 1, Max: 1e9, Sum: 1e9 + 1, SumSq: 1e18 + 1,
			Hist: fineOf(1e9, 1)}, 500000000.5, 499999999.5},
		{"saturated", []uint64{math.MaxUint64, math.MaxUint64, math.MaxUint64},
			Stats{Count: 3, Min: math.MaxUint64, Max: math.MaxUint64, Sum: math.MaxUint64, SumSq: 0x1p128,
				Hist: FineBuckets{NumFineBuckets - 1: 3}}, math.NaN(), math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry()
			k := r.Kind("IO:serial")
			v := r.NewVCPU(0)
			for _, ns := range tt.ns {
				v.Record(k, ns)
			}
			got, ok := v.Snapshot().Row("IO:serial")
			if !ok {
				t.Fatalf("row IO:serial missing")
			}
			if got != tt.want {
				t.Errorf("stats = %+v, want %+v", got, tt.want)
			}
			if math.IsNaN(tt.avg) {
				return // saturated: only the counters are defined
			}
			if !near(got.Avg(), tt.avg) {
				t.Errorf("avg = %v, want %v", got.Avg(), tt.avg)
			}
			if !near(got.Stddev(), tt.stddev) {
				t.Errorf("stddev = %v, want %v", got.Stddev(), tt.stddev)
			}
		})
	}
}

// The sum of squares must stay exact past 2^64, where a uint64 would wrap.
func TestSumSqPast64Bits(t *testing.T) {
	var c counter
	const n, ns = 100000, uint64(1e9) // 1e23 ns^2, above 2^64 (1.8e19)
	for range n {
		c.add(ns)
	}
	var s Stats
	c.load(&s)
	if want := float64(n) * 1e18; s.SumSq != want {
		t.Errorf("SumSq = %g, want %g", s.SumSq, want)
	}
	if s.Sum != n*ns || s.Stddev() != 0 || s.Avg() != float64(ns) {
		t.Errorf("stats = %+v avg %v stddev %v", s, s.Avg(), s.Stddev())
	}
}

func TestStatsAdd(t *testing.T) {
	a := Stats{Count: 2, Min: 3, Max: 9, Sum: 12, SumSq: 90, Hist: fineOf(3, 9)}
	b := Stats{Count: 1, Min: 1, Max: 4, Sum: 4, SumSq: 16, Hist: fineOf(4)}
	tests := []struct {
		name string
		s, o Stats
		want Stats
	}{
		{"empty plus a", Stats{}, a, a},
		{"a plus empty", a, Stats{}, a},
		{"a plus b", a, b, Stats{Count: 3, Min: 1, Max: 9, Sum: 16, SumSq: 106, Hist: fineOf(3, 9, 4)}},
		{"b plus a", b, a, Stats{Count: 3, Min: 1, Max: 9, Sum: 16, SumSq: 106, Hist: fineOf(3, 9, 4)}},
		// b's 4 ns is in histogram bucket 0, (0, 7 ns].
		{"saturates", Stats{Count: 1, Min: 1, Max: 1, Sum: math.MaxUint64, Hist: FineBuckets{2: math.MaxUint64}}, b,
			Stats{Count: 2, Min: 1, Max: 4, Sum: math.MaxUint64, SumSq: 16, Hist: FineBuckets{0: 1, 2: math.MaxUint64}}},
		{"bucket saturates", Stats{Count: 1, Min: 4, Max: 4, Sum: 4, Hist: FineBuckets{0: math.MaxUint64}}, b,
			Stats{Count: 2, Min: 1, Max: 4, Sum: 8, SumSq: 16, Hist: FineBuckets{0: math.MaxUint64}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.s
			got.Add(tt.o)
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDerivedOfOddStats(t *testing.T) {
	tests := []struct {
		name string
		s    Stats
	}{
		{"empty", Stats{}},
		{"negative variance", Stats{Count: 3, Sum: 3, SumSq: 2}},
		{"nan", Stats{Count: 1, Sum: 1, SumSq: math.NaN()}},
		{"inf", Stats{Count: 1, Sum: 1, SumSq: math.Inf(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := tt.s.Stddev(); d != 0 {
				t.Errorf("Stddev = %v, want 0", d)
			}
			if a := tt.s.Avg(); math.IsNaN(a) || math.IsInf(a, 0) {
				t.Errorf("Avg = %v", a)
			}
		})
	}
}

func TestTotal(t *testing.T) {
	r := NewRegistry()
	io, hlt := r.Kind("IO:serial"), r.Kind("HLT")
	v0, v1 := r.NewVCPU(0), r.NewVCPU(1)
	v0.Record(io, 10)
	v0.Record(hlt, 100)
	v0.RecordGuest(100)
	v1.Record(io, 30)
	v1.RecordGuest(10)

	tot := r.Snapshot().Total()
	if tot.ID != -1 {
		t.Errorf("ID = %d, want -1", tot.ID)
	}
	want := []Row{
		{Name: "HLT", Stats: Stats{Count: 1, Min: 100, Max: 100, Sum: 100, SumSq: 10000, Hist: fineOf(100)}, Share: 0.4},
		{Name: "IO:serial", Stats: Stats{Count: 2, Min: 10, Max: 30, Sum: 40, SumSq: 1000, Hist: fineOf(10, 30)}, Share: 0.16},
	}
	if len(tot.Rows) != len(want) {
		t.Fatalf("rows = %+v, want %+v", tot.Rows, want)
	}
	for i := range want {
		if g := tot.Rows[i]; g.Name != want[i].Name || g.Stats != want[i].Stats || !near(g.Share, want[i].Share) {
			t.Errorf("row %d = %+v, want %+v", i, g, want[i])
		}
	}
	if g := (Stats{Count: 2, Min: 10, Max: 100, Sum: 110, SumSq: 10100, Hist: fineOf(100, 10)}); tot.Guest != g || !near(tot.GuestShare, 0.44) {
		t.Errorf("guest = %+v share %v, want %+v share 0.44", tot.Guest, tot.GuestShare, g)
	}
	if e := tot.Exits(); e.Count != 3 || e.Sum != 140 || e.Min != 10 || e.Max != 100 {
		t.Errorf("Exits = %+v", e)
	}
}
