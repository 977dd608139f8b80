package vmm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/exittrace"
	"github.com/govmm/govmm/guestlog"
	"github.com/govmm/govmm/internal/atomicfile"
	"github.com/govmm/govmm/internal/monotime"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vcpu"
	"github.com/govmm/govmm/virtio"
	"github.com/govmm/govmm/vmm/qmp"
)

// Addresses the in-kernel irqchip and Intel VMX need out of the guest's
// way (as QEMU and kvmtool place them, just below the BIOS area at 4 GiB).
const (
	tssAddr         = 0xfffbd000
	identityMapAddr = 0xfffbc000
)

// Legacy I/O ports and ISA interrupts of the PC platform.
const (
	com1Port   = 0x3f8
	com1IRQ    = 4
	com2Port   = 0x2f8
	com3Port   = 0x3e8
	com4Port   = 0x2e8
	debugPort  = 0x510 // written by test guests; the value is recorded
	acpiPMPort = 0x600 // HW-reduced ACPI sleep control/status and reset
	// powerButtonGSI is the Generic Event Device's interrupt (the power
	// button): ISA IRQ 9, the ACPI SCI's on a PC, free here.
	powerButtonGSI = 9
)

// QEMU's ShutdownCause names, which QMP clients see in SHUTDOWN and RESET
// events.
const (
	CauseHostQuit   = qmp.ReasonQuit
	CauseHostReset  = qmp.ReasonReset
	CauseHostSignal = "host-signal"
	CauseGuestOff   = "guest-shutdown"
	CauseGuestReset = "guest-reset"
	CauseGuestPanic = "guest-panic"
	// CauseHostError: govmm could not go on (a reset that could not
	// load the kernel again, KVM unable to run the guest).
	CauseHostError = "host-error"
)

// Outcome is how a VM run ended.
type Outcome struct {
	Reason vcpu.StopReason
	VCPU   int    // the vCPU whose exit ended it, -1 for a device or the host
	ByHost bool   // the host ended it (signal, QMP), not the guest
	Cause  string // QEMU's ShutdownCause (Cause* above)
	Err    error  // set for crashes
}

// causeOf is the ShutdownCause of an end that did not name one.
func causeOf(o Outcome) string {
	switch {
	case o.ByHost:
		return CauseHostSignal
	case o.Reason == vcpu.PowerOff || o.Reason == vcpu.Halted:
		return CauseGuestOff
	case o.Reason == vcpu.Reset || o.Reason == vcpu.Shutdown:
		return CauseGuestReset
	case o.Reason == vcpu.Crashed:
		return CauseGuestPanic
	}
	return CauseHostSignal
}

// Words says, for a person, how the VM ended and who asked for it.
func (o Outcome) Words() string {
	switch {
	case o.Cause == CauseHostError:
		return "govmm could not go on"
	case o.Err != nil:
		return "guest crashed"
	}
	switch o.Cause {
	case CauseGuestOff:
		if o.Reason == vcpu.Halted {
			return "guest halted"
		}
		return "guest powered off"
	case CauseGuestReset:
		if o.Reason == vcpu.Shutdown {
			return "guest reset by a triple fault"
		}
		return "guest asked for a reset"
	case CauseHostReset:
		return "host asked for a reset over QMP"
	case CauseHostQuit:
		return "host asked to quit over QMP"
	case CauseHostSignal:
		return "host stopped the VM"
	}
	return o.Reason.String()
}

// GuestRequested reports whether the guest itself asked to stop (reboot,
// power-off, or a halt in a raw guest).
func (o Outcome) GuestRequested() bool {
	switch o.Reason {
	case vcpu.Reset, vcpu.PowerOff, vcpu.Halted:
		return o.Err == nil && !o.ByHost
	}
	return false
}

