package exitstats

// Handling times are also counted in exponential buckets so that a reader
// can tell a few slow exits from many medium ones (the mean hides that) and
// so Prometheus can compute quantiles. Bucket i counts durations d with
// BucketUpperBound(i-1) < d <= BucketUpperBound(i); the last one takes
// everything longer. They are the FineBuckets (finebuckets.go) summed up.
const (
	// bucketBase is the bound of bucket 0: a user-space exit round trip
	// is microseconds, so nothing real is finer than this.
	bucketBase = 100 // ns
	// NumBuckets is the number of buckets: finite bounds 100 ns x 2^i for
	// i = 0..24 (up to about 1.68 s, past any HLT a live guest sits in),
	// plus one for longer durations.
	NumBuckets = 26
)

// Buckets holds the count of durations in each bucket.
type Buckets [NumBuckets]uint64

// BucketUpperBound returns the inclusive upper bound of bucket i in ns, or
// 0 with ok false for the last, unbounded bucket (and any i out of range).
func BucketUpperBound(i int) (ns uint64, ok bool) {
	if i < 0 || i >= NumBuckets-1 {
		return 0, false
	}
	return bucketBase << i, true
}
