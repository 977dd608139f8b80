package exitstats

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestHistIndex(t *testing.T) {
	tests := []struct {
		ns   uint64
		want int
	}{
		{0, 0},
		{1, 0},
		{7, 0}, // bucket 0 is [0, 7 ns]: 6.25 ns rounded up
		{8, 1},
		{100, SubBuckets - 1}, // the first Prometheus bound ends a sub-bucket
		{101, SubBuckets},
		{200, 2*SubBuckets - 1},
		{201, 2 * SubBuckets},
		{213, 2 * SubBuckets},    // (200, 212.5 rounded up]: past 200 ns
		{214, 2*SubBuckets + 1},  // the sub-buckets are 12.5 ns wide
		{7000, 7*SubBuckets + 1}, // (6800, 7200]: 400 ns wide
		{100 << 24, NumFineBuckets - 2},
		{100<<24 + 1, NumFineBuckets - 1},
		{math.MaxUint64, NumFineBuckets - 1},
	}
	for _, tt := range tests {
		if got := fineIndex(tt.ns); got != tt.want {
			t.Errorf("fineIndex(%d) = %d, want %d", tt.ns, got, tt.want)
		}
	}
}

// The buckets tile the durations without gap or overlap, each bound maps
// back to its own bucket, and each bucket is narrow enough for the stated
// error: its middle is within 1/32 of any duration in it, plus 4 ns.
func TestHistBounds(t *testing.T) {
	if FineUpperBound(-1) != 0 || FineUpperBound(NumFineBuckets) != 0 {
		t.Errorf("bounds out of range are not 0")
	}
	if FineUpperBound(NumFineBuckets-1) != math.MaxUint64 {
		t.Errorf("the last bucket is bounded")
	}
	for i := range NumFineBuckets - 1 {
		lo, hi := fineLowerBound(i), FineUpperBound(i)
		if lo > hi {
			t.Fatalf("bucket %d: [%d, %d] is empty", i, lo, hi)
		}
		if fineIndex(lo) != i || fineIndex(hi) != i || fineIndex(hi+1) != i+1 {
			t.Fatalf("bucket %d: [%d, %d], but fineIndex gives %d, %d, and %d past it",
				i, lo, hi, fineIndex(lo), fineIndex(hi), fineIndex(hi+1))
		}
		mid := lo + (hi-lo)/2
		for _, v := range []uint64{lo, hi} {
			if e := absDiff(mid, v); e > v/32+4 {
				t.Errorf("bucket %d: [%d, %d]: middle %d is %d ns off %d", i, lo, hi, mid, e, v)
			}
		}
	}
}

