package exitstats

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Stats summarizes the durations charged to one row. Times are in ns. Sum
// saturates at math.MaxUint64 rather than wrap (1e9 exits of 1 s each are far
// below that); a saturated row's Avg and Stddev mean nothing.
type Stats struct {
	Count uint64 `json:"count"`
	Min   uint64 `json:"min_ns"`
	Max   uint64 `json:"max_ns"`
	Sum   uint64 `json:"sum_ns"`
	// SumSq is a float64 because it outgrows any integer type a JSON reader
	// handles; the VCPU accumulates it exactly and rounds only here.
	SumSq float64 `json:"sum_sq_ns2"`
	// Hist counts the durations by size (finebuckets.go), for percentiles
	// and, summed into Buckets, for Prometheus. In a snapshot taken from a
	// VCPU it adds up to Count; a table read from JSON written before the
	// histogram existed has it all zero, and no percentiles.
	Hist FineBuckets `json:"-"`
}

// Avg returns the mean duration in ns, or 0 for an empty row.
func (s Stats) Avg() float64 {
	if s.Count == 0 {
		return 0
	}
	return float64(s.Sum) / float64(s.Count)
}

// Stddev returns the population standard deviation in ns, or 0 for an empty
// row. Rounding can make the variance come out slightly negative when all
// durations are equal; that is reported as 0.
func (s Stats) Stddev() float64 {
	if s.Count == 0 {
		return 0
	}
	n := float64(s.Count)
	mean := float64(s.Sum) / n
	v := s.SumSq/n - mean*mean
	if !(v > 0) || math.IsInf(v, 0) {
		return 0
	}
	return math.Sqrt(v)
}

// Add merges o into s, as if every duration counted in o had been recorded
// in s too.
func (s *Stats) Add(o Stats) {
	if o.Count == 0 {
		return
	}
	if s.Count == 0 || o.Min < s.Min {
		s.Min = o.Min
	}
	if o.Max > s.Max {
		s.Max = o.Max
	}
	s.Count = addSat(s.Count, o.Count)
	s.Sum = addSat(s.Sum, o.Sum)
	s.SumSq += o.SumSq
	s.Hist.Add(&o.Hist)
}

// Percentile returns the p-th percentile (0 < p <= 100) of the durations
// in ns, from the histogram and clamped to [Min, Max] (see
// FineBuckets.Percentile), or exactly Min or Max when it is the smallest
// or the largest duration. ok is false for an empty row and for one read
// from JSON without a histogram.
func (s *Stats) Percentile(p float64) (ns uint64, ok bool) {
	ns, ok = s.Hist.Percentile(p, s.Min, s.Max)
	if !ok {
		return 0, false
	}
	switch n := s.Hist.Total(); percentileRank(n, p) {
	case 1:
		return s.Min, true
	case n:
		return s.Max, true
	}
	return ns, true
}

// statsJSON adds the derived values to the JSON so that a reader of a saved
// run need not recompute them; ReadJSON ignores them and derives them again.
type statsJSON struct {
	Count  uint64  `json:"count"`
	Min    uint64  `json:"min_ns"`
	Max    uint64  `json:"max_ns"`
	Sum    uint64  `json:"sum_ns"`
	SumSq  float64 `json:"sum_sq_ns2"`
	Avg    float64 `json:"avg_ns"`
	Stddev float64 `json:"stddev_ns"`
	// The percentiles, in us, are left out where there is no histogram.
	P50  *float64 `json:"p50_us,omitempty"`
	P90  *float64 `json:"p90_us,omitempty"`
	P99  *float64 `json:"p99_us,omitempty"`
	P999 *float64 `json:"p999_us,omitempty"`
	// Buckets lists the Prometheus bucket counts from bucket 0 up to the
	// last non-zero one: most exits are short, so the tail of zeros is
	// left out. They are the histogram summed up, so ReadJSON ignores them.
	Buckets []uint64 `json:"buckets,omitempty"`
	// Hist lists the non-empty histogram buckets as [upper bound in ns,
	// count] pairs, bounds ascending; the unbounded last bucket's bound is
	// the largest uint64. Bounds rather than indexes, so that a file
	// written with another layout is refused rather than misread.
	Hist [][]uint64 `json:"hist,omitempty"`
}

