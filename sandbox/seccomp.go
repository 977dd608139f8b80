package sandbox

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// allowed lists every system call govmm makes once its VM is built, its
// files opened and its sockets bound: the vCPU loops, the device
// goroutines, the QMP and metrics servers, the exit report and the Go
// runtime (and glibc's thread start in a cgo build) under all of them.
// It was taken from strace -f of the cmd/govmm test suite and of boots
// with every device, server and report on, cgo and pure-Go builds; calls
// only a code path shows (a flush, a rw disk write) were added from it.
// The filter tests the names in this order, the exit path's first.
var allowed = []string{
	// vCPU threads: KVM_RUN on every entry; KVM_SIGNAL_MSI, KVM_IRQ_LINE,
	// register and stats reads (QMP, metrics); TCSETS when the console's
	// terminal is restored.
	"ioctl",
	// Go runtime: locks, parked threads, the scheduler's sleeps.
	"futex", "nanosleep", "sched_yield",
	// A disk queue's poller: was it preempted (virtio.pollWindow)?
	"getrusage",
	// ioeventfds and irqfds, the tap, the console, sockets, /proc files
	// the metrics' process collector reads.
	"read", "write", "readv", "writev",
	// Go's netpoller: QMP, metrics and eventfd goroutines wait here (it
	// starts on first use, which a VM with no pollable fd reaches late).
	"epoll_pwait", "epoll_ctl", "epoll_create1",
	// virtio-blk requests, flushes, discards and write-zeroes (pread64
	// and pwrite64: cache=none's bounce buffers; preadv2: page-cache
	// reads tried without blocking), the KVM stats fds.
	"preadv", "preadv2", "pwritev", "pread64", "pwrite64", "fdatasync", "fsync", "fallocate",
	// cache=none disks' Linux AIO; a context that failed is replaced when
	// the driver resets the device (io_setup was missing: such a reset
	// ended govmm, found by an audit).
	"io_setup", "io_submit", "io_getevents", "io_destroy",
	// Go runtime: signals (preemption, and the SIGURG that kicks a vCPU
	// out of KVM_RUN), and os/signal's clean-up at the end.
	"rt_sigreturn", "rt_sigprocmask", "rt_sigaction", "sigaltstack",
	"tgkill", "getpid", "gettid", "restart_syscall",
	// Go runtime: the heap; glibc: new threads' stacks and guard pages.
	"mmap", "munmap", "madvise", "mprotect",
	// New threads (clone itself is allowed for threads only, below),
	// their exit, the process's exit; glibc's per-thread set-up.
	"exit", "exit_group", "rseq", "set_robust_list",
	// vCPU threads pin themselves (--cpu-affinity); new threads read it.
	"sched_setaffinity", "sched_getaffinity",
	// virtio devices make their notification eventfds when the guest
	// drives them; the virtio-rng reads the host's random numbers.
	"eventfd2", "getrandom",
	// QMP clients and metrics scrapers connect after start; the socket is
	// removed at the end.
	"accept4", "setsockopt", "getsockname", "shutdown", "close",
	// Files opened after start: the metrics' process collector (/proc),
	// glibc's CPU count, --exit-stats-json (a FIFO written as a stream, a
	// file replaced through a 0644 temporary one), the QMP socket's
	// removal; mincore for the guest RAM touched.
	"openat", "fcntl", "fstat", "newfstatat", "statfs", "fchmod",
	"renameat", "unlinkat", "mincore",
	// Directory listings: the process collector counts /proc/self/fd by
	// listing it where the kernel (before 6.2) gives the directory no
	// size; a scrape there ended govmm (found by an audit).
	"getdents64",
	// The vDSO's fallback.
	"clock_gettime",
}

// A thread is a clone with CLONE_THREAD, which the kernel accepts only
// with CLONE_SIGHAND and CLONE_VM: the same process, in the same memory.
// Without it a clone is a fork. (go-seccomp-bpf's BitsSet is "any of the
// bits", so the mask is this one bit.)
const threadClone = unix.CLONE_THREAD

// policy is the seccomp policy: the allow-list, clone only for threads,
// and defaultAction for everything else.
func policy(defaultAction seccomp.Action) seccomp.Policy {
	return seccomp.Policy{
		DefaultAction: defaultAction,
		Syscalls: []seccomp.SyscallGroup{{
			// glibc's pthread_create (a cgo build makes its threads with
			// it) tries clone3 first, whose flags a filter cannot see,
			// and falls back to clone on ENOSYS.
			Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS),
			Names:  []string{"clone3"},
		}, {
			Action: seccomp.ActionAllow,
			Names:  allowed,
			NamesWithCondtions: []seccomp.NameWithConditions{{
				Name:       "clone",
				Conditions: []seccomp.Condition{{Argument: 0, Operation: seccomp.BitsSet, Value: threadClone}},
			}, {
				// Go's runtime (1.25 on) names each new mapping of
				// its own, where the kernel can (CONFIG_ANON_VMA_NAME,
				// on in distribution kernels): refused, govmm ended
				// at its first mapping after start there (found by an
				// audit; this host's kernel lacks it). Only that prctl.
				Name:       "prctl",
				Conditions: []seccomp.Condition{{Argument: 0, Operation: seccomp.Equal, Value: unix.PR_SET_VMA}},
			}},
		}},
	}
}

