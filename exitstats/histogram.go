package exitstats

import (
	"encoding/json"
	"fmt"
	"math/bits"
)

// Histogram counts uint64 values (nanoseconds, bytes) in log-linear
// buckets: histSub buckets per power of two, so a bucket is at most 25%
// as wide as the values it holds and a quantile read from it is that
// close. Like a VCPU's rows it has one writer at a time (callers
// serialize Record, as a device's lock serializes the requests of a
// queue), so Record is two plain load-and-store pairs (see word): no
// locked instruction, no lock, no allocation. Readers take a Snapshot at
// any time; each counter is read atomically, and a snapshot taken while
// a value is recorded may hold its bucket without its sum.
//
// Bucket i counts values v with HistogramUpperBound(i-1) < v <=
// HistogramUpperBound(i); bucket 0 holds 0 and 1, the last one everything
// above 2^histMaxBits.
type Histogram struct {
	sum     word
	buckets [HistogramBuckets]word
}

const (
	histSubBits = 2
	histSub     = 1 << histSubBits
	// histMaxBits bounds the finite buckets at 2^40: 18 minutes in ns, a
	// TiB in bytes, past any request.
	histMaxBits = 40
	// HistogramBuckets is the number of buckets: histSub exact ones for
	// 0..histSub, histSub per power of two up to 2^histMaxBits, and one
	// for larger values.
	HistogramBuckets = (histMaxBits-histSubBits+1)*histSub + 1
)

// histIndex returns the bucket of v: a bit scan and shifts, no loop.
func histIndex(v uint64) int {
	// Buckets are (lo, hi] like exitstats' others, so that powers of two
	// are upper bounds: index v-1, with 0 in bucket 0.
	if v > 0 {
		v--
	}
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - 1 // >= histSubBits
	if e >= histMaxBits {
		return HistogramBuckets - 1
	}
	sub := int(v>>(e-histSubBits)) & (histSub - 1)
	return (e-histSubBits+1)*histSub + sub
}

// HistogramUpperBound returns the inclusive upper bound of bucket i, or 0
// with ok false for the last, unbounded bucket (and any i out of range).
func HistogramUpperBound(i int) (uint64, bool) {
	if i < 0 || i >= HistogramBuckets-1 {
		return 0, false
	}
	if i < histSub {
		return uint64(i) + 1, true
	}
	e := i/histSub + histSubBits - 1
	sub := uint64(i % histSub)
	return (histSub + sub + 1) << (e - histSubBits), true
}

// histLowerBound is the exclusive lower bound of bucket i (0 for bucket 0).
func histLowerBound(i int) uint64 {
	if i == 0 {
		return 0
	}
	b, _ := HistogramUpperBound(i - 1)
	return b
}

// Record counts v. Calls must not overlap.
func (h *Histogram) Record(v uint64) {
	b := &h.buckets[histIndex(v)]
	b.store(b.load() + 1)
	h.sum.store(h.sum.load() + v)
}

// Snapshot copies the counters.
func (h *Histogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	for i := range h.buckets {
		c := h.buckets[i].load()
		s.Buckets[i] = c
		s.Count = addSat(s.Count, c)
	}
	s.Sum = h.sum.load()
	return s
}

// HistogramSnapshot is a copy of a Histogram. Count is the sum of the
// buckets; Sum wraps only past 2^64 (584 years in ns).
type HistogramSnapshot struct {
	Count   uint64
	Sum     uint64
	Buckets [HistogramBuckets]uint64
}

// Add merges o into s.
func (s *HistogramSnapshot) Add(o *HistogramSnapshot) {
	s.Count = addSat(s.Count, o.Count)
	s.Sum += o.Sum
	for i := range s.Buckets {
		s.Buckets[i] = addSat(s.Buckets[i], o.Buckets[i])
	}
}

// Avg is the mean value, 0 for an empty histogram.
func (s *HistogramSnapshot) Avg() float64 {
	if s.Count == 0 {
		return 0
	}
	return float64(s.Sum) / float64(s.Count)
}

// Quantile estimates the q-quantile (0 <= q <= 1) by linear
// interpolation inside the bucket that holds it; 0 for an empty
// histogram. A quantile in the unbounded bucket is reported as its lower
// bound.
func (s *HistogramSnapshot) Quantile(q float64) float64 {
	if s.Count == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := q * float64(s.Count) // values at or below the answer
	var seen uint64
	for i, c := range s.Buckets {
		if c == 0 {
			continue
		}
		if float64(seen+c) >= rank {
			lo := float64(histLowerBound(i))
			hi, ok := HistogramUpperBound(i)
			if !ok {
				return lo
			}
			f := (rank - float64(seen)) / float64(c)
			return lo + max(f, 0)*(float64(hi)-lo)
		}
		seen += c
	}
	return float64(histLowerBound(HistogramBuckets - 1))
}

// histogramJSON is how a snapshot is saved: the derived mean and
// quantiles for a reader, and the non-empty buckets as [upper bound,
// count] pairs (0 for the unbounded one) from which any other quantile
// follows.
type histogramJSON struct {
	Count   uint64      `json:"count"`
	Sum     uint64      `json:"sum"`
	Avg     float64     `json:"avg"`
	P50     float64     `json:"p50"`
	P90     float64     `json:"p90"`
	P99     float64     `json:"p99"`
	Buckets [][2]uint64 `json:"buckets"`
}

// MarshalJSON writes the counters, the mean, p50, p90 and p99.
func (s HistogramSnapshot) MarshalJSON() ([]byte, error) {
	j := histogramJSON{
		Count: s.Count, Sum: s.Sum, Avg: finite(s.Avg()),
		P50: s.Quantile(0.5), P90: s.Quantile(0.9), P99: s.Quantile(0.99),
		Buckets: [][2]uint64{},
	}
	for i, c := range s.Buckets {
		if c != 0 {
			b, _ := HistogramUpperBound(i)
			j.Buckets = append(j.Buckets, [2]uint64{b, c})
		}
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes; the derived values are
// ignored and the count is the buckets' sum again.
func (s *HistogramSnapshot) UnmarshalJSON(b []byte) error {
	var j histogramJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	var out HistogramSnapshot
	for _, bc := range j.Buckets {
		i := HistogramBuckets - 1
		if bc[0] != 0 {
			i = histIndex(bc[0])
			if hi, _ := HistogramUpperBound(i); hi != bc[0] {
				return fmt.Errorf("histogram: %d is not a bucket bound", bc[0])
			}
		}
		out.Buckets[i] = addSat(out.Buckets[i], bc[1])
		out.Count = addSat(out.Count, bc[1])
	}
	out.Sum = j.Sum
	*s = out
	return nil
}
