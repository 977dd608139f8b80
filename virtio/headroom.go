package virtio

import (
	"os"
	"runtime"
	"strconv"
	"strings"
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
	cpus int // the host's online CPUs, all of which this process may use
}

// headroom opens /proc/loadavg once, at the first polling transport, so
// before the sandbox closes the file system; the descriptor lives as
// long as the process. The count is the whole host's, so it says
// something about govmm's CPUs only if govmm may run on all of them: a
// process confined to some (taskset, a cpuset) gets the zero value and
// polls as before, rather than stepping aside for tasks on CPUs it
// cannot use.
var headroom = sync.OnceValue(func() hostHeadroom {
	online, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return hostHeadroom{}
	}
	cpus, ok := countCPUList(string(online))
	if !ok || cpus != runtime.NumCPU() {
		return hostHeadroom{}
	}
	fd, err := unix.Open("/proc/loadavg", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return hostHeadroom{}
	}
	return hostHeadroom{open: true, fd: fd, cpus: cpus}
})

// countCPUList counts the CPUs of a kernel CPU list, "0-3,8,10-11\n".
func countCPUList(s string) (int, bool) {
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(s), ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		first, err1 := strconv.Atoi(lo)
		last, err2 := first, error(nil)
		if isRange {
			last, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || first < 0 || last < first {
			return 0, false
		}
		n += last - first + 1
	}
	return n, true
}

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