// VM is one assembled virtual machine.
type VM struct {
	cfg   Config
	sys   *kvm.System
	kvm   *kvm.VM
	mem   *Memory
	vcpus []*vcpu.VCPU
	kcpus []*kvm.VCPU

	kernelFile, initrdFile *bootFile // a Linux guest's; initrdFile nil without one

	IOBus, MMIOBus *devices.Bus
	pci            *pciDevices // PCI host bridge and virtio devices; nil for raw guests
	serial         *devices.Serial
	i8042          *devices.I8042
	console        io.Writer           // the host side of the guest's consoles
	vconsole       *virtio.Console     // nil without Config.VirtioConsole
	stats          *exitstats.Registry // nil when statistics are off
	syms           symbolTable         // names the exits' guest RIPs; nil if none
	trace          *exittrace.Trace    // nil when exit tracing is off
	guestLog       *guestlog.Set       // the devices' rate-limited warnings, counted

	// The other reset registers, beside i8042: 0xcf9 (served by the
	// PCI host bridge, or alone without one) and port 0x92.
	resetControl *devices.ResetControl
	port92       *devices.SystemControlA

	start   time.Time
	readyMu sync.Mutex
	readyAt time.Duration // 0 until the ready marker appeared
	debug   []uint32      // values written to the debug port (readyMu)

	// pauseMu serializes Pause and Resume, so that the vCPUs end up as
	// paused says. end never takes it: a stop never waits for a pause.
	pauseMu     sync.Mutex
	endMu       sync.Mutex
	outcome     *Outcome      // how the VM ended; nil while it runs (endMu)
	paused      bool          // Pause was called and Resume not since (endMu)
	prelaunch   bool          // reset while paused and not resumed since (endMu)
	panicked    bool          // paused by a guest panic (OnPanicPause), not reset since (endMu)
	ioError     bool          // paused for a disk without space on the host, not resumed since (endMu)
	powerdownAt time.Duration // uptime of the first power button press, 0 if none (endMu)
	ended       chan struct{}

	boot machineBootState // what a reset returns to (reset.go)
	// resetting is held by Run while it resets the machine, and taken by
	// the SHUTDOWN of an end (emitShutdown) before it goes out: a reset
	// under way when a signal ends the VM finishes and sends its RESET
	// first, and one that finds the VM ended does not happen, so a RESET
	// never follows the SHUTDOWN (as QEMU's main loop, which handles a
	// shutdown request between resets, never sends one after). A QMP
	// quit (End), a pause (waitForReset) and a power button press
	// (PressPowerButton, which must not land half-way through) take it
	// too, to come before or after a reset, never during one.
	resetting sync.Mutex
	// quitting is set, under resetting, by a QMP quit about to send its
	// SHUTDOWN (control.End): no reset begins after it, and Run waits
	// for the end the quit asks for next.
	quitting  bool
	resetMu   sync.Mutex
	resetWhy  string                            // cause of a reset asked for and not done yet (resetMu)
	resetDone chan struct{}                     // closed once that reset is done (resetMu)
	onReset   func(cause string)                // emits RESET; set by ServeQMP (resetMu)
	onPanic   func(action string, stopped bool) // emits GUEST_PANICKED (and STOP); set by ServeQMP (resetMu)
	// crashLoaded throttles GUEST_CRASHLOADED (its repeats say nothing
	// new: once a second), guestResets the RESETs of the guest's resets
	// (at most 100 a second: a Linux reboot takes a third of a second,
	// and the reset count in the exit table counts every one).
	crashLoaded, guestResets eventThrottle
	// emit sends QMP events; set by ServeQMP (resetMu).
	emit      func(events ...qmp.Event)
	qmpServer atomic.Pointer[qmp.Server] // for RemoveQMPSocket
	resetKick chan struct{}              // one slot: wakes Run for a reset
	resets    atomic.Uint64
}

// New builds a VM: memory, irqchip, devices, the guest image and vCPUs. It
// runs nothing yet.
func New(cfg Config) (_ *VM, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v := &VM{cfg: cfg, start: time.Now(), ended: make(chan struct{}), guestLog: &guestlog.Set{}, resetKick: make(chan struct{}, 1),
		crashLoaded: eventThrottle{every: time.Second}, guestResets: eventThrottle{every: 10 * time.Millisecond}}
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	if v.sys, err = kvm.Open(); err != nil {
		return nil, err
	}
	if max := v.maxCPUs(); cfg.CPUs > max {
		return nil, fmt.Errorf("--smp %d: this host's KVM allows at most %d vCPUs", cfg.CPUs, max)
	}
	if err := cfg.Knobs.validate(v.sys); err != nil {
		return nil, err
	}
	if v.kvm, err = v.sys.CreateVM(); err != nil {
		return nil, err
	}
	if err := cfg.Knobs.applyVM(v.kvm); err != nil {
		return nil, err
	}
	supported, err := v.sys.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	if err := checkPhysBits(supported, cfg.MemSize); err != nil {
		return nil, err
	}
	if v.mem, err = newMemory(cfg.MemSize, cfg.Memory); err != nil {
		return nil, err
	}
	if err = v.mem.register(v.kvm); err != nil {
		return nil, err
	}
	irqchip := cfg.Raw == nil
	if irqchip {
		if err = v.createIRQChip(); err != nil {
			return nil, err
		}
	}
	if cfg.ExitStats {
		v.stats = exitstats.NewRegistry()
		if cfg.ExitRIPs {
			v.stats.TrackRIPs()
			if v.syms, err = cfg.guestSymbols(); err != nil {
				return nil, err
			}
		}
	}
	// The rows' names: the statistics' own, or for the trace alone a
	// registry that only names.
	names := v.stats
	if cfg.ExitTraceEvents > 0 {
		if names == nil {
			names = exitstats.NewRegistry()
		}
		v.trace = exittrace.New(cfg.ExitTraceEvents, names)
		if v.syms == nil {
			if v.syms, err = cfg.guestSymbols(); err != nil {
				return nil, err
			}
		}
		if v.syms != nil {
			v.trace.Symbolize(v.syms.Name)
		}
	}
	if err = v.addDevices(irqchip); err != nil {
		return nil, err
	}
	syncCap := v.kvm.CheckExtension(kvm.CapSyncRegs)
	for i := 0; i < cfg.CPUs; i++ {
		k, err := v.kvm.CreateVCPU(i)
		if err != nil {
			return nil, err
		}
		v.kcpus = append(v.kcpus, k)
		if i == 0 {
			useTSCClock(k)
		}
		if err := setupCPU(k, supported, cfg.CPUs, irqchip, cfg.Knobs.PVHaltPoll); err != nil {
			return nil, err
		}
		vc := vcpu.Config{IO: v.IOBus, MMIO: v.MMIOBus, SyncRegs: cfg.SyncRegs, HostCPUs: cfg.Knobs.hostCPUs(i),
			Stats: v.stats.NewVCPU(i), Trace: v.trace.NewVCPU(i), Registry: names}
		v.vcpus = append(v.vcpus, vcpu.New(k, vc, syncCap))
	}
	if err := v.saveBootState(irqchip); err != nil {
		return nil, fmt.Errorf("record the boot state for resets: %w", err)
	}
	if err := v.openBootFiles(); err != nil {
		return nil, err
	}
	if err := v.load(); err != nil {
		return nil, err
	}
	v.boot.loaded = true
	return v, nil
}

