package vcpu

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/exittrace"
	"github.com/govmm/govmm/internal/word"
	"github.com/govmm/govmm/kvm"
)

// StopReason says why Run returned.
type StopReason int

// Reasons a vCPU stops.
const (
	Stopped  StopReason = iota // Stop was called
	Halted                     // HLT reached user space (no in-kernel LAPIC to wake it)
	Shutdown                   // triple fault (KVM_EXIT_SHUTDOWN)
	Reset                      // the guest asked for a reset (system event)
	PowerOff                   // the guest asked to power off (system event)
	Crashed                    // the guest reported a crash (system event)
)

var stopNames = [...]string{"stopped", "halted", "shutdown (triple fault)", "reset", "power-off", "crash"}

func (r StopReason) String() string {
	if int(r) < len(stopNames) {
		return stopNames[r]
	}
	return fmt.Sprintf("StopReason(%d)", int(r))
}

// Config wires one vCPU to the rest of the VM.
type Config struct {
	IO, MMIO *devices.Bus
	// Stats, when non-nil, receives the timing of every exit; nil, with
	// Trace nil too, turns measurement off altogether (no clock reads on
	// the hot path).
	Stats *exitstats.VCPU
	// Trace, when non-nil, records every exit in the exit timeline.
	Trace    *exittrace.VCPU
	Registry *exitstats.Registry // names rows; required when Stats or Trace is set
	// SyncRegs asks KVM to copy the general registers into kvm_run on
	// every exit (KVM_CAP_SYNC_REGS) so PC needs no ioctl. When false, or
	// when the capability is missing, each exit costs a KVM_GET_REGS.
	SyncRegs bool
	// HostCPUs, when not empty, are the host CPUs the vCPU's thread may
	// run on (sched_setaffinity).
	HostCPUs []int
}

// VCPU is one virtual CPU and its run loop.
//
// Other goroutines steer the loop with request bits (pause, stop, sample)
// and a kick (see request); the loop serves them between runs, on its own
// thread, so nothing but that thread ever touches the vCPU while it may be
// inside KVM_RUN. Every change of a request bit is followed by a Broadcast
// of cond under mu, so a loop parked on cond, and a caller waiting for the
// loop, always wake to look again.
type VCPU struct {
	k        *kvm.VCPU
	cfg      Config
	syncRegs bool

	tid      atomic.Int32  // OS thread id while Run is executing, else 0 (set under mu)
	requests atomic.Uint32 // pending req* bits
	pc       word.Word     // guest RIP at the last exit (written by the vCPU thread only)

	mu     sync.Mutex
	cond   *sync.Cond
	paused bool   // the loop is parked (mu)
	sample State  // the state the loop last sampled for State (mu)
	gen    uint64 // counts samples (mu)

	kinds kindCache // exitstats rows, owned by the vCPU thread
}

// Request bits. Stop wins over the others; a pause lasts until Resume.
const (
	reqPause  = 1 << iota // park outside the guest until Resume
	reqStop               // return Stopped from Run
	reqSample             // sample State on the vCPU thread and re-enter
)

// State is a vCPU's architectural state as a monitor shows it.
type State struct {
	PC     uint64 // guest RIP
	Halted bool   // in HLT, waiting for an interrupt (KVM_MP_STATE_HALTED)
	Err    error  // why PC and Halted could not be read; they are then the last known
}

// New wraps a created vCPU. syncRegsCap is what KVM_CHECK_EXTENSION
// reported for KVM_CAP_SYNC_REGS (a bit mask of supported sets).
func New(k *kvm.VCPU, cfg Config, syncRegsCap int) *VCPU {
	v := &VCPU{k: k, cfg: cfg}
	v.cond = sync.NewCond(&v.mu)
	v.syncRegs = cfg.SyncRegs && syncRegsCap&kvm.SyncRegsGPR != 0
	if cfg.Stats != nil || cfg.Trace != nil {
		v.kinds.init(cfg.Registry)
	}
	return v
}

// ID is the vCPU index.
func (v *VCPU) ID() int { return v.k.ID }

// PC returns the guest RIP seen at the vCPU's most recent exit.
func (v *VCPU) PC() uint64 { return v.pc.Load() }

// ThreadID returns the OS thread running the vCPU, or 0 when it is not
// running.
func (v *VCPU) ThreadID() int { return int(v.tid.Load()) }

// Stop asks Run to return Stopped at its next exit, forcing one now. A
// parked vCPU wakes and returns; a vCPU whose Run has not started returns
// as soon as it does. Stop does not wait.
func (v *VCPU) Stop() { v.request(reqStop) }