func (s Stats) toJSON() statsJSON {
	b := s.Hist.Buckets()
	n := len(b)
	for n > 0 && b[n-1] == 0 {
		n--
	}
	j := statsJSON{
		Count: s.Count, Min: s.Min, Max: s.Max, Sum: s.Sum,
		SumSq: finite(s.SumSq), Avg: finite(s.Avg()), Stddev: finite(s.Stddev()),
		Buckets: b[:n:n],
	}
	for i, c := range s.Hist {
		if c != 0 {
			j.Hist = append(j.Hist, []uint64{FineUpperBound(i), c})
		}
	}
	us := func(p float64) *float64 {
		ns, ok := s.Percentile(p)
		if !ok {
			return nil
		}
		v := float64(ns) / 1e3
		return &v
	}
	j.P50, j.P90, j.P99, j.P999 = us(50), us(90), us(99), us(99.9)
	return j
}

func (j statsJSON) stats() (Stats, error) {
	if len(j.Buckets) > NumBuckets {
		return Stats{}, fmt.Errorf("%d buckets, at most %d", len(j.Buckets), NumBuckets)
	}
	s := Stats{Count: j.Count, Min: j.Min, Max: j.Max, Sum: j.Sum, SumSq: j.SumSq}
	next := 0 // the lowest bucket the next pair may name
	for _, pair := range j.Hist {
		if len(pair) != 2 {
			return Stats{}, fmt.Errorf("hist: %v is not an [upper bound, count] pair", pair)
		}
		i := fineIndex(pair[0])
		if FineUpperBound(i) != pair[0] {
			return Stats{}, fmt.Errorf("hist: %d ns is not a bucket bound", pair[0])
		}
		if i < next {
			return Stats{}, fmt.Errorf("hist: bound %d ns out of order", pair[0])
		}
		// Durations outside [min, max] would give percentiles outside it.
		if pair[1] != 0 && (i < fineIndex(s.Min) || i > fineIndex(s.Max) || s.Min > s.Max) {
			return Stats{}, fmt.Errorf("hist: durations up to %d ns, outside min %d and max %d", pair[0], s.Min, s.Max)
		}
		s.Hist[i], next = pair[1], i+1
	}
	if n := s.Hist.Total(); len(j.Hist) > 0 && n != s.Count {
		return Stats{}, fmt.Errorf("hist holds %d durations, count is %d", n, s.Count)
	}
	return s, nil
}

// MarshalJSON writes the fields of s plus avg_ns and stddev_ns.
func (s Stats) MarshalJSON() ([]byte, error) { return json.Marshal(s.toJSON()) }

// UnmarshalJSON reads what MarshalJSON writes; avg_ns and stddev_ns are
// ignored because they follow from the other fields.
func (s *Stats) UnmarshalJSON(b []byte) error {
	var j statsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	st, err := j.stats()
	if err != nil {
		return err
	}
	*s = st
	return nil
}

// Row is one named line of a vCPU's table.
type Row struct {
	Name string `json:"name"`
	Stats
	// Share is the fraction (0 to 1) of the block's time, exit rows plus
	// TIMEINGUEST, spent in this row.
	Share float64 `json:"share"`
	// TopRIPs are the guest RIPs that caused most of the row's exits,
	// most first: at most TopRIPs of them, with upper bounds for counts
	// (see RIPCount). Empty unless the registry tracks RIPs.
	TopRIPs []RIPCount `json:"top_rips,omitempty"`
}

type rowJSON struct {
	Name string `json:"name"`
	statsJSON
	Share   float64    `json:"share"`
	TopRIPs []RIPCount `json:"top_rips,omitempty"`
}

// MarshalJSON writes the row as one flat object; without it the promoted
// Stats.MarshalJSON would drop the name and share.
func (r Row) MarshalJSON() ([]byte, error) {
	return json.Marshal(rowJSON{Name: r.Name, statsJSON: r.Stats.toJSON(), Share: finite(r.Share), TopRIPs: r.TopRIPs})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Row) UnmarshalJSON(b []byte) error {
	var j rowJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	st, err := j.statsJSON.stats()
	if err != nil {
		return fmt.Errorf("row %q: %w", j.Name, err)
	}
	if len(j.TopRIPs) > TopRIPs {
		return fmt.Errorf("row %q: %d top RIPs, at most %d", j.Name, len(j.TopRIPs), TopRIPs)
	}
	*r = Row{Name: j.Name, Stats: st, Share: j.Share, TopRIPs: j.TopRIPs}
	return nil
}

// VCPUSnapshot is the table of one vCPU, or of several merged (ID -1).
type VCPUSnapshot struct {
	ID int `json:"id"`
	// Rows holds the exit rows with a non-zero count, by share descending.
	Rows []Row `json:"rows"`
	// Guest is the TIMEINGUEST row: time from KVM_RUN entry to exit.
	Guest Stats `json:"guest"`
	// GuestShare is Guest's fraction of the block's time, like Row.Share.
	GuestShare float64 `json:"guest_share"`
	// InGuest is the time in nanoseconds since the vCPU's current entry
	// into the guest (summed over vCPUs in a total), not yet in Guest,
	// which is charged at the exit: Guest.Sum + InGuest is the guest time
	// so far. 0 when the vCPU is outside the guest.
	InGuest uint64 `json:"in_guest_ns,omitempty"`
}