// useTSCClock stamps exits with the TSC at the rate KVM gives for it,
// where the host keeps time with the TSC (monotime.UseTSC): ~20 ns less
// per timed exit than the vDSO clock. Elsewhere, or if KVM cannot say,
// the runtime's clock stays, which is only slower.
func useTSCClock(k *kvm.VCPU) {
	if khz, err := k.TSCKHz(); err == nil {
		monotime.UseTSC(khz)
	}
}

// openBootFiles opens a Linux guest's kernel and initrd for the VM's
// lifetime.
func (v *VM) openBootFiles() (err error) {
	if v.cfg.Raw != nil {
		return nil
	}
	if v.kernelFile, err = openBootFile("kernel", v.cfg.Kernel); err != nil {
		return err
	}
	if v.cfg.Initrd != "" {
		v.initrdFile, err = openBootFile("initrd", v.cfg.Initrd)
	}
	return err
}

// load puts the guest image in memory and points vCPU 0 at it, at boot
// and after every reset.
func (v *VM) load() error {
	if v.cfg.Raw != nil {
		return v.loadRaw(v.cfg.Raw)
	}
	return v.loadLinux()
}

// maxCPUs is the vCPU limit: what KVM allows, and what an 8-bit xAPIC ID
// in the MP table can number (255 is the broadcast ID).
func (v *VM) maxCPUs() int {
	n := v.sys.CheckExtension(kvm.CapMaxVCPUs)
	if n == 0 {
		n = v.sys.CheckExtension(kvm.CapNRVCPUs)
	}
	if n == 0 {
		n = 4 // the documented default when neither is reported
	}
	if n > 254 {
		n = 254
	}
	return n
}

func (v *VM) createIRQChip() error {
	if err := v.kvm.SetTSSAddr(tssAddr); err != nil {
		return err
	}
	if err := v.kvm.SetIdentityMapAddr(identityMapAddr); err != nil {
		return err
	}
	if err := v.kvm.CreateIRQChip(); err != nil {
		return err
	}
	return v.kvm.CreatePIT2()
}

// irqLine drives one in-kernel irqchip input for a legacy device.
type irqLine struct {
	vm  *kvm.VM
	gsi uint32
}

func (l irqLine) SetLevel(high bool) error { return l.vm.IRQLine(l.gsi, high) }

