package sandbox

import (
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// loadFilter installs a BPF program with seccomp(SECCOMP_SET_MODE_FILTER,
// flags) and returns the listener fd when flags ask for one.
func loadFilter(raw []bpf.RawInstruction, flags uintptr) (int, error) {
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	fd, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog)))
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// seccompNotif is struct seccomp_notif (linux/seccomp.h), 80 bytes.
type seccompNotif struct {
	id    uint64
	pid   uint32 // thread ID of the caller
	flags uint32
	nr    int32 // struct seccomp_data from here
	arch  uint32
	ip    uint64
	args  [6]uint64
}

// notification is what the supervisor needs of one.
type notification struct {
	nr   int32
	arch uint32
	pid  uint32
}

// receive blocks until a filtered call arrives on the listener fd.
func receive(fd int) (notification, error) {
	var n seccompNotif // the kernel wants it zeroed
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return notification{}, e
	}
	return notification{nr: n.nr, arch: n.arch, pid: n.pid}, nil
}
