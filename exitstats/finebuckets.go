package exitstats

import (
	"math"
	"math/bits"
)

// Every exit row also counts its durations in FineBuckets, a log-linear
// histogram fine enough to give percentiles within a few percent: each
// power-of-two bucket of Buckets (100 ns x 2^i) is split into SubBuckets
// linear sub-buckets, and the durations of 100 ns or less into SubBuckets
// more. A Prometheus bucket bound is therefore a FineBuckets bound too, so
// the Prometheus buckets are sums of fine ones (FineBuckets.Buckets) and
// the two always agree. (Histogram, the general one the virtio queues use,
// has power-of-two bounds in raw units and a quarter of the resolution:
// its bounds are not these.)
//
// A percentile read from it is the middle of the bucket holding it, clamped
// to the row's min and max: within 1/32 (3.2%) of the exact value plus
// 4 ns, for durations up to the last finite bound (about 1.68 s). Past
// that bound there is one bucket, and a percentile that falls in it is
// reported as the row's max.
const (
	// subBits is log2(SubBuckets).
	subBits = 4
	// SubBuckets is the number of linear sub-buckets per power of two.
	SubBuckets = 1 << subBits
	// NumFineBuckets is the number of fine buckets: SubBuckets for
	// each finite bucket of Buckets, plus the unbounded one.
	NumFineBuckets = (NumBuckets-1)*SubBuckets + 1
	// fineLimit is the last finite bound, that of Buckets too.
	fineLimit = bucketBase << (NumBuckets - 2)
)

// FineBuckets holds the count of durations in each fine bucket.
type FineBuckets [NumFineBuckets]uint64

// fineIndex returns the fine bucket counting a duration of ns. It is
// on the hot path: a division by a constant (a multiply), a bit scan and a
// few shifts, no loop and one branch (durations past the last bound).
//
// In units of bucketBase/SubBuckets (6.25 ns), q is the duration's offset;
// its highest subBits+1 bits pick the bucket: the leading one the power of
// two, the subBits after it the linear sub-bucket. Below 2*SubBuckets
// units every unit is a bucket of its own.
func fineIndex(ns uint64) int {
	if ns > fineLimit {
		return NumFineBuckets - 1
	}
	// Indexing ns-1 makes each bound inclusive (Prometheus' "le"); 0 ns
	// joins 1 ns in bucket 0.
	if ns > 0 {
		ns--
	}
	q := ns * SubBuckets / bucketBase // ns < 2^31: no overflow
	// q|SubBuckets has the length of q, or subBits+1 where q is shorter:
	// shift 0 without a branch.
	shift := bits.Len64(q|SubBuckets) - (subBits + 1)
	return shift<<subBits + int(q>>shift)
}

// FineUpperBound returns the inclusive upper bound of fine bucket i in
// ns: math.MaxUint64 for the last, unbounded bucket, 0 for an i out of
// range.
func FineUpperBound(i int) uint64 {
	switch {
	case i < 0 || i >= NumFineBuckets:
		return 0
	case i == NumFineBuckets-1:
		return math.MaxUint64
	}
	// Invert fineIndex: bucket i holds the q below qEnd, so the durations
	// up to ceil(qEnd x 6.25 ns).
	shift := max(i>>subBits-1, 0)
	qEnd := uint64(i-shift<<subBits+1) << shift
	return (qEnd*bucketBase + SubBuckets - 1) / SubBuckets
}

// fineLowerBound returns the smallest duration bucket i counts.
func fineLowerBound(i int) uint64 {
	if i <= 0 {
		return 0
	}
	return FineUpperBound(i-1) + 1
}

// Total returns the number of durations counted, saturating.
func (h *FineBuckets) Total() uint64 {
	var n uint64
	for _, c := range h {
		n = addSat(n, c)
	}
	return n
}

// Add merges o into h.
func (h *FineBuckets) Add(o *FineBuckets) {
	for i := range h {
		h[i] = addSat(h[i], o[i])
	}
}

// Since returns the durations counted in h but not in earlier, a reading
// of the same counters taken before h: the histogram of what happened in
// between. A bucket that went down (counters from another run) counts 0.
func (h *FineBuckets) Since(earlier *FineBuckets) FineBuckets {
	var d FineBuckets
	for i := range h {
		if h[i] > earlier[i] {
			d[i] = h[i] - earlier[i]
		}
	}
	return d
}

// Buckets sums the histogram into the coarser Prometheus buckets: every
// bound of those is a fine bound, SubBuckets buckets apart.
func (h *FineBuckets) Buckets() Buckets {
	var b Buckets
	for i, c := range h {
		b[i/SubBuckets] = addSat(b[i/SubBuckets], c)
	}
	return b
}

// Percentile returns the p-th percentile (0 < p <= 100) of the durations
// counted, in ns, by nearest rank: the smallest duration d such that at
// least p% of the durations are <= d. The answer is the middle of the
// bucket holding it, clamped to [lo, hi], the smallest and largest
// duration counted (or bounds known to enclose them); past the last finite
// bound it is hi. ok is false for an empty histogram or a p out of range.
func (h *FineBuckets) Percentile(p float64, lo, hi uint64) (ns uint64, ok bool) {
	n := h.Total()
	if n == 0 || !(p > 0 && p <= 100) {
		return 0, false
	}
	rank := percentileRank(n, p)
	var seen uint64
	for i, c := range h {
		seen = addSat(seen, c)
		if seen < rank {
			continue
		}
		if i == NumFineBuckets-1 {
			return hi, true
		}
		b0, b1 := fineLowerBound(i), FineUpperBound(i)
		mid := b0 + (b1-b0)/2
		return min(max(mid, lo), hi), true
	}
	return hi, true // not reached: seen ends at n >= rank
}

// percentileRank returns ceil(n*p/100), the 1-based rank of the p-th
// percentile of n values, at least 1 and at most n. The float product is
// nudged down by a relative 1e-12 so that one that should be a whole
// number (1000 x 99.9%) is not rounded up past it; no true fraction of a
// count below 10^12 is that close to one.
func percentileRank(n uint64, p float64) uint64 {
	r := math.Ceil(float64(n) * (p / 100) * (1 - 1e-12))
	if r < 1 {
		return 1
	}
	if r >= float64(n) {
		return n
	}
	return uint64(r)
}

// IntervalPercentile returns the p-th percentile of the durations counted
// between two readings of one row, earlier and later: from the difference
// of their histograms, clamped to the later reading's min and max (the
// interval's own are not known). ok is false where the interval counted
// nothing or a reading has no histogram.
func IntervalPercentile(earlier, later *Stats, p float64) (ns uint64, ok bool) {
	d := later.Hist.Since(&earlier.Hist)
	return d.Percentile(p, later.Min, later.Max)
}