// Every Prometheus bound is a histogram bound, so FineBuckets.Buckets sums
// whole histogram buckets.
func TestHistBoundsIncludePrometheusBounds(t *testing.T) {
	for i := range NumBuckets - 1 {
		b, _ := BucketUpperBound(i)
		if got := FineUpperBound(i*SubBuckets + SubBuckets - 1); got != b {
			t.Errorf("Prometheus bound %d is %d ns, the histogram's there %d ns", i, b, got)
		}
	}
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// nearestRank is the brute-force percentile: the smallest sample with at
// least perMille/1000 of the samples at or below it. sorted is ascending.
func nearestRank(sorted []uint64, perMille uint64) uint64 {
	return sorted[rankOf(uint64(len(sorted)), perMille)-1]
}

// rankOf is the 1-based rank of the perMille/1000 percentile of n samples.
func rankOf(n, perMille uint64) uint64 { return max((n*perMille+999)/1000, 1) }

// checkPercentiles records samples on a VCPU and compares the row's
// percentiles with the brute-force ones: within the stated error, between
// min and max, and in order.
func checkPercentiles(t *testing.T, samples []uint64) {
	t.Helper()
	r := NewRegistry()
	k := r.Kind("IO:x")
	v := r.NewVCPU(0)
	for _, ns := range samples {
		v.Record(k, ns)
	}
	row, _ := v.Snapshot().Row("IO:x")
	// The JSON carries the histogram whole.
	b, err := json.Marshal(row)
	if err != nil {
		t.Fatal(err)
	}
	var back Stats
	if err := json.Unmarshal(b, &back); err != nil || back != row {
		t.Fatalf("JSON round trip: %v, changed: %v\n%s", err, back != row, b)
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	prev := uint64(0)
	for _, perMille := range []uint64{1, 100, 250, 500, 900, 990, 999, 1000} {
		p := float64(perMille) / 10
		got, ok := row.Percentile(p)
		if !ok {
			t.Fatalf("p%g of %d samples: no answer", p, len(samples))
		}
		want := nearestRank(sorted, perMille)
		if got < row.Min || got > row.Max || got < prev {
			t.Fatalf("p%g = %d: outside [min %d, max %d] or below the previous percentile %d",
				p, got, row.Min, row.Max, prev)
		}
		prev = got
		switch n := uint64(len(samples)); rankOf(n, perMille) {
		case 1, n:
			// The lowest and highest ranks are the min and the max,
			// which the row keeps exactly.
			if got != want {
				t.Fatalf("p%g of %d samples = %d, want %d: the lowest or highest rank is exact", p, n, got, want)
			}
			continue
		}
		if want > fineLimit {
			// Past the last bound, the answer is the max.
			if got != row.Max {
				t.Fatalf("p%g = %d, want the max %d (exact %d is past the last bound)", p, got, row.Max, want)
			}
			continue
		}
		if e := absDiff(got, want); e > want/32+4 {
			t.Fatalf("p%g of %d samples = %d, exact %d: off by %d, more than %d",
				p, len(samples), got, want, e, want/32+4)
		}
	}
}

// Percentiles agree with a brute-force computation over the samples, for
// distributions of many shapes.
func TestPercentilesMatchBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	shapes := map[string]func() uint64{
		"constant":    func() uint64 { return 7013 },
		"uniform":     func() uint64 { return 5000 + rng.Uint64N(10000) },
		"log-uniform": func() uint64 { return uint64(math.Exp(rng.Float64() * math.Log(1e9))) },
		"exponential": func() uint64 { return uint64(rng.ExpFloat64() * 20000) },
		"bimodal": func() uint64 {
			if rng.IntN(100) < 97 {
				return 6000 + rng.Uint64N(2000)
			}
			return 900000 + rng.Uint64N(200000)
		},
		"tiny":      func() uint64 { return rng.Uint64N(120) },
		"past last": func() uint64 { return fineLimit - 1000 + rng.Uint64N(3000) },
		"any":       func() uint64 { return rng.Uint64() >> rng.UintN(64) },
	}
	for name, draw := range shapes {
		t.Run(name, func(t *testing.T) {
			for range 50 {
				samples := make([]uint64, 1+rng.IntN(3000))
				for i := range samples {
					samples[i] = draw()
				}
				checkPercentiles(t, samples)
			}
		})
	}
}

// FuzzPercentiles checks the same properties on any samples: each 4 bytes
// of the input is one duration, shifted left by the first byte's low 5
// bits so that large ones occur too.
func FuzzPercentiles(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 0})
	f.Add([]byte{10, 0xff, 0xff, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0})
	f.Add([]byte{31, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 5 {
			return
		}
		shift := b[0] & 31
		var samples []uint64
		for b = b[1:]; len(b) >= 4; b = b[4:] {
			samples = append(samples, uint64(binary.LittleEndian.Uint32(b))<<shift)
		}
		checkPercentiles(t, samples)
	})
}

