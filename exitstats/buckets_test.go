package exitstats

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The Prometheus bucket of a duration is its histogram bucket's major.
func TestBucketOfDuration(t *testing.T) {
	tests := []struct {
		ns   uint64
		want int
	}{
		{0, 0},
		{1, 0},
		{100, 0},
		{101, 1},
		{200, 1},
		{201, 2},
		{400, 2},
		{401, 3},
		{7000, 7}, // a typical port-I/O round trip: (6.4 us, 12.8 us]
		{100 << 24, 24},
		{100<<24 + 1, NumBuckets - 1},
		{math.MaxUint64, NumBuckets - 1},
	}
	for _, tt := range tests {
		var h FineBuckets
		h[fineIndex(tt.ns)] = 1
		var want Buckets
		want[tt.want] = 1
		if got := h.Buckets(); got != want {
			t.Errorf("%d ns counts in Prometheus buckets %v, want bucket %d", tt.ns, got, tt.want)
		}
	}
}

// Every duration lands in the one Prometheus bucket whose bounds enclose it.
func TestBucketBoundsEncloseDuration(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		ns := rng.Uint64() >> rng.UintN(64)
		i := fineIndex(ns) / SubBuckets
		if hi, ok := BucketUpperBound(i); ok && ns > hi {
			t.Fatalf("%d ns in bucket %d, whose bound is %d", ns, i, hi)
		}
		if lo, ok := BucketUpperBound(i - 1); ok && ns <= lo {
			t.Fatalf("%d ns in bucket %d, but bucket %d ends at %d", ns, i, i-1, lo)
		}
	}
}

func TestBucketUpperBound(t *testing.T) {
	if b, ok := BucketUpperBound(0); !ok || b != 100 {
		t.Errorf("bound 0 = %d, %v", b, ok)
	}
	if b, ok := BucketUpperBound(NumBuckets - 2); !ok || b < 1e9 || b > 2e9 {
		t.Errorf("last finite bound = %d ns, %v; want about 1.6 s", b, ok)
	}
	for _, i := range []int{-1, NumBuckets - 1, NumBuckets} {
		if _, ok := BucketUpperBound(i); ok {
			t.Errorf("bucket %d has a finite bound", i)
		}
	}
}

// The histogram of a snapshot must add up to its count, and the guest row has
// buckets too.
func TestSnapshotBuckets(t *testing.T) {
	r := NewRegistry()
	k := r.Kind("IO:serial")
	v := r.NewVCPU(0)
	for _, ns := range []uint64{50, 150, 150, 7000, 2e9} {
		v.Record(k, ns)
	}
	v.RecordGuest(300)
	s := v.Snapshot()
	row, _ := s.Row("IO:serial")
	if got, want := row.Hist.Buckets(), (Buckets{0: 1, 1: 2, 7: 1, NumBuckets - 1: 1}); got != want {
		t.Errorf("buckets %v, want %v", got, want)
	}
	if row.Count != row.Hist.Total() {
		t.Errorf("count %d, histogram adds up to %d", row.Count, row.Hist.Total())
	}
	if got, want := s.Guest.Hist.Buckets(), (Buckets{2: 1}); got != want {
		t.Errorf("guest buckets %v, want %v", got, want)
	}
}