func (v *VM) addDevices(irqchip bool) error {
	v.IOBus = devices.NewBus("io")
	v.MMIOBus = devices.NewBus("mmio")
	v.IOBus.SetGuestLog(v.guestLog.Logger("io"))
	v.MMIOBus.SetGuestLog(v.guestLog.Logger("mmio"))
	var irq devices.IRQLine
	if irqchip {
		irq = irqLine{v.kvm, com1IRQ}
	}
	out := v.cfg.Console
	if out == nil {
		out = io.Discard
	}
	v.console = &readyWatcher{vm: v, out: out, marker: v.readyMarker()}
	v.serial = devices.NewSerial(irq, v.console)
	reset := func() { v.guestReset(-1, vcpu.Reset) }
	v.i8042 = devices.NewI8042(reset)
	v.resetControl = devices.NewResetControl(reset)
	v.port92 = devices.NewSystemControlA(reset)
	powerOff := func() { v.end(Outcome{Reason: vcpu.PowerOff, VCPU: -1}) }
	for _, d := range []struct {
		name       string
		base, size uint64
		dev        devices.Device
	}{
		{"serial", com1Port, devices.SerialSize, v.serial},
		{"i8042", devices.I8042Base, devices.I8042Size, v.i8042},
		{"rtc", devices.RTCBase, devices.RTCSize, devices.NewRTC(nil)},
		{"debug", debugPort, 4, devices.NewDebugPort(v.noteDebug)},
		// The POST port: Linux writes it for I/O delays.
		{"post", 0x80, 1, devices.NewDiscard(0xff)},
		// COM2-4, which Linux's 8250 driver probes whatever ACPI says:
		// no UART answers (all ones), as on QEMU's pc machine with one
		// serial port. Claimed so that every boot does not log 18
		// unclaimed accesses; one row in the exit table.
		{"com2-4", com2Port, devices.SerialSize, devices.NewDiscard(0xff)},
		{"com2-4", com3Port, devices.SerialSize, devices.NewDiscard(0xff)},
		{"com2-4", com4Port, devices.SerialSize, devices.NewDiscard(0xff)},
		{"acpi-pm", acpiPMPort, devices.ACPIPMSize, devices.NewACPIPM(powerOff, reset)},
		{"port92", devices.Port92, 1, v.port92},
	} {
		if _, err := v.IOBus.Register(d.name, d.base, d.size, d.dev); err != nil {
			return fmt.Errorf("register %s: %w", d.name, err)
		}
	}
	if irqchip {
		return v.addPCI() // pci.go; the host bridge serves 0xcf9
	}
	// No host bridge: 0xcf9 still resets, as on any PC.
	if _, err := v.IOBus.Register("reset-control", devices.ResetControlPort, 1, v.resetControl); err != nil {
		return fmt.Errorf("register reset-control: %w", err)
	}
	return nil
}

func (v *VM) readyMarker() string {
	if v.cfg.ReadyMarker != "" {
		return v.cfg.ReadyMarker
	}
	return DefaultReadyMarker
}

func (v *VM) noteDebug(val uint32) {
	v.readyMu.Lock()
	if len(v.debug) < 1<<16 {
		v.debug = append(v.debug, val)
	}
	v.readyMu.Unlock()
}

// DebugWrites returns the values guests wrote to the debug port.
func (v *VM) DebugWrites() []uint32 {
	v.readyMu.Lock()
	defer v.readyMu.Unlock()
	return append([]uint32(nil), v.debug...)
}

// ReadyAfter is how long after New the guest printed its ready marker, or 0.
func (v *VM) ReadyAfter() time.Duration {
	v.readyMu.Lock()
	defer v.readyMu.Unlock()
	return v.readyAt
}

// Input feeds host keyboard input to the serial console, or to the
// virtio console when there is one (the guest's hvc0). It waits while
// the guest has not read what came before, as QEMU stops reading its
// character device, and returns how many bytes reached the device: all
// of p unless the VM ended first.
func (v *VM) Input(p []byte) int {
	var in interface {
		Input(p []byte) int
		Room() <-chan struct{}
	} = v.serial
	if v.vconsole != nil {
		in = v.vconsole
	}
	n := in.Input(p)
	for n < len(p) {
		select {
		case <-in.Room():
		case <-v.ended:
			return n
		}
		n += in.Input(p[n:])
	}
	return n
}

// Stats returns a snapshot of the exit statistics (empty when off), its
// guest RIPs named where a symbol table has them.
func (v *VM) Stats() exitstats.Snapshot {
	s := v.stats.Snapshot()
	if v.syms != nil {
		s.Symbolize(v.syms.Name)
	}
	return s
}

// Memory is the guest RAM.
func (v *VM) Memory() *Memory { return v.mem }

// VCPUs returns the vCPUs, for control and inspection.
func (v *VM) VCPUs() []*vcpu.VCPU { return v.vcpus }

// Run runs every vCPU until the guest or the host ends the VM, and returns
// how it ended; a reset restarts the machine in place and Run goes on.
// All vCPU threads have returned when Run does.
func (v *VM) Run() Outcome {
	for v.runUntilReset() {
		if err := v.resetUnlessEnded(); err != nil {
			v.end(Outcome{Reason: vcpu.Crashed, VCPU: -1, ByHost: true, Cause: CauseHostError, Err: fmt.Errorf("machine reset: %w", err)})
			break
		}
	}
	v.serial.Flush()
	if v.vconsole != nil {
		v.vconsole.Flush() // its output reaches Console from a goroutine
	}
	v.endMu.Lock()
	defer v.endMu.Unlock()
	return *v.outcome
}

