// Package scratch maps large, short-lived buffers outside the Go heap.
// A buffer in the heap stays resident after its last use until a garbage
// collection frees it and the scavenger returns its pages, and a heap that
// grew for it keeps the collector's metadata; an unmapped one is gone at
// once.
package scratch

import "golang.org/x/sys/unix"

// Map maps n bytes of zeroed memory outside the Go heap, for Unmap to
// hand back whole. Its pages cost nothing until touched.
func Map(n int) ([]byte, error) {
	m, err := unix.Mmap(-1, 0, max(n, 1), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, err
	}
	return m[:n], nil
}

// Unmap unmaps what Map returned; nil is nothing to do. Nothing may use
// b after it.
func Unmap(b []byte) {
	if b != nil {
		unix.Munmap(b[:cap(b)])
	}
}
