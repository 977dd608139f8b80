package virtio

import (
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// hostHeadroom tells a polling notifier whether the host has a CPU for
// it: whether every runnable task, the poller among them, has one. A
// poll that spins while a vCPU waits for a core takes the core the
// guest needs to produce the request the poll is waiting for (a guest
// at queue depth keeps its vCPUs busy; on a host with as many cores as
// vCPUs the poller then loses them about 5% of their IOPS). The count
// is the kernel's, the fourth field of /proc/loadavg ("runnable/total"):
// one pread, ~0.8 us here.
type hostHeadroom struct {
	open bool // fd is /proc/loadavg; false (the zero value): always spare
	fd   int
	cpus int // CPUs this process may run on
}

// headroom opens /proc/loadavg once, at the first polling transport, so
// before the sandbox closes the file system; the descriptor lives as
// long as the process.
var headroom = sync.OnceValue(func() hostHeadroom {
	fd, err := unix.Open("/proc/loadavg", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	return hostHeadroom{open: err == nil, fd: fd, cpus: runtime.NumCPU()}
})

// spare reports whether the runnable tasks fit on the CPUs. Without the
// count (no /proc) it says yes, as polling always did.
func (h hostHeadroom) spare() bool {
	if !h.open {
		return true
	}
	var buf [128]byte
	n, err := unix.Pread(h.fd, buf[:], 0)
	if err != nil || n <= 0 {
		return true
	}
	runnable, ok := parseRunnable(buf[:n])
	return !ok || runnable <= h.cpus
}

// parseRunnable reads the runnable count from /proc/loadavg's text,
// "0.20 0.53 1.17 3/79 30004": the number before the slash of the fourth
// field.
func parseRunnable(b []byte) (int, bool) {
	field := 0
	for i := 0; i < len(b); i++ {
		if b[i] == ' ' {
			field++
			continue
		}
		if field < 3 {
			continue
		}
		n, digits := 0, 0
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && digits < 9; i++ {
			n = n*10 + int(b[i]-'0')
			digits++
		}
		if digits == 0 || i == len(b) || b[i] != '/' {
			return 0, false
		}
		return n, true
	}
	return 0, false
}
