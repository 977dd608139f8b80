package exitstats

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// tableHeader names the columns; times are in microseconds, p50 and p99
// are the median and 99th percentile (from the row's histogram, to three
// significant digits, its precision), and % is the share of the block's
// time (exit rows plus TIMEINGUEST).
var tableHeader = []string{"type", "count", "min(us)", "max(us)", "sum(us)", "avg(us)", "stddev(us)", "p50(us)", "p99(us)", "%"}

// WriteTable prints s in the layout of the PowerPC KVM exit-timing tables:
// with one vCPU a single block; with more, a block for all vCPUs combined
// followed by one block per vCPU. Each block lists the exit rows by share
// of time descending, then TIMEINGUEST, then TOTAL, the exit rows merged.
func (s Snapshot) WriteTable(w io.Writer) error {
	var b strings.Builder
	if len(s.VCPUs) == 1 {
		writeBlock(&b, fmt.Sprintf("vCPU %d", s.VCPUs[0].ID), s.VCPUs[0])
	} else {
		writeBlock(&b, fmt.Sprintf("all vCPUs (%d)", len(s.VCPUs)), s.Total())
		for _, v := range s.VCPUs {
			b.WriteByte('\n')
			writeBlock(&b, fmt.Sprintf("vCPU %d", v.ID), v)
		}
	}
	// One write keeps a failing writer from leaving half a table behind
	// without an error for the other half.
	_, err := io.WriteString(w, b.String())
	return err
}

func writeBlock(b *strings.Builder, title string, v VCPUSnapshot) {
	// Derive shares here too: a VCPUSnapshot built by hand may lack them.
	v.Rows = append([]Row(nil), v.Rows...)
	v.finish()
	exits := v.Exits()
	exitShare := 0.0
	for _, r := range v.Rows {
		exitShare += r.Share
	}

	cells := [][]string{tableHeader}
	for _, r := range v.Rows {
		cells = append(cells, tableLine(printableName(r.Name), r.Stats, r.Share))
	}
	cells = append(cells,
		tableLine(GuestName, v.Guest, v.GuestShare),
		tableLine(TotalName, exits, exitShare))

	var aligned strings.Builder
	writeCells(&aligned, title, cells, 1)
	// The title, the header, then one line per exit row, each followed
	// by the row's top call sites.
	for i, line := range strings.SplitAfter(aligned.String(), "\n") {
		b.WriteString(line)
		if r := i - 2; r >= 0 && r < len(v.Rows) {
			writeTopRIPs(b, v.Rows[r])
		}
	}
}

// tableRIPs is how many of a row's top RIPs the table shows; the JSON
// carries all of them.
const tableRIPs = 3

// writeTopRIPs prints, under a row, the guest RIPs that caused most of its
// exits, each with its share of the row's exits (SiteLine).
func writeTopRIPs(b *strings.Builder, r Row) {
	for _, rip := range r.TopRIPs[:min(len(r.TopRIPs), tableRIPs)] {
		share := 0.0
		if r.Count > 0 {
			share = float64(rip.Count) / float64(r.Count)
		}
		b.WriteString(SiteLine(share, rip.Exact(), rip.Where()))
	}
}

// SiteLine formats one call site printed under a table row: its share
// (0 to 1, capped at 1) of the row's exits, marked "<=" where it is only
// an upper bound (see RIPCount), and where it is.
func SiteLine(share float64, exact bool, where string) string {
	pct := strconv.FormatFloat(min(share, 1)*100, 'f', 1, 64) + "%"
	if !exact {
		pct = "<=" + pct
	}
	return fmt.Sprintf("  %8s  %s\n", pct, printableName(where))
}

// writeCells prints a title line and then cells as aligned columns: the
// first leftCols columns (names) left-aligned, the rest (numbers)
// right-aligned. Every line of cells must have as many cells as the first.
func writeCells(b *strings.Builder, title string, cells [][]string, leftCols int) {
	width := make([]int, len(cells[0]))
	for _, line := range cells {
		for i, c := range line {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	b.WriteString(title)
	b.WriteByte('\n')
	for _, line := range cells {
		for i, c := range line {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i > 0 {
				b.WriteString("  ")
			}
			if i < leftCols {
				b.WriteString(c)
				b.WriteString(pad)
				continue
			}
			b.WriteString(pad)
			b.WriteString(c)
		}
		b.WriteByte('\n')
	}
}

func tableLine(name string, s Stats, share float64) []string {
	return []string{
		name,
		strconv.FormatUint(s.Count, 10),
		usec(s.Min),
		usec(s.Max),
		usec(s.Sum),
		usecFloat(s.Avg()),
		usecFloat(s.Stddev()),
		percentileCell(&s, 50),
		percentileCell(&s, 99),
		strconv.FormatFloat(share*100, 'f', 2, 64),
	}
}

// percentileCell formats the p-th percentile in us to three significant
// digits, "-" where the row has none (no exits, or read from JSON saved
// before the histogram existed).
func percentileCell(s *Stats, p float64) string {
	ns, ok := s.Percentile(p)
	if !ok {
		return "-"
	}
	return ApproxMicros(ns)
}

// ApproxMicros formats ns as microseconds to three significant digits
// (more left of the point): a percentile is only that precise
// (finebuckets.go).
func ApproxMicros(ns uint64) string {
	us := float64(ns) / 1e3
	decimals := 0
	switch {
	case us < 1:
		decimals = 3
	case us < 10:
		decimals = 2
	case us < 100:
		decimals = 1
	}
	return strconv.FormatFloat(us, 'f', decimals, 64)
}

// usec formats ns as microseconds with integer arithmetic, so large sums
// print exactly rather than rounded through a float64.
func usec(ns uint64) string {
	return fmt.Sprintf("%d.%03d", ns/1000, ns%1000)
}

func usecFloat(ns float64) string {
	return strconv.FormatFloat(ns/1000, 'f', 3, 64)
}

// printableName keeps each row on one line and each name one
// whitespace-separated field, so the table stays aligned and parseable
// whatever the name holds (names may come from a hand-edited JSON file).
func printableName(name string) string {
	if name == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return '_'
		}
		return r
	}, name)
}
