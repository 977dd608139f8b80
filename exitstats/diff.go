package exitstats

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
)

// RowDiff compares one row between two runs (A before, B after a change).
type RowDiff struct {
	Name           string
	CountA, CountB uint64
	AvgA, AvgB     float64 // ns
	ShareA, ShareB float64 // 0..1
	InA, InB       bool    // whether the row exists in each run
	// P99A and P99B are the 99th percentiles in ns, from each run's merged
	// histogram, with HasP99A and HasP99B false where a run has no
	// histogram for the row (no exits, or saved before histograms).
	P99A, P99B       uint64
	HasP99A, HasP99B bool
}

// Diff compares the all-vCPU totals of two snapshots row by row, the
// TIMEINGUEST row included, sorted by the larger share of either run.
func Diff(a, b Snapshot) []RowDiff {
	ta, tb := a.Total(), b.Total()
	rows := map[string]*RowDiff{}
	get := func(name string) *RowDiff {
		if r, ok := rows[name]; ok {
			return r
		}
		r := &RowDiff{Name: name}
		rows[name] = r
		return r
	}
	for _, r := range ta.Rows {
		d := get(r.Name)
		d.CountA, d.AvgA, d.ShareA, d.InA = r.Count, r.Avg(), r.Share, true
		d.P99A, d.HasP99A = r.Percentile(99)
	}
	for _, r := range tb.Rows {
		d := get(r.Name)
		d.CountB, d.AvgB, d.ShareB, d.InB = r.Count, r.Avg(), r.Share, true
		d.P99B, d.HasP99B = r.Percentile(99)
	}
	g := get(GuestName)
	g.CountA, g.AvgA, g.ShareA, g.InA = ta.Guest.Count, ta.Guest.Avg(), ta.GuestShare, ta.Guest.Count > 0
	g.CountB, g.AvgB, g.ShareB, g.InB = tb.Guest.Count, tb.Guest.Avg(), tb.GuestShare, tb.Guest.Count > 0
	g.P99A, g.HasP99A = ta.Guest.Percentile(99)
	g.P99B, g.HasP99B = tb.Guest.Percentile(99)
	out := make([]RowDiff, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		mi, mj := math.Max(out[i].ShareA, out[i].ShareB), math.Max(out[j].ShareA, out[j].ShareB)
		if mi != mj {
			return mi > mj
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// change formats the relative change from a to b.
func change(a, b float64) string {
	switch {
	case a == 0 && b == 0:
		return "="
	case a == 0:
		return "new"
	case b == 0:
		return "gone"
	}
	return fmt.Sprintf("%+.1f%%", (b-a)/a*100)
}

// WriteDiff prints Diff(a, b) as a table: per row the count, average,
// 99th percentile and share of time in each run and how they changed.
func WriteDiff(w io.Writer, a, b Snapshot) error {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "type\tcount A\tcount B\tchange\tavg A(us)\tavg B(us)\tchange\tp99 A(us)\tp99 B(us)\tchange\t% A\t% B\t")
	for _, d := range Diff(a, b) {
		p99A, p99B, p99Change := "-", "-", "-"
		if d.HasP99A {
			p99A = ApproxMicros(d.P99A)
		}
		if d.HasP99B {
			p99B = ApproxMicros(d.P99B)
		}
		// Where a run has no percentile the count's change says why.
		if d.HasP99A && d.HasP99B {
			p99Change = change(float64(d.P99A), float64(d.P99B))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.3f\t%.3f\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t\n",
			printableName(d.Name), d.CountA, d.CountB, change(float64(d.CountA), float64(d.CountB)),
			d.AvgA/1e3, d.AvgB/1e3, change(d.AvgA, d.AvgB), p99A, p99B, p99Change, d.ShareA*100, d.ShareB*100)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, sb.String())
	return err
}