// Seccomp installs the allow-list on every thread of the process (and
// sets no_new_privs, which an unprivileged process needs for it). From
// then on a system call outside the list is not run: govmm prints
// "govmm: seccomp: syscall N (name) not allowed" on stderr, calls
// onViolation (to restore the terminal, say) and exits with status 1.
func Seccomp(onViolation func()) error {
	insts, err := assemble(seccomp.ActionUserNotify)
	if err != nil {
		return err
	}
	// The report is printed by Go code, which needs a scheduler slot (a
	// P): with one alone, a forbidden call the runtime made while holding
	// it would leave nobody to report it.
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
	// The supervisor's thread must exist before the filter does: making a
	// thread later could itself be the call the filter stops.
	listener, started := make(chan int), make(chan struct{})
	go supervise(listener, started, onViolation)
	defer close(listener)
	// no_new_privs and the filter must be set from the same thread; TSYNC
	// then copies both to every other thread, or fails if it cannot.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: set no_new_privs: %w", err)
	}
	fd, err := loadFilter(insts, unix.SECCOMP_FILTER_FLAG_TSYNC|unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH|unix.SECCOMP_FILTER_FLAG_NEW_LISTENER)
	if err == nil {
		listener <- fd
		// Until it runs, the supervisor waits in the run queue of the P
		// that made it runnable, this one; should a raw system call hold
		// that P for ever (a forbidden one does), nothing would run it,
		// since Ps take work from others only when the global queue is
		// empty, and the keeper's P, freed at each preemption, finds
		// the keeper itself there (a race-detector build hung so). Once
		// it has run, it waits in the kernel, and wakes onto the global
		// queue.
		<-started
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("seccomp: load filter: %w", err)
	}
	// Before Linux 5.7 there is no listener next to TSYNC: a violation
	// then ends the process with SIGSYS, and Go's crash report names the
	// call in its register dump (rax) and traceback.
	if insts, err = assemble(seccomp.ActionTrap); err != nil {
		return err
	}
	if _, err := loadFilter(insts, unix.SECCOMP_FILTER_FLAG_TSYNC); err != nil {
		return fmt.Errorf("seccomp: load filter: %w", err)
	}
	return nil
}

func assemble(defaultAction seccomp.Action) ([]bpf.RawInstruction, error) {
	// go-seccomp-bpf v1.6.0 knows ActionUserNotify but its Validate
	// rejects it as a default action: build with ActionTrap, which
	// nothing else returns, and swap the action in the returns.
	p := policy(seccomp.ActionTrap)
	insts, err := p.Assemble()
	if err != nil {
		return nil, fmt.Errorf("seccomp: build filter: %w", err)
	}
	for i, in := range insts {
		if r, ok := in.(bpf.RetConstant); ok && r.Val == uint32(seccomp.ActionTrap) {
			insts[i] = bpf.RetConstant{Val: uint32(defaultAction)}
		}
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, fmt.Errorf("seccomp: assemble filter: %w", err)
	}
	return raw, nil
}

// supervise waits for a call the filter did not allow, reports it and
// ends the process; the calling thread stays blocked in the kernel until
// then, so the call never runs. It gets the listener fd on listener, or
// nothing if no filter with a listener was loaded; it closes started
// once it has the fd.
func supervise(listener <-chan int, started chan<- struct{}, onViolation func()) {
	runtime.LockOSThread() // never handed back: this thread only waits
	fd, ok := <-listener
	if !ok {
		runtime.UnlockOSThread()
		return
	}
	close(started)
	for {
		n, err := receive(fd)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOENT) {
				continue // a signal, or the caller died before we looked
			}
			fmt.Fprintf(os.Stderr, "govmm: seccomp: reading the filter's notifications: %v\n", err)
			return
		}
		fmt.Fprintf(os.Stderr, "govmm: seccomp: %s not allowed\n", describe(n))
		if onViolation != nil {
			onViolation()
		}
		os.Exit(1)
	}
}

// describe names the call in a notification, as "syscall 165 (mount)
// from thread 1234".
func describe(n notification) string {
	name := "unknown"
	if n.arch != uint32(arch.X86_64.ID) {
		name = fmt.Sprintf("foreign ABI %#x", n.arch)
	} else if s, ok := arch.X86_64.SyscallNumbers[int(n.nr)]; ok {
		name = s
	}
	return fmt.Sprintf("syscall %d (%s) from thread %d", n.nr, name, n.pid)
}
