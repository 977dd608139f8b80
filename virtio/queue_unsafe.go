package virtio

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// The ring index words are shared with a guest driver running on another
// CPU, so they are accessed with sync/atomic: that orders them against
// the plain accesses to descriptors and ring entries around them (acquire
// on load, a full barrier on store), and tells the race detector about
// the hand-off in tests where a Go slice stands in for guest RAM.
//
// Go has no 16-bit atomics, so each 16-bit index is accessed through the
// aligned 32-bit word that contains it; the callers make sure the whole
// word lies inside the ring and that the device may write all of it.

// bigEndianHost is true on a big-endian host, where a native 32-bit load
// of little-endian guest memory needs swapping.
var bigEndianHost = binary.NativeEndian.Uint16([]byte{1, 0}) != 1

// aligned4 reports whether b starts on a 4-byte boundary in host memory,
// the precondition of atomicLoad32 and atomicStore32.
func aligned4(b []byte) bool {
	return len(b) >= 4 && uintptr(unsafe.Pointer(&b[0]))%4 == 0
}

// atomicLoad32 loads the little-endian word at b[0:4]; aligned4(b) must
// hold.
func atomicLoad32(b []byte) uint32 {
	v := atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[0])))
	if bigEndianHost {
		v = bits.ReverseBytes32(v)
	}
	return v
}

// atomicStore32 stores v little-endian at b[0:4]; aligned4(b) must hold.
func atomicStore32(b []byte, v uint32) {
	if bigEndianHost {
		v = bits.ReverseBytes32(v)
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&b[0])), v)
}
