package monotime

import (
	"bytes"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rdtsc reads the time-stamp counter (tsc_amd64.s). It is not ordered
// against the instructions around it: the stamps it gives surround
// system calls (KVM_RUN), which serialize.
func rdtsc() uint64

// tscTrusted reports whether the kernel keeps time with the TSC and this
// process may read it (PR_SET_TSC can make RDTSC fault).
func tscTrusted() bool {
	src, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	if err != nil || !bytes.Equal(bytes.TrimSpace(src), []byte("tsc")) {
		return false
	}
	var mode int32
	if _, _, errno := unix.Syscall(unix.SYS_PRCTL, unix.PR_GET_TSC, uintptr(unsafe.Pointer(&mode)), 0); errno != 0 {
		return false
	}
	return mode == unix.PR_TSC_ENABLE
}