// A total's percentiles come from the merged histogram: summing vCPUs is
// exactly recording every sample on one.
func TestTotalPercentilesFromMergedHistogram(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	split, one := NewRegistry(), NewRegistry()
	k := split.Kind("IO:x")
	one.Kind("IO:x")
	fast, slow, both := split.NewVCPU(0), split.NewVCPU(1), one.NewVCPU(0)
	for range 10000 {
		ns := 5000 + rng.Uint64N(1000)
		fast.Record(k, ns)
		both.Record(k, ns)
	}
	for range 200 {
		ns := 1e6 + rng.Uint64N(1e5)
		slow.Record(k, ns)
		both.Record(k, ns)
	}
	tot, _ := split.Snapshot().Total().Row("IO:x")
	want, _ := one.Snapshot().VCPUs[0].Row("IO:x")
	if tot != want {
		t.Fatalf("merged total differs from one vCPU with every sample")
	}
	// Averaging the vCPUs' p99s would give about 0.5 ms; 98% of the
	// exits take 5-6 us and 2% 1-1.1 ms, so the p99 is about 1 ms.
	if p99, _ := tot.Percentile(99); p99 < 1e6 || p99 > 1.1e6 {
		t.Errorf("total p99 = %d ns, want 1-1.1 ms", p99)
	}
	if p50, _ := tot.Percentile(50); p50 < 5000 || p50 > 6000 {
		t.Errorf("total p50 = %d ns, want 5-6 us", p50)
	}
}

func TestPercentileOfNothing(t *testing.T) {
	var s Stats
	if _, ok := s.Percentile(50); ok {
		t.Errorf("an empty row has a median")
	}
	s = Stats{Count: 1, Min: 5, Max: 5, Hist: fineOf(5)}
	for _, p := range []float64{0, -1, 100.5, math.NaN()} {
		if _, ok := s.Percentile(p); ok {
			t.Errorf("p%g has an answer", p)
		}
	}
	// A row read from JSON without a histogram has none either.
	s.Hist = FineBuckets{}
	if _, ok := s.Percentile(50); ok {
		t.Errorf("a row without a histogram has a median")
	}
}

func TestPercentileRank(t *testing.T) {
	tests := []struct {
		n    uint64
		p    float64
		want uint64
	}{
		{1, 50, 1},
		{2, 50, 1},
		{3, 50, 2},
		{100, 99, 99},
		{1000, 99.9, 999},
		{1001, 99.9, 1000},
		{10, 0.001, 1},
		{10, 100, 10},
	}
	for _, tt := range tests {
		if got := percentileRank(tt.n, tt.p); got != tt.want {
			t.Errorf("percentileRank(%d, %g) = %d, want %d", tt.n, tt.p, got, tt.want)
		}
	}
	// Against exact integer arithmetic for the percentiles we print.
	for n := uint64(1); n < 20000; n++ {
		for _, perMille := range []uint64{500, 900, 990, 999} {
			if got, want := percentileRank(n, float64(perMille)/10), (n*perMille+999)/1000; got != want {
				t.Fatalf("percentileRank(%d, %g) = %d, want %d", n, float64(perMille)/10, got, want)
			}
		}
	}
}

func TestHistogramSince(t *testing.T) {
	a := FineBuckets{1: 5, 3: 2, 7: 9}
	b := FineBuckets{1: 7, 3: 2, 7: 8, 9: 1}
	if got, want := b.Since(&a), (FineBuckets{1: 2, 9: 1}); got != want {
		t.Errorf("Since = %v, want %v", got, want)
	}
}

// The percentiles of an interval are those of the exits recorded in it,
// not of everything since the start.
func TestIntervalPercentile(t *testing.T) {
	r := NewRegistry()
	k := r.Kind("IO:x")
	v := r.NewVCPU(0)
	for range 1000 {
		v.Record(k, 1000) // before: 1 us
	}
	before, _ := r.Snapshot().VCPUs[0].Row("IO:x")
	for range 100 {
		v.Record(k, 50000) // in the interval: 50 us
	}
	after, _ := r.Snapshot().VCPUs[0].Row("IO:x")
	if p50, ok := IntervalPercentile(&before, &after, 50); !ok || absDiff(p50, 50000) > 50000/32 {
		t.Errorf("interval p50 = %d, %v; want about 50 us", p50, ok)
	}
	if p50, _ := after.Percentile(50); p50 != 1000 {
		t.Errorf("cumulative p50 = %d, want 1 us", p50)
	}
	if _, ok := IntervalPercentile(&after, &after, 50); ok {
		t.Errorf("an empty interval has a median")
	}
}
