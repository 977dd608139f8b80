package kvm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl issues one ioctl with an integer argument. It never retries EINTR:
// a caller that wants to re-enter after a signal decides so itself.
func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if e != 0 {
		return r, e
	}
	return r, nil
}

// ioctlPtr issues one ioctl whose argument is a pointer to a Go value. The
// unsafe.Pointer parameter keeps the value alive across the call.
func ioctlPtr(fd int, req uintptr, p unsafe.Pointer) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(p))
	if e != 0 {
		return r, e
	}
	return r, nil
}

// mmapRun maps a vCPU's kvm_run area.
func mmapRun(fd, size int) ([]byte, *Run, error) {
	if size < int(unsafe.Sizeof(Run{})) {
		return nil, nil, unix.EINVAL
	}
	b, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return b, (*Run)(unsafe.Pointer(&b[0])), nil
}

// addressOf returns the user-space address of a mapping, for
// KVM_SET_USER_MEMORY_REGION.
func addressOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