// runUntilReset runs the vCPUs until the VM ends (false) or a reset is due
// (true). Every vCPU thread has returned either way.
func (v *VM) runUntilReset() bool {
	select {
	case <-v.ended:
		return false // ended during the reset before
	default:
	}
	var wg sync.WaitGroup
	for i, c := range v.vcpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch reason, err := c.Run(); {
			case reason == vcpu.Reset || reason == vcpu.Shutdown:
				// A triple fault resets a PC, as under QEMU.
				v.guestReset(i, reason)
			case reason == vcpu.Crashed && !errors.Is(err, vcpu.ErrGuestCrash):
				// KVM could not run the guest (an internal error, a
				// failed entry), or govmm could not: no guest panic,
				// as QMP clients were told (an audit).
				v.end(Outcome{Reason: reason, VCPU: i, ByHost: true, Cause: CauseHostError, Err: err})
			case reason != vcpu.Stopped || err != nil:
				v.end(Outcome{Reason: reason, VCPU: i, Err: err})
			}
		}()
	}
	reset := false
	select {
	case <-v.ended:
	case <-v.resetKick:
		reset = true
	}
	// The devices first: a vCPU serving a notification itself (no
	// ioeventfd) could otherwise be kept from stopping for ever by a
	// guest whose ring refills itself.
	v.stopQueues()
	for _, c := range v.vcpus {
		c.Stop()
	}
	wg.Wait()
	select {
	case <-v.ended:
		return false // an end wins over a reset asked for at the same time
	default:
		return reset
	}
}

// guestReset handles the guest's reset request (a reboot through the
// i8042 or the ACPI reset register, a triple fault) from vCPU i (-1: a
// device): a reset in place, or the end of the VM with --no-reboot. It
// never blocks, as device callbacks must not.
func (v *VM) guestReset(i int, reason vcpu.StopReason) {
	if v.cfg.NoReboot {
		v.end(Outcome{Reason: reason, VCPU: i, Cause: CauseGuestReset})
		return
	}
	v.requestReset(CauseGuestReset)
}

// errResetJoined is what Reset returns when its reset joined one the
// guest asked for (control maps it to qmp.ErrResetJoined).
var errResetJoined = errors.New("the host's reset joined the guest's")

// Reset resets the machine for the host (QMP system_reset) and returns
// once the reset is done, or an error once the VM has ended instead (the
// reset failed, or something else ended it first); with Config.NoReboot
// it ends the VM. It does not wait for Run to start: a reset asked for
// before Run happens when Run starts.
func (v *VM) Reset() error {
	if v.cfg.NoReboot {
		v.end(Outcome{Reason: vcpu.Reset, VCPU: -1, ByHost: true, Cause: CauseHostReset})
		return nil
	}
	done, first := v.requestReset(CauseHostReset)
	// Joined to the guest's reset, whose RESET the VM emits (onReset):
	// the QMP server must not emit another for the same reset.
	var joined error
	if first != CauseHostReset {
		joined = errResetJoined
	}
	select {
	case <-done:
		return joined
	case <-v.ended:
	}
	select {
	case <-done: // done, then ended by something else
		return joined
	default:
	}
	v.endMu.Lock()
	defer v.endMu.Unlock()
	if v.outcome.Err != nil {
		return v.outcome.Err
	}
	return fmt.Errorf("the VM ended (%s) before the reset", v.outcome.Words())
}

// requestReset asks Run for a reset and returns a channel closed once it
// is done. Requests that arrive before it is done join it (the first
// cause is the one reported), as QEMU coalesces reset requests.
func (v *VM) requestReset(cause string) (done <-chan struct{}, first string) {
	v.resetMu.Lock()
	defer v.resetMu.Unlock()
	if v.resetWhy == "" {
		v.resetWhy = cause
		v.resetDone = make(chan struct{})
		select {
		case v.resetKick <- struct{}{}:
		default: // cannot happen: the slot empties before resetWhy does
		}
	}
	return v.resetDone, v.resetWhy
}

// Resets is how many machine resets there have been.
func (v *VM) Resets() uint64 { return v.resets.Load() }

// resetUnlessEnded resets the machine, holding resetting throughout (see
// there), unless the VM has ended or a quit is on its way, whose end it
// then waits for; Run sees the end next.
func (v *VM) resetUnlessEnded() error {
	v.resetting.Lock()
	select {
	case <-v.ended:
		v.resetting.Unlock()
		return nil
	default:
	}
	if v.quitting {
		v.resetting.Unlock()
		<-v.ended
		return nil
	}
	defer v.resetting.Unlock()
	return v.reset()
}

