package virtio

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The Linux AIO system calls, which x/sys/unix does not wrap. The kernel
// reads the iocbs and their iovec arrays during io_submit only; both live
// in a blkAIO's slots, in the Go heap, which does not move.

func ioSetup(nr int, ctx *uint64) error {
	if _, _, e := unix.Syscall(unix.SYS_IO_SETUP, uintptr(nr), uintptr(unsafe.Pointer(ctx)), 0); e != 0 {
		return e
	}
	return nil
}

func ioDestroy(ctx uint64) error {
	if _, _, e := unix.Syscall(unix.SYS_IO_DESTROY, uintptr(ctx), 0, 0); e != 0 {
		return e
	}
	return nil
}

// ioSubmit submits cbs and returns how many the kernel took.
func ioSubmit(ctx uint64, cbs []*iocb) (int, error) {
	n, _, e := unix.Syscall(unix.SYS_IO_SUBMIT, uintptr(ctx), uintptr(len(cbs)), uintptr(unsafe.Pointer(&cbs[0])))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// ioGetEvents collects the completions there are, without waiting.
func ioGetEvents(ctx uint64, events []ioEvent) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	var now unix.Timespec // zero: do not wait
	// It cannot wait: raw, as internal/nbsys explains.
	n, _, e := unix.RawSyscall6(unix.SYS_IO_GETEVENTS, uintptr(ctx), 0, uintptr(len(events)),
		uintptr(unsafe.Pointer(&events[0])), uintptr(unsafe.Pointer(&now)), 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// iovecAddress is the address of iov's first element, for an iocb.
func iovecAddress(iov []unix.Iovec) uint64 { return uint64(uintptr(unsafe.Pointer(&iov[0]))) }
