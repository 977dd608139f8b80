package vmm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mincore reports which pages of b are resident (x/sys/unix has no
// wrapper for it).
func mincore(b, vec []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}
