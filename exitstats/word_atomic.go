//go:build !amd64 || race

package exitstats

import "sync/atomic"

// word, where stores must be atomic to be ordered (other architectures) or
// to be seen as synchronized (the race detector): see word.go.
type word struct{ v uint64 }

func (w *word) load() uint64   { return atomic.LoadUint64(&w.v) }
func (w *word) store(x uint64) { atomic.StoreUint64(&w.v, x) }
