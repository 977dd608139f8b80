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
	}
	for _, r := range tb.Rows {
		d := get(r.Name)
		d.CountB, d.AvgB, d.ShareB, d.InB = r.Count, r.Avg(), r.Share, true
	}
	g := get(GuestName)
	g.CountA, g.AvgA, g.ShareA, g.InA = ta.Guest.Count, ta.Guest.Avg(), ta.GuestShare, ta.Guest.Count > 0
	g.CountB, g.AvgB, g.ShareB, g.InB = tb.Guest.Count, tb.Guest.Avg(), tb.GuestShare, tb.Guest.Count > 0
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

// WriteDiff prints Diff(a, b) as a table: per row the count, average and
// share of time in each run and how they changed.
func WriteDiff(w io.Writer, a, b Snapshot) error {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "type\tcount A\tcount B\tchange\tavg A(us)\tavg B(us)\tchange\t% A\t% B\t")
	for _, d := range Diff(a, b) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.3f\t%.3f\t%s\t%.2f\t%.2f\t\n",
			printableName(d.Name), d.CountA, d.CountB, change(float64(d.CountA), float64(d.CountB)),
			d.AvgA/1e3, d.AvgB/1e3, change(d.AvgA, d.AvgB), d.ShareA*100, d.ShareB*100)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, sb.String())
	return err
}