// Rearm undoes Stop so that Run may run the vCPU again (after a machine
// reset). A pending Pause stays: the vCPU then parks at once. Run must
// not be executing. The immediate_exit the Stop left set is cleared too:
// the first entry after a reset returned EINTR at once, before the guest
// ran, and every reset added an INTR exit per vCPU to the table, at the
// entry point (found by an audit).
func (v *VCPU) Rearm() {
	v.requests.And(^uint32(reqStop))
	v.k.ClearImmediateExit()
}

// Pause parks the vCPU outside the guest and waits until it is parked, has
// returned from Run (or not started it), or Resume has withdrawn the
// pause. A vCPU paused before Run starts parks before its first entry.
func (v *VCPU) Pause() {
	v.request(reqPause)
	v.mu.Lock()
	for !v.paused && v.tid.Load() != 0 && v.requests.Load()&(reqPause|reqStop) == reqPause {
		v.cond.Wait()
	}
	v.mu.Unlock()
}

// RequestPause is Pause without the wait, for a device that pauses the
// VM from a vCPU thread, which cannot wait for itself to park: each vCPU
// parks at its next exit.
func (v *VCPU) RequestPause() { v.request(reqPause) }

// Resume lets a paused vCPU re-enter the guest. It does not wait.
func (v *VCPU) Resume() {
	v.requests.And(^uint32(reqPause))
	v.wake()
}

// Paused reports whether the loop is parked.
func (v *VCPU) Paused() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.paused
}

// request posts a request bit, wakes a parked loop and kicks a running
// one out of the guest.
//
// A kick is never lost: the bit is published (an atomic OR) before
// immediate_exit is set, and the loop clears immediate_exit before it
// reads the bits, both with full barriers (kvm.VCPU.ClearImmediateExit).
// Either the loop's read sees the bit, or its clear came first, so the
// flag is set when it next calls KVM_RUN, which then returns at once.
// With plain stores x86 could let the clear drain from the store buffer
// after the read, wiping out a flag set in between.
//
// immediate_exit only acts on the next entry; a vCPU already inside
// KVM_RUN is pulled out by a signal to its thread. SIGURG is the Go
// runtime's own preemption signal: it has a handler on every thread and is
// otherwise harmless, and any handled signal makes KVM_RUN return EINTR.
func (v *VCPU) request(bit uint32) {
	v.requests.Or(bit)
	v.k.RequestImmediateExit()
	if tid := v.tid.Load(); tid != 0 {
		unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG)
	}
	v.wake()
}

// wake tells the loop and waiters that the requests changed. Taking mu
// orders the change before any waiter's next look at the bits.
func (v *VCPU) wake() {
	v.mu.Lock()
	v.cond.Broadcast()
	v.mu.Unlock()
}

// State returns the vCPU's current RIP and whether it is halted. A vCPU
// that is parked, or not in Run, is read directly; a running one is kicked
// so that its own thread samples the registers between two runs (KVM's
// vCPU ioctls would otherwise wait for KVM_RUN to return, for ever in a
// halted guest). If no sample arrives by deadline, State returns the RIP of
// the last exit and an error.
func (v *VCPU) State(deadline time.Time) State {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.paused || v.tid.Load() == 0 {
		// Neither can change while mu is held: the loop leaves its park,
		// and Run starts, only with mu.
		return v.readState()
	}
	gen := v.gen
	v.mu.Unlock()
	v.request(reqSample)
	timer := time.AfterFunc(time.Until(deadline), v.wake)
	defer timer.Stop()
	v.mu.Lock()
	for {
		switch {
		case v.gen != gen:
			return v.sample
		case v.paused || v.tid.Load() == 0:
			return v.readState()
		case !time.Now().Before(deadline):
			return State{PC: v.PC(), Err: fmt.Errorf("vCPU %d: no state sample before the deadline", v.ID())}
		}
		v.cond.Wait()
	}
}

// readState reads RIP and the MP state with ioctls. The caller is the
// vCPU's thread between runs, or holds mu while the loop cannot run.
func (v *VCPU) readState() State {
	regs, err := v.k.GetRegs()
	if err != nil {
		return State{PC: v.PC(), Err: err}
	}
	mp, err := v.k.MPState()
	return State{PC: regs.RIP, Halted: mp == kvm.MPStateHalted, Err: err}
}

