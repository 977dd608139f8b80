package exitstats

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// pctCol is the column of the share of time.
const pctCol = 9

// block is one parsed block of WriteTable's output.
type block struct {
	title string
	lines [][]string // fields of each line after the header
	raw   []string
}

func parseTable(t *testing.T, out string) []block {
	t.Helper()
	var blocks []block
	for chunk := range strings.SplitSeq(strings.TrimRight(out, "\n"), "\n\n") {
		lines := strings.Split(chunk, "\n")
		if len(lines) < 4 {
			t.Fatalf("short block:\n%s", chunk)
		}
		if f := strings.Fields(lines[1]); strings.Join(f, " ") != strings.Join(tableHeader, " ") {
			t.Fatalf("header = %q", lines[1])
		}
		b := block{title: lines[0], raw: lines[1:]}
		for _, l := range lines[2:] {
			b.lines = append(b.lines, strings.Fields(l))
		}
		blocks = append(blocks, b)
	}
	return blocks
}

func TestWriteTable(t *testing.T) {
	r := NewRegistry()
	serial, blk, hlt, intr := r.Kind("IO:serial"), r.Kind("MMIO:virtio-blk"), r.Kind("HLT"), r.Kind("INTR")
	r.Kind("SHUTDOWN") // registered, never hit: must not be printed
	v0, v1 := r.NewVCPU(0), r.NewVCPU(1)
	for _, ns := range []uint64{1000, 2000, 3000} {
		v0.Record(serial, ns)
	}
	v0.Record(blk, 50000)
	v0.RecordGuest(1_000_000)
	v1.Record(hlt, 400_000)
	v1.Record(intr, 7)
	v1.Record(serial, 1500)
	v1.RecordGuest(2_000_000)

	var out bytes.Buffer
	if err := r.Snapshot().WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	blocks := parseTable(t, out.String())

	wantTitles := []string{"all vCPUs (2)", "vCPU 0", "vCPU 1"}
	wantRows := [][]string{
		{"HLT", "MMIO:virtio-blk", "IO:serial", "INTR"},
		{"MMIO:virtio-blk", "IO:serial"},
		{"HLT", "IO:serial", "INTR"},
	}
	if len(blocks) != len(wantTitles) {
		t.Fatalf("%d blocks, want %d", len(blocks), len(wantTitles))
	}
	for i, b := range blocks {
		if b.title != wantTitles[i] {
			t.Errorf("block %d title = %q, want %q", i, b.title, wantTitles[i])
		}
		n := len(b.lines)
		rows, guest, total := b.lines[:n-2], b.lines[n-2], b.lines[n-1]
		if guest[0] != GuestName || total[0] != TotalName {
			t.Errorf("%s: last lines are %q and %q", b.title, guest[0], total[0])
		}
		var count uint64
		var pct float64
		prevPct := 101.0
		for j, l := range rows {
			if j >= len(wantRows[i]) || l[0] != wantRows[i][j] {
				t.Errorf("%s: row %d is %q, want rows %q", b.title, j, l[0], wantRows[i])
				continue
			}
			c, err := strconv.ParseUint(l[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			count += c
			p, _ := strconv.ParseFloat(l[pctCol], 64)
			if p > prevPct {
				t.Errorf("%s: %s at %v%% follows a smaller share", b.title, l[0], p)
			}
			prevPct = p
			pct += p
		}
		if len(rows) != len(wantRows[i]) {
			t.Errorf("%s: %d rows, want %d", b.title, len(rows), len(wantRows[i]))
		}
		if total[1] != strconv.FormatUint(count, 10) {
			t.Errorf("%s: TOTAL count %s, rows add up to %d", b.title, total[1], count)
		}
		gp, _ := strconv.ParseFloat(guest[pctCol], 64)
		tp, _ := strconv.ParseFloat(total[pctCol], 64)
		if d := gp + tp - 100; d > 0.011 || d < -0.011 {
			t.Errorf("%s: TIMEINGUEST %v%% + TOTAL %v%% != 100", b.title, gp, tp)
		}
		for _, l := range b.raw {
			if utf8.RuneCountInString(l) != utf8.RuneCountInString(b.raw[0]) {
				t.Errorf("%s: line %q not as wide as header %q", b.title, l, b.raw[0])
			}
		}
	}

	// Exact figures for vCPU 0: serial 1, 2, 3 us; blk 50 us; guest 1000 us.
	// The serial median is the middle of its bucket, (1.9, 2.0] us; each
	// other percentile is a row's only value or its max.
	want := map[string]string{
		"IO:serial":       "IO:serial 3 1.000 3.000 6.000 2.000 0.816 1.95 3.00 0.57",
		"MMIO:virtio-blk": "MMIO:virtio-blk 1 50.000 50.000 50.000 50.000 0.000 50.0 50.0 4.73",
		GuestName:         "TIMEINGUEST 1 1000.000 1000.000 1000.000 1000.000 0.000 1000 1000 94.70",
		TotalName:         "TOTAL 4 1.000 50.000 56.000 14.000 20.797 1.95 50.0 5.30",
	}
	for _, l := range blocks[1].lines {
		if w, ok := want[l[0]]; ok && strings.Join(l, " ") != w {
			t.Errorf("vCPU 0 line %q, want %q", strings.Join(l, " "), w)
		}
	}
}

func TestWriteTableShapes(t *testing.T) {
	tests := []struct {
		name   string
		snap   Snapshot
		titles []string
	}{
		{"no vCPUs", Snapshot{}, []string{"all vCPUs (0)"}},
		{"one vCPU", Snapshot{VCPUs: []VCPUSnapshot{{ID: 4}}}, []string{"vCPU 4"}},
		{"odd names", Snapshot{VCPUs: []VCPUSnapshot{{ID: 0, Rows: []Row{
			{Name: "", Stats: Stats{Count: 1, Sum: 1}},
			{Name: "a b\tc\nd", Stats: Stats{Count: 2, Sum: 2}},
			{Name: "ünï", Stats: Stats{Count: 3, Sum: 3}},
		}}}}, []string{"vCPU 0"}},
		{"hand-made nonsense", Snapshot{VCPUs: []VCPUSnapshot{{ID: 0, Rows: []Row{
			{Name: "x", Stats: Stats{Count: 0, Sum: 5, SumSq: -1}, Share: 7},
		}, Guest: Stats{Count: 1, Sum: 0}}}}, []string{"vCPU 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := tt.snap.WriteTable(&out); err != nil {
				t.Fatal(err)
			}
			blocks := parseTable(t, out.String())
			if len(blocks) != len(tt.titles) {
				t.Fatalf("%d blocks, want %d:\n%s", len(blocks), len(tt.titles), out.String())
			}
			for i, b := range blocks {
				if b.title != tt.titles[i] {
					t.Errorf("title %q, want %q", b.title, tt.titles[i])
				}
				for _, l := range b.lines {
					if len(l) != len(tableHeader) {
						t.Errorf("line %q has %d fields, want %d", l, len(l), len(tableHeader))
					}
				}
			}
		})
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteTableError(t *testing.T) {
	if err := (Snapshot{}).WriteTable(failWriter{}); err == nil {
		t.Error("WriteTable to a failing writer returned nil")
	}
}

func TestUsecApprox(t *testing.T) {
	for ns, want := range map[uint64]string{
		0: "0.000", 482: "0.482", 7063: "7.06", 45_210: "45.2", 1_234_567: "1235", 99_960: "100.0",
	} {
		if got := ApproxMicros(ns); got != want {
			t.Errorf("ApproxMicros(%d) = %q, want %q", ns, got, want)
		}
	}
}

// A row without a histogram (read from an old JSON file) prints "-" for
// its percentiles rather than a made-up figure.
func TestWriteTableWithoutHistogram(t *testing.T) {
	s := Snapshot{VCPUs: []VCPUSnapshot{{ID: 0, Rows: []Row{{Name: "HLT", Stats: Stats{Count: 2, Min: 5, Max: 9, Sum: 14}}}}}}
	var out bytes.Buffer
	if err := s.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	l := parseTable(t, out.String())[0].lines[0]
	if l[0] != "HLT" || l[7] != "-" || l[8] != "-" {
		t.Errorf("line %q, want - for p50 and p99", l)
	}
}
