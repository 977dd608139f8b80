package exitstats

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Every value lands in the one bucket whose bounds enclose it, and the
// buckets are at most a quarter as wide as their values.
func TestHistogramBucketsEncloseValue(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := range 200000 {
		v := rng.Uint64() >> rng.UintN(64)
		if n < 64 {
			v = uint64(n)
		}
		i := histIndex(v)
		if i < 0 || i >= HistogramBuckets {
			t.Fatalf("%d in bucket %d of %d", v, i, HistogramBuckets)
		}
		hi, ok := HistogramUpperBound(i)
		if ok && v > hi {
			t.Fatalf("%d in bucket %d, whose bound is %d", v, i, hi)
		}
		if !ok && v <= 1<<histMaxBits {
			t.Fatalf("%d in the unbounded bucket", v)
		}
		lo := histLowerBound(i)
		if i > 0 && v <= lo {
			t.Fatalf("%d in bucket %d, but bucket %d ends at %d", v, i, i-1, lo)
		}
		if ok && lo >= histSub && float64(hi-lo) > 0.25*float64(lo)+0.5 {
			t.Fatalf("bucket %d is (%d, %d]: wider than a quarter of its values", i, lo, hi)
		}
	}
	for _, tt := range []struct {
		v    uint64
		want int
	}{{0, 0}, {1, 0}, {2, 1}, {4, 3}, {5, 4}, {8, 7}, {1 << histMaxBits, HistogramBuckets - 2}, {1<<histMaxBits + 1, HistogramBuckets - 1}, {math.MaxUint64, HistogramBuckets - 1}} {
		if got := histIndex(tt.v); got != tt.want {
			t.Errorf("histIndex(%d) = %d, want %d", tt.v, got, tt.want)
		}
	}
}

func TestHistogramCountsWhatWasRecorded(t *testing.T) {
	var h Histogram
	var sum uint64
	values := []uint64{0, 1, 3, 100, 4096, 4096, 65536, 1 << 30, 1 << 50}
	for _, v := range values {
		h.Record(v)
		sum += v
	}
	s := h.Snapshot()
	if s.Count != uint64(len(values)) || s.Sum != sum {
		t.Fatalf("count %d sum %d, want %d and %d", s.Count, s.Sum, len(values), sum)
	}
	if got := s.Buckets[histIndex(4096)]; got != 2 {
		t.Errorf("bucket of 4096 holds %d, want 2", got)
	}
	var empty HistogramSnapshot
	if empty.Quantile(0.5) != 0 || empty.Avg() != 0 {
		t.Error("an empty histogram has a quantile or mean")
	}
}

// Quantiles come out within the bucket width of the true ones.
func TestHistogramQuantile(t *testing.T) {
	var h Histogram
	for v := uint64(1); v <= 10000; v++ {
		h.Record(v * 1000) // 1 us .. 10 ms, uniform
	}
	s := h.Snapshot()
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 1} {
		want := q * 1e7
		got := s.Quantile(q)
		if math.Abs(got-want) > 0.25*want {
			t.Errorf("q%.2f = %.0f, want %.0f within 25%%", q, got, want)
		}
	}
	if lo, hi := s.Quantile(0), s.Quantile(1); lo > hi {
		t.Errorf("q0 %.0f above q1 %.0f", lo, hi)
	}
}

func TestHistogramJSONRoundTrip(t *testing.T) {
	var h Histogram
	for _, v := range []uint64{7, 700, 70000, 70000, 1 << 45} {
		h.Record(v)
	}
	s := h.Snapshot()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back HistogramSnapshot
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != s {
		t.Errorf("round trip changed the snapshot:\n%s", b)
	}
	if err := json.Unmarshal([]byte(`{"buckets":[[11,1]]}`), &back); err == nil {
		t.Error("a bound that is no bucket's was accepted")
	}
}

// Recording from several goroutines, one at a time, while another reads
// loses nothing and is race-free (run with -race).
func TestHistogramConcurrent(t *testing.T) {
	var h Histogram
	const writers, each = 4, 5000
	var wg sync.WaitGroup
	var writer sync.Mutex
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := h.Snapshot()
			s.Quantile(0.99)
		}
	}()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				writer.Lock()
				h.Record(uint64(w*each + i))
				writer.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if s := h.Snapshot(); s.Count != writers*each {
		t.Errorf("count %d, want %d", s.Count, writers*each)
	}
}

func TestHistogramMetric(t *testing.T) {
	var h Histogram
	h.Record(1000) // 1 us
	h.Record(3000)
	h.Record(1 << 50)
	s := h.Snapshot()
	desc := prometheus.NewDesc("x_seconds", "x", []string{"l"}, nil)
	var m dto.Metric
	if err := HistogramMetric(desc, &s, 1e-9, "a").Write(&m); err != nil {
		t.Fatal(err)
	}
	hist := m.GetHistogram()
	if hist.GetSampleCount() != 3 || math.Abs(hist.GetSampleSum()-float64(1000+3000+(1<<50))*1e-9) > 1e-6 {
		t.Fatalf("count %d sum %g", hist.GetSampleCount(), hist.GetSampleSum())
	}
	var prev uint64
	for _, b := range hist.GetBucket() {
		ub := b.GetUpperBound() / 1e-9
		if math.Abs(ub-math.Exp2(math.Round(math.Log2(ub)))) > 1e-3*ub {
			t.Errorf("bound %g ns is not a power of two", ub)
		}
		if b.GetCumulativeCount() < prev {
			t.Errorf("cumulative count falls at %g", ub)
		}
		prev = b.GetCumulativeCount()
		if ub == 1024 && prev != 1 || ub == 4096 && prev != 2 {
			t.Errorf("le %g ns counts %d", ub, prev)
		}
	}
	if prev != 2 {
		t.Errorf("finite buckets count %d, want 2 (one value is past 2^40)", prev)
	}
}
