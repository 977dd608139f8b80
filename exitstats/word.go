package exitstats

import sw "github.com/govmm/govmm/internal/word"

// word is one field of a counter, written only by the vCPU thread inside a
// sequence-lock write section: plain stores on amd64 (see sw.Word).
type word struct{ w sw.Word }

func (w *word) load() uint64   { return w.w.Load() }
func (w *word) store(x uint64) { w.w.Store(x) }
