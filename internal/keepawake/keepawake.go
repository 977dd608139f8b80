// Package keepawake keeps Go's scheduler monitor (sysmon) out of its
// deep sleep while a VM runs, so that the I/O paths' system calls do not
// have to wake it.
//
// Every system call made through syscall.Syscall (preadv, pwritev,
// io_submit, KVM_RUN) enters through the runtime's entersyscall, which
// wakes sysmon with a futex whenever sysmon sleeps deeply; and sysmon
// sleeps deeply whenever it finds every P (Go's processors) idle. That
// is a VMM's state between two guest requests: its vCPU threads sit in
// KVM_RUN, their Ps handed off, and its device goroutines wait in the
// netpoller. So each request of a disk served through the page cache
// woke sysmon, which then ran its 20 us tick until it found the Ps idle
// again and slept deeply again: in a perf trace of 4 KiB random writes
// at queue depth 32, 0.6 host context switches per request were
// sysmon's, each on a core a vCPU needed (README, Storage).
//
// A goroutine that waits in a raw system call holds its P in the
// running state, so sysmon never finds every P idle: it stays on its
// ordinary tick, which backs off to 10 ms when there is nothing to
// retake, and no entersyscall has to wake it. Start starts such a
// goroutine and raises GOMAXPROCS by one, so the held P takes no
// processor from the rest of govmm. It is locked to a thread of its
// own: unlocked, a preempted keeper resumed on whichever thread took it
// from the global run queue, with the goroutines that thread had just
// taken along still queued on the P the keeper then held, and read-1m-qd8
// fell to half its IOPS with a p99 of 62 ms (README, Storage).
//
// What it costs: an idle govmm's sysmon ticks every 10 ms instead of
// sleeping, and preempts the keeper about as often; a VM idle at a shell
// prompt made ~300 context switches a second instead of 4, ~0.8% of a
// core instead of 0.1% (README, Storage).
//
// The wait is epoll_pwait on an epoll set that holds only the stop
// eventfd: it blocks until Stop, and a signal ends it with EINTR (epoll
// waits are never restarted after a signal handler, whatever
// SA_RESTART says). That matters: a goroutine in a raw system call
// cannot be preempted, so a stop-the-world (the garbage collector's, or
// sysmon's preemption of a goroutine that ran 10 ms) waits for it; the
// runtime's preemption signal ends the wait, and the runtime.Gosched
// after it lets the preemption in. A blocking read of an eventfd would
// be restarted by the kernel after the signal and never let it in.
package keepawake

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Keeper is a started keeper; Stop ends it.
type Keeper struct {
	epfd, stopfd int
	done         chan struct{}
}

// Start raises GOMAXPROCS by one and starts the keeper on it.
func Start() (*Keeper, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("keepawake: epoll_create1: %w", err)
	}
	stopfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("keepawake: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(stopfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, stopfd, &ev); err != nil {
		unix.Close(stopfd)
		unix.Close(epfd)
		return nil, fmt.Errorf("keepawake: epoll_ctl: %w", err)
	}
	k := &Keeper{epfd: epfd, stopfd: stopfd, done: make(chan struct{})}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	go k.wait()
	return k, nil
}

// wait holds its P in epoll_pwait until Stop writes the eventfd.
func (k *Keeper) wait() {
	defer close(k.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var events [1]unix.EpollEvent
	for {
		n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(k.epfd),
			uintptr(unsafe.Pointer(&events[0])), 1, ^uintptr(0) /* -1: no timeout */, 0, 0)
		if errno == 0 && n > 0 || errno != 0 && errno != unix.EINTR {
			return // stopped (or the set is gone: nothing left to wait on)
		}
		// A signal ended the wait, perhaps the runtime's preemption:
		// a function call it can stop at.
		runtime.Gosched()
	}
}

// Stop ends the keeper and gives its P back.
func (k *Keeper) Stop() error {
	var one [8]byte
	one[0] = 1
	_, err := unix.Write(k.stopfd, one[:])
	if err != nil {
		return fmt.Errorf("keepawake: stop: %w", err)
	}
	<-k.done
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) - 1)
	return errors.Join(unix.Close(k.stopfd), unix.Close(k.epfd))
}
