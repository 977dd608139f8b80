// Package testenv holds what govmm's tests and benchmarks share: a
// console buffer that can be read while a guest writes it, sparse files
// far larger than a guest, short temporary directories for sockets, the
// JSON shapes that conformance tests compare (jsonshape.go), the rounds,
// medians and spreads that benchmarks report (bench.go), and a check
// that a server closed a connection (net.go).
package testenv

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// SyncBuffer is an io.Writer that tests may read while a guest writes it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Median of xs (0 for none); xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// SparseFile writes head at the start of a file of size bytes in a fresh
// temporary directory; the rest is a hole, so a file far larger than the
// disk costs nothing.
func SparseFile(t testing.TB, name string, head []byte, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, head, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// ShortTempDir is a temporary directory, removed when the test ends, whose
// path is short and plain: a unix socket's sun_path holds 108 bytes, which
// t.TempDir under a long test name can exceed, and QEMU's and govmm's
// option syntax splits at the commas a subtest name may hold.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "govmm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