// reset restarts the machine in place; no vCPU runs. Devices stop first,
// so none writes guest memory after it is dropped; the image is loaded
// again after the vCPUs' boot state is back, as New does.
func (v *VM) reset() error {
	if err := v.resetDevices(); err != nil {
		return err
	}
	if err := v.mem.zero(); err != nil {
		return err
	}
	if err := v.restoreBootState(); err != nil {
		return err
	}
	if err := v.load(); err != nil {
		return err
	}
	for _, c := range v.vcpus {
		c.Rearm() // a Pause stays: a paused VM stays paused, as in QEMU
	}
	v.resets.Add(1)
	v.endMu.Lock()
	v.prelaunch, v.panicked, v.ioError = v.paused, false, false
	v.endMu.Unlock()
	v.resetMu.Lock()
	cause, done, emit := v.resetWhy, v.resetDone, v.onReset
	v.resetWhy, v.resetDone = "", nil
	v.resetMu.Unlock()
	if emit != nil && (cause != CauseGuestReset || v.guestResets.allow(time.Now())) {
		emit(cause)
	}
	close(done)
	return nil
}

// resetDevices puts every device in its power-on state.
func (v *VM) resetDevices() error {
	v.serial.Reset()
	v.i8042.Reset()
	v.resetControl.Reset()
	v.port92.Reset()
	return v.resetPCI() // pci.go
}

// eventThrottle lets a QMP event the guest can repeat at will out at most
// once per every (none: no limit); repeats in between are dropped. A
// guest writing pvpanic's crash-loaded bit in a loop (34,000 times a
// second in an audit), or resetting in a loop (a triple fault at once,
// 5,000 a second), filled every QMP client's queue, and a client that
// stopped reading for a few seconds was hung up on. QEMU throttles its
// guest-driven events (RTC_CHANGE, WATCHDOG, ...) the same way.
type eventThrottle struct {
	every time.Duration
	mu    sync.Mutex
	last  time.Time // zero before the first
}

func (t *eventThrottle) allow(now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.last.IsZero() && now.Sub(t.last) < t.every {
		return false
	}
	t.last = now
	return true
}

// errGuestPanic is how a guest panic reported through pvpanic ends the VM.
var errGuestPanic = errors.New("guest kernel panicked (reported through pvpanic)")

// guestPanicked handles the guest's pvpanic report, on the vCPU thread
// that wrote it: GUEST_PANICKED for QMP clients, then the end of the VM
// as a crash, or with OnPanicPause a pause. A crash kernel being loaded
// is only told to QMP clients (GUEST_CRASHLOADED), as QEMU does.
func (v *VM) guestPanicked(events uint8) {
	v.resetMu.Lock()
	emit := v.onPanic
	v.resetMu.Unlock()
	if events&devices.PVPanicPanicked == 0 {
		// Crash loaded: the guest runs on.
		if emit != nil && v.crashLoaded.allow(time.Now()) {
			emit("", false)
		}
		return
	}
	action := v.cfg.OnPanic
	if action == OnPanicPoweroff {
		if emit != nil {
			emit(action, false)
		}
		v.end(Outcome{Reason: vcpu.Crashed, VCPU: -1, Cause: CauseGuestPanic, Err: errGuestPanic})
		return
	}
	// Paused before the event goes out, so a client that reacts to it sees
	// guest-panicked, and a reset it asks for finds the VM paused. The
	// state and the events change together, under endMu, as every run
	// state change and its event do (pauseThen, resumeAfter): a cont
	// between them resumed the VM and sent RESUME before GUEST_PANICKED
	// and STOP, so clients were told stopped while it ran (an audit). The
	// vCPUs park at their next exit (this one on its way out of this MMIO
	// exit): VM.Pause would wait for this thread to park.
	v.endMu.Lock()
	defer v.endMu.Unlock()
	running := v.statusLocked() == "running"
	v.panicked, v.paused = true, true
	// Neither waits: the queues' pause is a flag, and each vCPU parks at
	// its next exit. A cont between these and the events would find them
	// still to come, and the VM paused while clients were told RESUME.
	v.pauseQueues()
	for _, c := range v.vcpus {
		c.RequestPause()
	}
	if emit != nil {
		emit(action, running)
	}
}

// stopForNoSpace pauses the VM because disk found no space on the host
// for a write, which the disk keeps (virtio.Block.SetNoSpace): QEMU's
// werror=enospc, its default. QMP clients see BLOCK_IO_ERROR, then STOP
// with the run state io-error; cont runs the kept writes again. It runs
// on the disk's goroutine, so the pause (which waits for the devices)
// goes on one of its own.
func (v *VM) stopForNoSpace(disk string, err error) {
	go func() {
		v.resetMu.Lock()
		emit := v.emit
		v.resetMu.Unlock()
		if emit == nil || v.Status() == "shutdown" {
			return // nobody could cont: SetNoSpace is only set with QMP
		}
		emit(qmp.Event{Name: "BLOCK_IO_ERROR", Data: map[string]any{
			"device": disk, "node-name": disk, "operation": "write", "action": "stop",
			"nospace": true, "reason": err.Error(),
		}})
		// Under pauseMu, STOP goes out before a cont's RESUME can.
		v.pauseMu.Lock()
		defer v.pauseMu.Unlock()
		v.endMu.Lock()
		if v.outcome != nil {
			v.endMu.Unlock()
			return
		}
		// A QMP stop may have paused it first: one STOP, as QEMU.
		if v.statusLocked() == "running" {
			emit(qmp.Event{Name: "STOP"})
		}
		v.ioError, v.paused = true, true
		v.endMu.Unlock()
		v.pauseLocked()
	}()
}

