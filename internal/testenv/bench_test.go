package testenv

import (
	"errors"
	"slices"
	"testing"
)

func TestOrderRotates(t *testing.T) {
	const n = 4
	if got := Order(0, n); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("round 0: %v", got)
	}
	if got := Order(5, n); !slices.Equal(got, []int{1, 2, 3, 0}) {
		t.Errorf("round 5: %v", got)
	}
	// Over n rounds each variant takes each position once.
	seen := map[[2]int]int{}
	for r := range n {
		o := Order(r, n)
		if s := slices.Sorted(slices.Values(o)); !slices.Equal(s, []int{0, 1, 2, 3}) {
			t.Fatalf("round %d is not a permutation: %v", r, o)
		}
		for pos, v := range o {
			seen[[2]int{v, pos}]++
		}
	}
	for v := range n {
		for pos := range n {
			if seen[[2]int{v, pos}] != 1 {
				t.Errorf("variant %d ran %d times at position %d", v, seen[[2]int{v, pos}], pos)
			}
		}
	}
}

func TestRunRoundsCountsFailures(t *testing.T) {
	var ran []int
	failed := RunRounds(t, 3, 3, func(v int) string { return []string{"a", "b", "c"}[v] }, func(r, v int) error {
		ran = append(ran, v)
		if v == 1 && r != 2 {
			return errors.New("boom")
		}
		return nil
	})
	if !slices.Equal(failed, []int{0, 2, 0}) {
		t.Errorf("failed = %v, want [0 2 0]", failed)
	}
	if want := []int{0, 1, 2, 1, 2, 0, 2, 0, 1}; !slices.Equal(ran, want) {
		t.Errorf("ran %v, want %v (rotated rounds, none skipped after a failure)", ran, want)
	}
}

func TestSummarize(t *testing.T) {
	xs := []float64{3, 1, 2, 10}
	s := Summarize(xs, 1)
	if s != (Summary{N: 4, Failed: 1, Median: 2.5, Min: 1, Max: 10}) {
		t.Errorf("Summarize = %+v", s)
	}
	if !slices.Equal(xs, []float64{3, 1, 2, 10}) {
		t.Errorf("Summarize modified its input: %v", xs)
	}
	for _, tc := range []struct {
		s    Summary
		want string
	}{
		{s, "2.50 (1.00-10.00, n=4, 1 failed)"},
		{Summarize([]float64{0.5}, 0), "0.50 (n=1)"},
		{Summarize(nil, 3), "- (n=0, 3 failed)"},
		{Summarize(nil, 0), "- (n=0)"},
	} {
		if got := tc.s.Format("%.2f"); got != tc.want {
			t.Errorf("Format = %q, want %q", got, tc.want)
		}
	}
}

func TestOverlaps(t *testing.T) {
	a := Summarize([]float64{10, 11, 12}, 0)
	for _, tc := range []struct {
		xs   []float64
		want bool
	}{
		{[]float64{12, 13}, true},
		{[]float64{9, 10}, true},
		{[]float64{12.5, 14}, false},
		{nil, false},
	} {
		if got := a.Overlaps(Summarize(tc.xs, 0)); got != tc.want {
			t.Errorf("Overlaps(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(tc.xs); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}