// Run executes the vCPU on the calling goroutine, locked to its OS thread,
// until the guest stops it or Stop is called. A guest crash the VMM cannot
// handle (failed entry, internal error, unknown exit) is an error naming
// the vCPU, RIP and reason.
func (v *VCPU) Run() (StopReason, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	v.mu.Lock()
	v.tid.Store(int32(unix.Gettid()))
	v.mu.Unlock()
	if len(v.cfg.HostCPUs) > 0 {
		var set unix.CPUSet
		for _, c := range v.cfg.HostCPUs {
			set.Set(c)
		}
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return Crashed, fmt.Errorf("vCPU %d: pin to host CPUs %v: %w", v.ID(), v.cfg.HostCPUs, err)
		}
	}
	defer func() {
		v.mu.Lock()
		v.tid.Store(0)
		v.cond.Broadcast()
		v.mu.Unlock()
	}()
	run := v.k.Run
	if v.syncRegs {
		run.ValidRegs = kvm.SyncRegsGPR
	}
	stats, trace := v.cfg.Stats, v.cfg.Trace
	timed := stats != nil || trace != nil
	var last int64 // monotonic time of the last re-entry
	if timed {
		last = now()
	}
	// afterKick is set when KVM_RUN returned EINTR: a request may have set
	// immediate_exit and been withdrawn (Resume) since, and only
	// serveRequests clears the flag that would otherwise end every run.
	afterKick := false
	for {
		if afterKick || v.requests.Load() != 0 {
			afterKick = false
			if stop := v.serveRequests(); stop {
				return Stopped, nil
			}
			if timed {
				last = now()
			}
		}
		stats.Enter(last) // nil-safe
		err := v.k.RunOnce()
		// The time in guest and the handling of this exit are charged
		// together once it is handled: one write section per exit.
		var exitAt int64
		if timed {
			exitAt = now()
			stats.Leave(exitAt)
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				// A signal (Go's preemption, or our kick) ended the
				// run: count it and loop to look at requests.
				if timed {
					// KVM fills the sync regs on this path too: the
					// RIP the guest was stopped at costs nothing
					// (without them, a KVM_GET_REGS as on any exit).
					rip := v.notePC()
					entered := last
					last = now()
					stats.RecordExit(v.kinds.intr, rip, uint64(exitAt-entered), uint64(last-exitAt))
					if trace != nil {
						trace.Exit(v.kinds.intr, exitAt, last-exitAt, exitAt-entered, rip)
					}
				}
				afterKick = true
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				// An AP woken from its wait for INIT/SIPI: no exit. The
				// wait is time in KVM_RUN, charged once with the next
				// exit's (it was recorded here too, counted twice and
				// one TIMEINGUEST more than exits; found by an audit).
				continue
			}
			if stats != nil {
				stats.RecordGuest(uint64(exitAt - last))
			}
			return Crashed, fmt.Errorf("vCPU %d: KVM_RUN: %w", v.ID(), err)
		}
		rip := v.notePC()
		kind, reason, err := v.handle(run)
		if timed {
			entered := last
			last = now()
			stats.RecordExit(kind, rip, uint64(exitAt-entered), uint64(last-exitAt))
			if trace != nil {
				trace.Exit(kind, exitAt, last-exitAt, exitAt-entered, rip)
			}
		}
		if err != nil || reason != running {
			return reason, err
		}
	}
}

// running is the internal "keep going" result of handle.
const running StopReason = -1

// handle serves one exit and returns its exitstats row.
func (v *VCPU) handle(run *kvm.Run) (exitstats.Kind, StopReason, error) {
	switch run.ExitReason {
	case kvm.ExitIO:
		return v.handleIO()
	case kvm.ExitMMIO:
		m := run.MMIO()
		n := m.Len
		if n > uint32(len(m.Data)) {
			return v.kinds.reason(run.ExitReason), Crashed, v.fault("MMIO exit of %d bytes at %#x", n, m.PhysAddr)
		}
		r := v.cfg.MMIO.Dispatch(m.PhysAddr, m.Data[:n], m.IsWrite != 0)
		return v.kinds.mmio(r), running, nil
	case kvm.ExitHLT:
		return v.kinds.reason(run.ExitReason), Halted, nil
	case kvm.ExitShutdown:
		// A triple fault: the guest cannot go on. (Linux's reboot=t asks
		// for one on purpose; it is still not a clean end.)
		return v.kinds.reason(run.ExitReason), Shutdown, v.fault("triple fault (KVM_EXIT_SHUTDOWN)")
	case kvm.ExitSystemEvent:
		k := v.kinds.reason(run.ExitReason)
		switch t := run.SystemEvent().Type; t {
		case kvm.SystemEventShutdown:
			return k, PowerOff, nil
		case kvm.SystemEventReset:
			return k, Reset, nil
		case kvm.SystemEventCrash:
			return k, Crashed, v.fault("%w (system event)", ErrGuestCrash)
		default:
			return k, Crashed, v.fault("unknown system event %d", t)
		}
	case kvm.ExitIntr:
		return v.kinds.intr, running, nil
	case kvm.ExitIRQWindowOpen:
		return v.kinds.reason(run.ExitReason), running, nil
	case kvm.ExitFailEntry:
		f := run.FailEntry()
		return v.kinds.reason(run.ExitReason), Crashed, v.fault("failed entry: hardware reason %#x on CPU %d", f.HardwareEntryFailureReason, f.CPU)
	case kvm.ExitInternalError:
		ie := run.InternalError()
		return v.kinds.reason(run.ExitReason), Crashed, v.fault("internal error: suberror %d%s", ie.Suberror, internalData(ie))
	default:
		return v.kinds.reason(run.ExitReason), Crashed, v.fault("unhandled exit %s", run.ExitReason)
	}
}

