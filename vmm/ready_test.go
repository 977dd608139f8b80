package vmm

import (
	"bytes"
	"io"
	"testing"
	"time"
)

func newTestWatcher(out io.Writer) (*readyWatcher, *VM) {
	vm := &VM{start: time.Now().Add(-time.Second)}
	return &readyWatcher{vm: vm, out: out, marker: DefaultReadyMarker}, vm
}

// The marker is found wherever the writes split it.
func TestReadyWatcherSplitMarker(t *testing.T) {
	text := []byte("boot noise\n" + DefaultReadyMarker + "\nmore")
	for cut1 := 0; cut1 <= len(text); cut1++ {
		for cut2 := cut1; cut2 <= len(text); cut2++ {
			var out bytes.Buffer
			w, vm := newTestWatcher(&out)
			for _, p := range [][]byte{text[:cut1], text[cut1:cut2], text[cut2:]} {
				w.Write(p)
			}
			if vm.ReadyAfter() == 0 {
				t.Fatalf("marker split at %d and %d not seen", cut1, cut2)
			}
			if !bytes.Equal(out.Bytes(), text) {
				t.Fatalf("output %q, want %q", out.Bytes(), text)
			}
		}
	}
	// Byte by byte, and a near miss.
	w, vm := newTestWatcher(io.Discard)
	for _, c := range []byte(DefaultReadyMarker[:len(DefaultReadyMarker)-1] + "x" + DefaultReadyMarker) {
		w.Write([]byte{c})
	}
	if vm.ReadyAfter() == 0 {
		t.Error("marker written a byte at a time not seen")
	}
	w, vm = newTestWatcher(io.Discard)
	w.Write([]byte(DefaultReadyMarker[:len(DefaultReadyMarker)-1]))
	w.Write([]byte("x" + DefaultReadyMarker[len(DefaultReadyMarker)-1:]))
	if vm.ReadyAfter() != 0 {
		t.Error("a near miss counted as the marker")
	}
}

// Scanning keeps a window of the marker's size, not the output: a guest
// that hands the console all of its RAM in one write (and never prints
// the marker) does not make govmm hold a copy of it.
func TestReadyWatcherMemoryBounded(t *testing.T) {
	w, vm := newTestWatcher(io.Discard)
	big := bytes.Repeat([]byte{'A'}, 64<<20)
	for range 4 {
		w.Write(big)
		w.Write([]byte("x"))
	}
	if vm.ReadyAfter() != 0 {
		t.Fatal("marker seen in output without it")
	}
	if c := cap(w.tail); c > 4*len(DefaultReadyMarker) {
		t.Errorf("watcher holds %d bytes after 256 MiB of output, want at most %d", c, 4*len(DefaultReadyMarker))
	}
	w.Write(append(big[:1<<20:1<<20], DefaultReadyMarker...))
	if vm.ReadyAfter() == 0 {
		t.Error("marker at the end of a large write not seen")
	}
}