// Stop ends the VM from the host side (SIGTERM, QMP quit). It does not
// wait; Run returns once every vCPU has left the guest.
func (v *VM) Stop() { v.end(Outcome{Reason: vcpu.Stopped, VCPU: -1, ByHost: true}) }

// PressPowerButton presses the ACPI power button: the guest is asked to
// shut down and decides for itself (Linux reports KEY_POWER to user
// space, whose handler powers off). It never waits: a paused guest finds
// the interrupt pending when it resumes, and a guest that ignores the
// button keeps running, as under QEMU.
func (v *VM) PressPowerButton() error {
	if v.cfg.Raw != nil {
		return nil // no irqchip, no ACPI: nothing to press
	}
	v.endMu.Lock()
	if v.powerdownAt == 0 {
		v.powerdownAt = max(v.Uptime(), 1)
	}
	v.endMu.Unlock()
	// An edge on the GED's interrupt line; KVM's IOAPIC latches it even
	// while the guest has it masked. Not in the middle of a reset: one
	// landing between the restores of the two PICs would leave the
	// cascade pending in the power-on master (restoreBootState).
	v.resetting.Lock()
	defer v.resetting.Unlock()
	l := irqLine{v.kvm, powerButtonGSI}
	if err := l.SetLevel(true); err != nil {
		return fmt.Errorf("power button: %w", err)
	}
	if err := l.SetLevel(false); err != nil {
		return fmt.Errorf("power button: %w", err)
	}
	return nil
}

// PowerdownAskedAt is the uptime at which the host first pressed the power
// button, or 0 if it never did.
func (v *VM) PowerdownAskedAt() time.Duration {
	v.endMu.Lock()
	defer v.endMu.Unlock()
	return v.powerdownAt
}

// Pause parks every vCPU outside the guest; Resume lets them go on.
// Pausing a VM that has not started makes it start paused. Stop ends a
// paused VM as it does a running one.
func (v *VM) Pause() { v.pauseThen(nil) }

// pauseThen is Pause, calling stopped (QMP's STOP), if the VM was
// running, with the change of state: before the devices and vCPUs are
// parked, and before any other pause or resume.
func (v *VM) pauseThen(stopped func()) {
	v.pauseMu.Lock()
	defer v.pauseMu.Unlock()
	v.endMu.Lock()
	if v.statusLocked() == "running" && stopped != nil {
		stopped()
	}
	v.paused = true
	v.endMu.Unlock()
	v.pauseLocked()
}

// pauseLocked parks the devices and vCPUs of a VM whose state says
// paused already; pauseMu is held.
func (v *VM) pauseLocked() {
	// The devices first, so that a vCPU serving one parks after the
	// chain in hand, and no device works for a paused guest: when Pause
	// returns, the guest's memory and disks stay as they are.
	v.pauseQueues()
	v.waitNotifies()
	for _, c := range v.vcpus {
		c.Pause()
	}
	v.waitForReset()
	// Once more with the vCPUs parked: one may have reset a device (which
	// clears its queues' pause) and notified it again in between.
	v.pauseQueues()
	v.waitNotifies()
}

// waitForReset waits until a reset under way, or asked for and not yet
// done (a guest reboot on its way), is done, or the VM ended. A pause
// that lands then returns after it, as QEMU carries out a reset asked for
// before a stop: once a pause returned nothing changes the guest's
// memory. A stop used to return "paused" while the reset then zeroed and
// reloaded the guest's RAM (found by an audit). The reset parks no
// vCPU: a paused VM's vCPUs park again before the guest runs.
func (v *VM) waitForReset() {
	v.resetMu.Lock()
	done := v.resetDone
	v.resetMu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-v.ended:
		}
	}
	// One past taking its request (it clears resetDone before its RESET)
	// holds resetting until it is done.
	v.resetting.Lock()
	v.resetting.Unlock()
}

// Resume undoes Pause.
func (v *VM) Resume() { v.resumeAfter(nil) }

// resumeAfter is Resume, calling resumed (QMP's RESUME), if the VM was
// not running, before anything runs again.
func (v *VM) resumeAfter(resumed func()) {
	v.pauseMu.Lock()
	defer v.pauseMu.Unlock()
	// Under endMu with the state, so that a guest panic's pause (which
	// cannot take pauseMu from its vCPU) comes wholly before or after.
	v.endMu.Lock()
	defer v.endMu.Unlock()
	if resumed != nil && v.statusLocked() != "running" {
		resumed()
	}
	v.paused, v.prelaunch, v.panicked, v.ioError = false, false, false, false
	v.resumeQueues()
	for _, c := range v.vcpus {
		c.Resume()
	}
}

