package main

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The environment knobs every benchmark reads (BLK_, NET_, SEMTEST_,
// KBUILD_ ...): one parser each, failing the benchmark on a bad value.

// envDuration reads a duration knob (def when unset).
func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		b.Fatalf("%s=%q: want a duration of at least 1s (such as 8s)", name, v)
	}
	return d
}

// envRegexp reads a filter (nil when unset).
func envRegexp(b *testing.B, name string) *regexp.Regexp {
	v := os.Getenv(name)
	if v == "" {
		return nil
	}
	re, err := regexp.Compile(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return re
}

// envPick keeps the items whose name matches the regular expression in
// environment variable env (every item when it is unset), and fails b
// when none is left: a filter that matches nothing is a typo.
func envPick[T any](b *testing.B, env string, items []T, name func(T) string) []T {
	b.Helper()
	re := envRegexp(b, env)
	var kept []T
	for _, it := range items {
		if re == nil || re.MatchString(name(it)) {
			kept = append(kept, it)
		}
	}
	if len(kept) == 0 {
		b.Fatalf("%s=%q matches nothing", env, os.Getenv(env))
	}
	return kept
}

// withoutQEMU drops the variants of kind "qemu" when QEMU is missing.
func withoutQEMU[T any](variants []T, kind func(T) string, qemuErr error) []T {
	if qemuErr == nil {
		return variants
	}
	return slices.DeleteFunc(variants, func(v T) bool { return kind(v) == "qemu" })
}

// benchEnvInt reads a benchmark's size or count from the environment
// (def when unset), with an optional k or m suffix; anything else fails
// the benchmark.
func benchEnvInt(b *testing.B, name string, def int64) int64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "k"), strings.HasSuffix(v, "K"):
		mult, v = 1<<10, v[:len(v)-1]
	case strings.HasSuffix(v, "m"), strings.HasSuffix(v, "M"):
		mult, v = 1<<20, v[:len(v)-1]
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		b.Fatalf("%s=%q: want a non-negative number (k or m suffix allowed)", name, os.Getenv(name))
	}
	return n * mult
}
