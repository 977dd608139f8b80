package virtio

import (
	"log"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// pciNotifier serves one queue's ioeventfd: KVM signals the eventfd when the
// guest writes the queue's notify address, without leaving the kernel,
// and a goroutine here reads it and runs the device's Notify.
type pciNotifier struct {
	efd  int // kept apart from file: File.Fd would make it blocking
	file *os.File
	addr uint64
	done chan struct{}
}

// pciIOEventFDLen is the width of the write KVM matches: Linux's vp_notify
// writes the queue index with iowrite16. Another width exits to user
// space and is served by pciNotifyDevice like any MMIO write.
const pciIOEventFDLen = 2

// startNotifiers registers an ioeventfd for every enabled queue; mu must
// be held. Without IOEventFDs, with BAR 0 not decoding, or after a failed
// registration, notifications stay MMIO exits.
func (t *Transport) startNotifiers() {
	if t.ioev == nil || !t.barMapped || t.ioeventfdBroken || t.notifiers != nil {
		return
	}
	t.notifiers = make([]*pciNotifier, t.nq)
	for q, qu := range t.queues {
		if !qu.Ready() {
			continue
		}
		n, err := t.newNotifier(q)
		if err != nil {
			// Keep the queues already registered; this one (and any
			// later registration) falls back to MMIO exits.
			t.ioeventfdBroken = true
			pciLogf("%s: queue %d: ioeventfd unavailable, notifications exit to user space: %v", t.name, q, err)
			return
		}
		t.notifiers[q] = n
	}
}

func (t *Transport) newNotifier(q int) (*pciNotifier, error) {
	// Non-blocking, so os.NewFile puts it in the runtime poller: a
	// blocked Read parks a goroutine, not an OS thread.
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	addr := t.barBase + pciNotifyOff + uint64(q)*pciNotifyMultiplier
	if err := t.ioev.IOEventFD(efd, addr, pciIOEventFDLen, false, nil); err != nil {
		unix.Close(efd)
		return nil, err
	}
	n := &pciNotifier{efd: efd, file: os.NewFile(uintptr(efd), t.name+"-notify"), addr: addr, done: make(chan struct{})}
	go t.serveNotifier(n, q)
	return n, nil
}

func (t *Transport) serveNotifier(n *pciNotifier, q int) {
	defer close(n.done)
	r, err := newEventfdReader(n.file)
	if err != nil {
		return
	}
	p := pollWindow{max: t.pollMax}
	for {
		signals, err := r.Read()
		if err != nil {
			return // closed by stopNotifiers
		}
		if p.polled() { // else woke learns nothing: spare the ring's read
			p.woke(time.Now(), t.hasAvail(q))
		}
		// The counter sums the guest's writes since the last read (and
		// the transport's kicks, which are not the guest's): one Notify
		// serves them all.
		t.counters[q].eventfd.Add(signals - min(signals, t.counters[q].kicks.Swap(0)))
		if t.deferrer != nil {
			if wait := t.deferrer.NotifyDelay(q); wait > 0 {
				ts := unix.NsecToTimespec(int64(wait))
				unix.Nanosleep(&ts, nil)
			}
		}
		t.notify(q)
		for p.max > 0 && t.poll(q, &p) {
			t.counters[q].polled.Add(1)
			t.notify(q)
		}
	}
}

// resumer is a Device that holds work back while the VM is paused (a
// disk's writes kept for want of space) and takes it up again on resume,
// before its queues are looked at.
type resumer interface {
	Resume()
}

// pauser is a Device with work of its own beside its queues'
// notifications (net's receive goroutines), which Pause stops: once it
// returns, the device touches neither guest memory nor the guest's
// interrupts until Resume.
type pauser interface {
	Pause()
}

// notifyDeferrer is a Device whose notifier should wait before serving
// some notifications, to let the driver queue more work while its
// notifications are off (Net's transmitq when the guest streams). Only
// the ioeventfd notifier waits: a notification that exits to user space
// is served at once, since waiting there would stall the vCPU that sent
// it. The wait is outside notifyMu, so a reset or stop never waits on it.
type notifyDeferrer interface {
	NotifyDelay(queue int) time.Duration
}

// pollWindow adapts how long a notifier polls its queue after the queue
// ran empty, as QEMU's AioContext polling does: a poll that finds work
// leaves the window alone; a wake-up (a notification) that came later
// than the window but within max grows it (from pollStart, doubling),
// so that the next poll would have caught it; one later than max halves
// it, since polling that long would cost more than the wake-up saves.
type pollWindow struct {
	max, window time.Duration
	started     time.Time // when the last poll began; zero if it found work
}

const pollStart = 4 * time.Microsecond

// headroomEvery is how often a poll asks whether the host still has a
// CPU for it (hostHeadroom): at its start, then every few microseconds,
// since a vCPU that wakes (for the completion just sent) needs a core
// mid-poll. The read costs ~0.8 us; at this interval a poll loses a
// fifth of its loads to it, and a request arriving during one is seen
// that much later.
const headroomEvery = 4 * time.Microsecond

// preempted records a poll during which the host took the poller's core
// for another thread: on a host with fewer cores than busy threads the
// poll was taking time from the vCPUs (a guest at depth keeps every vCPU
// busy), so the window shrinks to a quarter. A guest that waits on each
// request leaves cores idle and the poller is seldom preempted; woke
// grows the window back as long as the wake-ups it would catch come.
func (p *pollWindow) preempted() { p.window /= 4 }

// woke records a notification at now after a poll that found nothing;
// work says whether the driver had made buffers available by then. A
// notification with nothing queued is no work the poll could have
// caught: it halves the window. Counted as a late wake-up instead, a
// guest notifying every 100 us with nothing queued held the poller at
// the largest window for ever, a 1-vCPU guest costing nearly two host
// cores (found by an audit).
func (p *pollWindow) woke(now time.Time, work bool) {
	if !p.polled() {
		return
	}
	switch idle := now.Sub(p.started); {
	case !work:
		p.window /= 2
	case idle <= p.window:
	case idle > p.max:
		p.window /= 2
	case p.window < p.max:
		p.window = min(max(2*p.window, pollStart), p.max)
	}
	p.started = time.Time{}
}

// polled reports whether the last poll found nothing, so that the next
// wake-up tells how long the window should have been.
func (p *pollWindow) polled() bool { return !p.started.IsZero() }

// hasAvail reports whether queue q has buffers the device has not taken.
func (t *Transport) hasAvail(q int) bool {
	t.notifyMu[q].Lock()
	defer t.notifyMu[q].Unlock()
	return t.active.Load() && t.queues[q].HasAvail(t.mem)
}

// poll spins on queue q's available ring for the poll window, with the
// guest's notifications suppressed, and reports whether the driver made
// buffers available (Notify serves them). Before it reports false it asks
// for notifications again. It holds notifyMu, as Notify does, so it stops
// a vCPU's notification for at most the window; a hold or abort of the
// queue (reset, BAR move, stop) ends it at once, and so does a host with
// no CPU to spare for it (hostHeadroom, asked every headroomEvery). The
// thread's involuntary context switches before and after tell whether it
// was preempted (pollWindow.preempted); the goroutine is locked to its
// thread for the poll, which Go's asynchronous preemption of a long spin
// (a window can be up to 10 ms) could otherwise move to another.
func (t *Transport) poll(q int, p *pollWindow) bool {
	qu := t.queues[q]
	t.notifyMu[q].Lock()
	defer t.notifyMu[q].Unlock()
	if !t.active.Load() {
		return false
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var before unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &before) == nil {
		defer func() {
			var after unix.Rusage
			if unix.Getrusage(unix.RUSAGE_THREAD, &after) == nil && after.Nivcsw > before.Nivcsw {
				p.preempted()
			}
		}()
	}
	p.started = time.Now()
	qu.SuppressNotify()
	checked := -headroomEvery
	for spins := 0; ; spins++ {
		if qu.HasAvail(t.mem) {
			p.started = time.Time{}
			return true
		}
		// The clock is read every few loads only: it costs more than one.
		if spins%16 != 15 {
			continue
		}
		spun := time.Since(p.started)
		if spun >= p.window || qu.halt.Load() != haltNone {
			break
		}
		if spun-checked >= headroomEvery {
			checked = spun
			if !t.headroom.spare() {
				// Not a full window: nothing for woke to learn from.
				p.started = time.Time{}
				break
			}
		}
	}
	if qu.EnableNotify(t.mem) {
		p.started = time.Time{}
		return true
	}
	return false
}

// stopNotifiers deregisters the ioeventfds and waits for their goroutines,
// and for ResumeQueues' kicks, to finish; mu must be held.
func (t *Transport) stopNotifiers() {
	defer t.resumeKicks.Wait()
	for _, n := range t.notifiers {
		if n == nil {
			continue
		}
		// Deassign before close: KVM finds the registration by fd.
		if err := t.ioev.IOEventFDDeassign(n.efd, n.addr, pciIOEventFDLen, false, nil); err != nil {
			pciLogf("%s: %v", t.name, err)
		}
		n.file.Close()
		<-n.done
	}
	t.notifiers = nil
}

func pciLogf(format string, args ...any) { log.Printf("virtio-pci: "+format, args...) }