// Status is the VM's run state in QEMU's words: "running", "paused",
// "guest-panicked" (paused by a guest panic, --on-panic pause),
// "io-error" (paused for a disk without space on the host),
// "prelaunch" (reset while paused: QEMU's state for a machine that has
// not run since its reset) or "shutdown".
func (v *VM) Status() string {
	v.endMu.Lock()
	defer v.endMu.Unlock()
	return v.statusLocked()
}

// statusLocked is Status with endMu held.
func (v *VM) statusLocked() string {
	switch {
	case v.outcome != nil:
		return "shutdown"
	case v.prelaunch:
		return "prelaunch"
	case v.panicked:
		return "guest-panicked"
	case v.ioError:
		return "io-error"
	case v.paused:
		return "paused"
	}
	return "running"
}

// end records the first way the VM ended and wakes Run. It never blocks,
// so devices may call it from a vCPU thread.
func (v *VM) end(o Outcome) {
	v.endMu.Lock()
	defer v.endMu.Unlock()
	if v.outcome != nil {
		return
	}
	if o.Cause == "" {
		o.Cause = causeOf(o)
	}
	v.outcome = &o
	close(v.ended)
	for _, c := range v.vcpus {
		c.Stop()
	}
}

// Close releases every resource; the VM must not be running.
func (v *VM) Close() error {
	// Devices first: their ioeventfds are deassigned through the VM fd.
	errs := []error{v.closePCI()}
	if v.serial != nil {
		v.serial.Close()
	}
	for _, k := range v.kcpus {
		errs = append(errs, k.Close())
	}
	if v.kvm != nil {
		errs = append(errs, v.kvm.Close())
	}
	if v.mem != nil {
		errs = append(errs, v.mem.close())
	}
	errs = append(errs, v.kernelFile.close(), v.initrdFile.close())
	if v.syms != nil {
		errs = append(errs, v.syms.Close())
	}
	if v.sys != nil {
		errs = append(errs, v.sys.Close())
	}
	return errors.Join(errs...)
}

// readyWatcher passes console output through and notes when the ready
// marker first appears. The marker may straddle writes, so the last
// len(marker)-1 bytes are kept; nothing else is, so memory and the time
// the lock is held stay small whatever one write carries (a guest can
// hand the virtio console all of its RAM in one request). The serial
// port and the virtio console may write at once.
type readyWatcher struct {
	mu     sync.Mutex
	vm     *VM
	out    io.Writer
	marker string
	tail   []byte // the end of the output so far, shorter than marker
	seen   bool
}

func (w *readyWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.seen && w.scan(p) {
		w.seen = true
		w.tail = nil
		w.vm.readyMu.Lock()
		w.vm.readyAt = time.Since(w.vm.start)
		w.vm.readyMu.Unlock()
	}
	return w.out.Write(p)
}

// scan reports whether the marker ends inside p, and keeps the tail of
// the output for the next write.
func (w *readyWatcher) scan(p []byte) bool {
	m := []byte(w.marker)
	keep := len(m) - 1
	if keep < 0 {
		return true
	}
	// A marker that starts in the tail ends in p's first keep bytes.
	w.tail = append(w.tail, p[:min(len(p), keep)]...)
	if bytes.Contains(w.tail, m) || bytes.Contains(p, m) {
		return true
	}
	if len(p) >= keep {
		w.tail = append(w.tail[:0], p[len(p)-keep:]...)
	} else if len(w.tail) > keep {
		w.tail = append(w.tail[:0], w.tail[len(w.tail)-keep:]...)
	}
	return false
}

// Uptime is the time since the VM was created.
func (v *VM) Uptime() time.Duration { return time.Since(v.start) }

// ExitTracing reports whether the VM records its exit timeline.
func (v *VM) ExitTracing() bool { return v.trace != nil }

// SaveExitTrace writes the exit timeline recorded so far to path, in the
// Chrome trace-event format (atomicfile.Save: a regular file is replaced
// whole, a FIFO or device written as a stream). The VM may be running.
func (v *VM) SaveExitTrace(path string) (exittrace.Written, error) {
	return v.saveExitTrace(func(write func(io.Writer) error) error { return atomicfile.Save(path, write) })
}

// saveExitTrace writes the trace through save, which streams it to a file.
func (v *VM) saveExitTrace(save func(write func(io.Writer) error) error) (exittrace.Written, error) {
	var w exittrace.Written
	if v.trace == nil {
		return w, errors.New("exit tracing is off: start govmm with --exit-trace FILE")
	}
	err := save(func(out io.Writer) (err error) {
		w, err = v.trace.Write(out)
		return err
	})
	return w, err
}
