package virtio

import "unsafe"

// addressOf is where b starts in host memory, for O_DIRECT's alignment
// rules; b must not be empty.
func addressOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

// alignedBuffer returns n bytes starting on a multiple of align (a power
// of two) in host memory, cut from a Go allocation so that the garbage
// collector owns it.
func alignedBuffer(n, align int) []byte {
	b := make([]byte, n+align)
	skip := int(-addressOf(b) & uintptr(align-1))
	return b[skip : skip+n : skip+n]
}
