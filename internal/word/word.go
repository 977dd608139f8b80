//go:build amd64 && !race

// Package word is a uint64 with one writer: stores that need no locked
// instruction, loads any goroutine may make. Sequence locks (exitstats'
// counters, exittrace's rings) are built from it.
package word

import "sync/atomic"

// Word is one field written by a single goroutine, inside a sequence-lock
// write section, so a store needs no locked instruction: a plain MOV is
// enough, because x86-64 keeps stores in program order (TSO) and gc emits
// stores in program order (they are chained through its SSA memory
// state); the updates between the two stores of a sequence number are
// calls, so neither store of it is dead to the compiler. (Checked with
// -gcflags=-S: exitstats' RecordExit stores seq twice.) Readers Load with
// atomic.LoadUint64, a plain MOV on amd64 that the compiler may not
// reorder either, and the sequence number tells them whether what they
// loaded was one consistent state.
//
// Built with -race, word_atomic.go stores atomically instead, so that the
// race detector, which cannot see a sequence lock, is not told of races
// the lock already resolves.
type Word struct{ v uint64 }

// Load reads the word; any goroutine may call it.
func (w *Word) Load() uint64 { return atomic.LoadUint64(&w.v) }

// Store writes the word; only its single writer may call it.
func (w *Word) Store(x uint64) { w.v = x }

// CompareAndSwap is the atomic compare-and-swap, for a writer that must
// first win the word from other would-be writers.
func (w *Word) CompareAndSwap(old, new uint64) bool {
	return atomic.CompareAndSwapUint64(&w.v, old, new)
}
