//go:build amd64 && !race

package exitstats

import "sync/atomic"

// word is one field of a counter. Its only writer is the vCPU thread, inside
// a sequence-lock write section, so a store needs no locked instruction: a
// plain MOV is enough, because x86-64 keeps stores in program order (TSO)
// and gc emits stores in program order (they are chained through its SSA
// memory state); the counter updates between the two stores of the
// sequence number are calls, so neither store of it is dead to the
// compiler. (Checked with -gcflags=-S: RecordExit stores seq twice.) Readers load with atomic.LoadUint64, a plain
// MOV on amd64 that the compiler may not reorder either, and the sequence
// number tells them whether what they loaded was one consistent state.
//
// Built with -race, word_race.go stores atomically instead, so that the race
// detector, which cannot see a sequence lock, is not told of races the lock
// already resolves.
type word struct{ v uint64 }

func (w *word) load() uint64   { return atomic.LoadUint64(&w.v) }
func (w *word) store(x uint64) { w.v = x }