func (v *VCPU) handleIO() (exitstats.Kind, StopReason, error) {
	io := v.k.Run.IO()
	data, err := v.k.IOData()
	if err != nil {
		return v.kinds.reason(kvm.ExitIO), Crashed, v.fault("%v", err)
	}
	size := int(io.Size)
	if size == 0 {
		return v.kinds.reason(kvm.ExitIO), running, nil
	}
	write := io.Direction == kvm.IODirOut
	var r *devices.Range
	// String I/O (rep ins/outs) arrives as Count items of Size bytes.
	for off := 0; off+size <= len(data); off += size {
		r = v.cfg.IO.Dispatch(uint64(io.Port), data[off:off+size], write)
	}
	return v.kinds.io(r), running, nil
}

// serveRequests handles posted requests on the vCPU thread, between runs;
// it reports whether to stop.
func (v *VCPU) serveRequests() bool {
	for {
		// Clear immediate_exit before reading the bits (see request).
		v.k.ClearImmediateExit()
		r := v.requests.Load()
		if r&reqStop != 0 {
			return true
		}
		if r&reqSample != 0 {
			v.requests.And(^uint32(reqSample))
			s := v.readState()
			v.mu.Lock()
			v.sample, v.gen = s, v.gen+1
			v.cond.Broadcast()
			v.mu.Unlock()
		}
		if r&reqPause == 0 {
			return false // a request posted since has set immediate_exit
		}
		v.park()
	}
}

// park waits outside the guest until the pause is withdrawn or a stop
// comes. A State caller reads the parked vCPU itself, under mu.
func (v *VCPU) park() {
	v.mu.Lock()
	v.paused = true
	v.cond.Broadcast()
	for v.requests.Load()&(reqPause|reqStop) == reqPause {
		v.cond.Wait()
	}
	v.paused = false
	v.mu.Unlock()
}

// notePC records and returns the guest RIP of this exit (the last known
// one if it cannot be read). That is the address of the instruction that
// exited, except where KVM completed it before exiting to user space,
// leaving RIP just past it: an OUT it emulated (always on PVM hosts, and
// for string I/O), an MMIO store, and a HLT. An IN, an MMIO load, or an
// OUT on VT-x's fast path, is completed on re-entry and leaves RIP on
// the instruction.
func (v *VCPU) notePC() uint64 {
	if v.syncRegs {
		rip := v.k.Run.S.Regs.RIP
		v.pc.Store(rip)
		return rip
	}
	if regs, err := v.k.GetRegs(); err == nil {
		v.pc.Store(regs.RIP)
		return regs.RIP
	}
	return v.pc.Load()
}

// fault builds the error for an exit the VMM cannot continue from.
func (v *VCPU) fault(format string, args ...any) error {
	return fmt.Errorf("vCPU %d at RIP %#x: "+format, append([]any{v.ID(), v.PC()}, args...)...)
}

// ErrGuestCrash is in the error of a vCPU whose guest reported a crash
// (KVM's crash system event): every other Crashed is the VMM's or KVM's
// failure to run the guest, not the guest's report.
var ErrGuestCrash = errors.New("guest reported a crash")

func internalData(ie *kvm.InternalErrorExit) string {
	n := int(ie.NData)
	if n > len(ie.Data) {
		n = len(ie.Data)
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(", data %#x", ie.Data[:n])
}