// Row returns the stats of the row called name, if it is present.
func (v VCPUSnapshot) Row(name string) (Stats, bool) {
	for _, r := range v.Rows {
		if r.Name == name {
			return r.Stats, true
		}
	}
	return Stats{}, false
}

// Exits merges the exit rows, TIMEINGUEST left out: the TOTAL line.
func (v VCPUSnapshot) Exits() Stats {
	var t Stats
	for _, r := range v.Rows {
		t.Add(r.Stats)
	}
	return t
}

// finish derives the shares and puts the rows in table order. Shares are
// always derived, never trusted from input, so they add up to 1.
func (v *VCPUSnapshot) finish() {
	// Summing in float64 cannot overflow, unlike the uint64 sums.
	total := float64(v.Guest.Sum)
	for _, r := range v.Rows {
		total += float64(r.Sum)
	}
	share := func(sum uint64) float64 {
		if total == 0 {
			return 0
		}
		return float64(sum) / total
	}
	for i := range v.Rows {
		v.Rows[i].Share = share(v.Rows[i].Sum)
		sortRIPs(v.Rows[i].TopRIPs)
	}
	v.GuestShare = share(v.Guest.Sum)
	slices.SortStableFunc(v.Rows, func(a, b Row) int {
		if c := cmp.Compare(b.Sum, a.Sum); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
}

// Snapshot is a copy of the counters of every vCPU of a registry.
type Snapshot struct {
	VCPUs []VCPUSnapshot `json:"vcpus"`
}

// MaxVCPUs bounds the vCPUs of a snapshot read from JSON: govmm runs at
// most 254 (the xAPIC IDs of its MP table).
const MaxVCPUs = 254

// UnmarshalJSON reads what json.Marshal writes, refusing more than
// MaxVCPUs vCPUs, or more than MaxKinds rows in one, before it decodes
// them: a row costs 3 KiB in memory (its histogram), so a file or a QMP
// reply of empty objects cost a thousand times its size (6 GB for 1 MiB,
// found by an audit of govmm stat).
func (s *Snapshot) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	err := eachField(dec, func(key string) error {
		if !strings.EqualFold(key, "vcpus") { // as json matches keys
			return skipValue(dec)
		}
		return boundVCPUs(dec, "rows", MaxKinds, "rows")
	})
	if err != nil {
		return err
	}
	type plain Snapshot // without this method
	return json.Unmarshal(b, (*plain)(s))
}

// Total merges every vCPU into one table with ID -1; rows of the same name
// are added together.
func (s Snapshot) Total() VCPUSnapshot {
	t := VCPUSnapshot{ID: -1, Rows: []Row{}}
	index := make(map[string]int)
	var rips [][][]RIPCount // per row of t, each vCPU's top RIPs
	for _, v := range s.VCPUs {
		t.Guest.Add(v.Guest)
		t.InGuest += v.InGuest
		for _, r := range v.Rows {
			i, ok := index[r.Name]
			if !ok {
				i = len(t.Rows)
				index[r.Name] = i
				t.Rows = append(t.Rows, Row{Name: r.Name})
				rips = append(rips, nil)
			}
			t.Rows[i].Add(r.Stats)
			rips[i] = append(rips[i], r.TopRIPs)
		}
	}
	for i := range t.Rows {
		if m := mergeRIPs(rips[i]); len(m) > 0 {
			t.Rows[i].TopRIPs = m
		}
	}
	t.finish()
	return t
}

// Symbolize names every top RIP of every row with name(rip), which
// returns "" for an address it does not know.
func (s Snapshot) Symbolize(name func(rip uint64) string) {
	for _, v := range s.VCPUs {
		for _, r := range v.Rows {
			for i := range r.TopRIPs {
				r.TopRIPs[i].Symbol = name(r.TopRIPs[i].RIP)
			}
		}
	}
}

// ReadJSON reads a snapshot written by json.Marshal(snapshot). Shares, avg
// and stddev are derived from the counters again rather than trusted.
func ReadJSON(r io.Reader) (Snapshot, error) {
	var s Snapshot
	if err := json.NewDecoder(r).Decode(&s); err != nil {
		return Snapshot{}, fmt.Errorf("exitstats: read snapshot: %w", err)
	}
	for i := range s.VCPUs {
		s.VCPUs[i].finish()
	}
	return s, nil
}

// finite replaces values JSON cannot carry, which only hand-made Stats hold.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
