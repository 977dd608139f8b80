//go:build !amd64 || race

package word

import "sync/atomic"

// Word, where stores must be atomic to be ordered (other architectures) or
// to be seen as synchronized (the race detector): see word.go.
type Word struct{ v uint64 }

// Load reads the word; any goroutine may call it.
func (w *Word) Load() uint64 { return atomic.LoadUint64(&w.v) }

// Store writes the word; only its single writer may call it.
func (w *Word) Store(x uint64) { atomic.StoreUint64(&w.v, x) }

// CompareAndSwap is the atomic compare-and-swap, for a writer that must
// first win the word from other would-be writers.
func (w *Word) CompareAndSwap(old, new uint64) bool {
	return atomic.CompareAndSwapUint64(&w.v, old, new)
}
