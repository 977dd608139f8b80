// Package nbsys makes the system calls of govmm's I/O hot paths, on
// descriptors that never block, without telling Go's scheduler.
//
// syscall.Syscall, which os.File and x/sys/unix use, brackets every call
// with the runtime's entersyscall and exitsyscall, and entersyscall wakes
// the runtime's monitor thread (sysmon) whenever it finds every P idle.
// A VMM is idle in exactly that way between two guest requests: its vCPU
// threads sit in KVM_RUN (their Ps handed off), its device goroutines in
// the netpoller. So the first system call of a request (the notification
// eventfd's read, the tap's readv) paid a futex wake-up of sysmon on the
// request's path, and sysmon then napped 20 us at a time until the VMM
// was idle again, on the cores the vCPUs need (a perf trace of a block
// benchmark: 1,800 such wake-ups a second, from entersyscallWakeSysmon).
// A call that cannot block needs none of that: RawSyscall keeps the P
// for the microseconds the call takes.
//
// Use these only on descriptors that are non-blocking (O_NONBLOCK taps,
// eventfds opened EFD_NONBLOCK): a call that blocks here would hold its P
// and stall the goroutines queued on it. Reads and writes of disk images
// can block, and keep going through the scheduler.
package nbsys

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read is read(2) on a non-blocking descriptor.
func Read(fd int, p []byte) (int, error) {
	return rw(unix.SYS_READ, fd, p)
}

// Write is write(2) on a non-blocking descriptor.
func Write(fd int, p []byte) (int, error) {
	return rw(unix.SYS_WRITE, fd, p)
}

// Readv is readv(2) on a non-blocking descriptor; iovs is scratch space
// for the iovec array (it is reused when it has room).
func Readv(fd int, bufs [][]byte, iovs *[]unix.Iovec) (int, error) {
	return rwv(unix.SYS_READV, fd, bufs, iovs)
}

// Writev is writev(2) on a non-blocking descriptor; iovs as for Readv.
func Writev(fd int, bufs [][]byte, iovs *[]unix.Iovec) (int, error) {
	return rwv(unix.SYS_WRITEV, fd, bufs, iovs)
}

func rw(trap uintptr, fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	return raw(trap, fd, ptr, len(p))
}

func rwv(trap uintptr, fd int, bufs [][]byte, scratch *[]unix.Iovec) (int, error) {
	iovs := (*scratch)[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iovs = append(iovs, v)
	}
	*scratch = iovs
	var ptr unsafe.Pointer
	if len(iovs) > 0 {
		ptr = unsafe.Pointer(&iovs[0])
	}
	n, err := raw(trap, fd, ptr, len(iovs))
	// The kernel is done with the buffers: drop the scratch array's
	// references so it does not keep them alive.
	clear(iovs)
	return n, err
}

// raw makes the call, again after EINTR as os.File does (a call that
// does not wait hardly sees one).
func raw(trap uintptr, fd int, ptr unsafe.Pointer, n int) (int, error) {
	for {
		r, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(ptr), uintptr(n))
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
		default:
			return 0, e
		}
	}
}
