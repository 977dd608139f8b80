package testenv

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
)

// The benchmarks that compare VMMs run every variant once per round, many
// rounds inside one benchmark iteration, and report each variant as a
// Summary: the median with the spread and the number of rounds behind it,
// and how many runs failed. What they share lives here.

// Order is the order in which round r (from 0) runs n variants: the list
// rotated by r. Over n rounds every variant runs once in every position, so
// none always runs first, last, or right after the same neighbour; drift in
// the host's load during a round then spreads over all variants instead of
// always favouring the same ones.
func Order(r, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = (r + i) % n
	}
	return out
}

// Rounds reads the number of rounds from the environment variable env
// (def when unset) and fails the benchmark on anything but a positive
// integer. Benchmarks run their rounds inside one iteration, because with
// -benchtime Nx the testing package first runs b.N = 1 and would print a
// table from a single round.
func Rounds(b testing.TB, env string, def int) int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number of rounds", env, v)
	}
	return n
}

// RunRounds runs rounds rounds of n variants, each round in Order, and
// returns the number of failed runs of each variant. A run that returns an
// error is logged and counted, and the rounds go on: one failed boot must
// neither vanish from the report nor throw away the other runs.
func RunRounds(b testing.TB, rounds, n int, names func(v int) string, run func(round, v int) error) (failed []int) {
	failed = make([]int, n)
	for r := range rounds {
		for _, v := range Order(r, n) {
			if err := run(r, v); err != nil {
				failed[v]++
				b.Logf("round %d, %s failed: %v", r+1, names(v), err)
			}
		}
	}
	return failed
}

// Summary describes the samples of one variant.
type Summary struct {
	N        int     // samples behind the median
	Failed   int     // runs that gave no sample
	Median   float64 // 0 when N is 0
	Min, Max float64 // the spread
}

// Summarize returns the summary of xs and failed runs; xs is not modified.
func Summarize(xs []float64, failed int) Summary {
	s := Summary{N: len(xs), Failed: failed, Median: Median(xs)}
	if len(xs) > 0 {
		s.Min, s.Max = slices.Min(xs), slices.Max(xs)
	}
	return s
}

// Format prints the median with verb (such as "%.3f"), then the spread and
// n: "0.246 (0.240-0.260, n=5)", "0.246 (n=1)", "- (n=0, 3 failed)". A
// table that prints this beside every median lets its reader see which
// differences exceed the noise.
func (s Summary) Format(verb string) string {
	if s.N == 0 {
		return fmt.Sprintf("- (n=0%s)", s.failures())
	}
	med := fmt.Sprintf(verb, s.Median)
	if s.N == 1 {
		return fmt.Sprintf("%s (n=1%s)", med, s.failures())
	}
	return fmt.Sprintf("%s (%s-%s, n=%d%s)", med, fmt.Sprintf(verb, s.Min), fmt.Sprintf(verb, s.Max), s.N, s.failures())
}

func (s Summary) failures() string {
	if s.Failed == 0 {
		return ""
	}
	return fmt.Sprintf(", %d failed", s.Failed)
}

// Overlaps reports whether the spreads of s and o overlap: a difference
// between their medians is then within the noise of these rounds.
func (s Summary) Overlaps(o Summary) bool {
	return s.N > 0 && o.N > 0 && s.Min <= o.Max && o.Min <= s.Max
}
