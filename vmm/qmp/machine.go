package qmp

import "errors"

// Machine is what the QMP server controls; the VMM implements it. Every
// method may be called from the server's connection goroutines, several at
// once when several clients are connected, so implementations must be safe
// for concurrent use. The server serializes commands among themselves (as
// QEMU's main loop does), but not against the VMM's own goroutines.
//
// The server emits the events that QEMU emits for a QMP command (STOP after
// stop, RESUME after cont, POWERDOWN, RESET, SHUTDOWN after quit); a
// Machine must not emit those again for QMP-initiated actions. It calls
// Server.Emit only for what the guest or the host did on its own (a guest
// reboot, a guest power-off, a signal).
type Machine interface {
	// Status is the VM's run state in QEMU's RunState words.
	Status() Status
	// Stop pauses all vCPUs (QMP stop). Stopping a stopped VM is not an
	// error. If the VM was running, Stop calls stopped (which emits STOP)
	// in step with the machine's other run-state changes, so that no
	// other STOP or RESUME comes between the change and its event (a stop
	// the VMM makes itself, for a full disk, gave two STOPs in a row).
	Stop(stopped func()) error
	// Cont resumes the vCPUs (QMP cont). Its error, if any, reaches the
	// client as a GenericError; QEMU refuses cont after a guest shutdown
	// with "Resetting the Virtual Machine is required". If the VM was
	// not running, Cont calls resumed (which emits RESUME) before
	// anything runs again, as QEMU does: what the guest and devices do
	// next (a disk failing again for want of space) comes after it.
	Cont(resumed func()) error
	// Powerdown asks the guest to power off (ACPI power button). The
	// server has emitted POWERDOWN already; Powerdown must not wait for
	// the guest's answer.
	Powerdown() error
	// Reset resets the VM (QMP system_reset) and returns once it is
	// done; the server then emits RESET. A machine that ends instead
	// (QEMU's -no-reboot) returns ErrResetEndsMachine at once, doing
	// nothing: the server then emits SHUTDOWN and calls Quit(ReasonReset).
	// One that joined a reset the guest asked for, whose RESET it emitted
	// itself, returns ErrResetJoined once it is done.
	Reset() error
	// Quit ends the VM for reason, ReasonQuit (QMP quit) or ReasonReset
	// (system_reset with -no-reboot). The server calls it at most once,
	// on a goroutine of its own, once the SHUTDOWN event and the reply
	// are queued, and runs no command after it; Quit may call
	// Server.Close (which lets them drain) and wait for Server.Serve to
	// return. The server does not close itself: ending the VM is the
	// VMM's call.
	Quit(reason string)
	// CPUs describes every vCPU, in index order.
	CPUs() []CPU
	// ExitStats is the JSON-marshalable table that our own command
	// query-exit-stats returns.
	ExitStats() any
	// KVMEnabled reports whether the VM runs under KVM (query-kvm).
	KVMEnabled() bool
	// MemorySize is the guest's RAM in bytes (query-memory-size-summary).
	MemorySize() uint64
}

// ErrResetEndsMachine is returned by Machine.Reset when the reset ends the
// machine (QEMU's -no-reboot): system_reset then succeeds with no RESET.
var ErrResetEndsMachine = errors.New("the reset ends the machine")

// Ender is a Machine told, before the server sends the SHUTDOWN of a
// command that ends it (quit, system_reset with -no-reboot), that the end
// is coming: End returns once nothing the machine does on its own (a
// reset under way, and its RESET) can come after the SHUTDOWN. A quit
// during a guest reboot sent RESET after SHUTDOWN (found in review). End
// must not end the machine (Quit does, once the SHUTDOWN and the reply
// are queued, so that closing the server sends them) nor wait for
// anything the server holds.
type Ender interface {
	End(reason string)
}

// ErrResetJoined is returned by Machine.Reset when the reset it asked for
// was one the guest had asked for already, and the machine emitted its
// RESET: system_reset then succeeds with no second RESET for one reset
// (found by an audit).
var ErrResetJoined = errors.New("the reset joined the guest's")

// The SHUTDOWN reasons of the commands that end the machine, which Quit
// gets (QEMU's ShutdownCause names).
const (
	ReasonQuit  = "host-qmp-quit"
	ReasonReset = "host-qmp-system-reset"
)

// Status is the VM's run state.
type Status struct {
	// Running is true while the vCPUs are allowed to run.
	Running bool
	// Status is a QEMU RunState name: "running", "paused", "prelaunch",
	// "shutdown", "guest-panicked", "internal-error", ... Clients such as
	// go-qemu reject names outside QEMU's enum, so stick to those. When
	// empty, the server derives "running" or "paused" from Running.
	Status string
}

// CPU describes one vCPU.
type CPU struct {
	// Index is the vCPU's index, 0-based (QEMU's cpu-index).
	Index int
	// ThreadID is the host thread (TID) that runs the vCPU.
	ThreadID int
	// PC is the guest RIP: current from CPUStates, as of the vCPU's last
	// exit from CPUs. query-cpus sends it as a signed
	// 64-bit number, as QEMU did, so a kernel address is negative.
	PC uint64
	// Halted is true while the vCPU waits in HLT.
	Halted bool
}

// Block is one disk, for query-block and query-blockstats.
type Block struct {
	Device     string // the name QMP clients use for it
	Qdev       string // QOM path of the device model it is attached to
	File       string // the image behind it
	ReadOnly   bool
	Direct     bool   // served with O_DIRECT (cache=none): QEMU's cache.direct
	Size       uint64 // what the guest sees, in bytes (QEMU's virtual-size)
	ActualSize uint64 // bytes the image occupies on the host
	Stats      BlockStats
	// NoSpace says a write found no space on the host and waits for cont
	// (QEMU's io-status "nospace"; libvirt's domblkerror reads it).
	NoSpace bool
}

// BlockStats are a disk's I/O counters since the VM started, as QEMU's
// BlockDeviceStats counts them: completed requests, their bytes and their
// total service time; requests that failed on the host; requests the
// guest got wrong (outside the disk). Unmap is DISCARD.
type BlockStats struct {
	ReadBytes, WriteBytes, UnmapBytes                             uint64
	ReadOps, WriteOps, FlushOps, UnmapOps                         uint64
	ReadTimeNs, WriteTimeNs, FlushTimeNs, UnmapTimeNs             uint64
	FailedReadOps, FailedWriteOps, FailedFlushOps, FailedUnmapOps uint64
	InvalidReadOps, InvalidWriteOps, InvalidUnmapOps              uint64
	WriteHighestOffset                                            uint64
}

// BlockLister is implemented by a Machine with disks.
type BlockLister interface {
	Blocks() []Block
}

// PCIFunction is one function on PCI bus 0, for query-pci.
type PCIFunction struct {
	Slot, Function             int
	Vendor, Device             uint16
	SubsystemVendor, Subsystem uint16
	Class                      uint16 // base class << 8 | subclass
	IRQPin, IRQLine            uint8  // configuration registers 0x3d and 0x3c
	Regions                    []PCIRegion
	Name                       string // qdev_id
}

// PCIRegion is one BAR, as query-pci reports it.
type PCIRegion struct {
	BAR          int
	IO           bool // an I/O BAR; otherwise memory
	Mem64        bool
	Prefetchable bool
	Size         uint64
	// Address is where the BAR decodes; -1 while it does not (decoding
	// disabled), as QEMU reports an unmapped BAR.
	Address int64
}

// CPUStateReader is implemented by a Machine that can read each vCPU's
// current RIP and halted state, briefly interrupting a running vCPU to do
// so. query-cpus uses it when it is there; query-cpus-fast never
// interrupts a vCPU (as in QEMU) and uses CPUs.
type CPUStateReader interface {
	CPUStates() []CPU
}

// ExitTraceDumper is implemented by a Machine that records its exit
// timeline, for x-govmm-dump-exit-trace.
type ExitTraceDumper interface {
	// DumpExitTrace writes the trace recorded so far to filename.
	DumpExitTrace(filename string) (TraceDump, error)
}

// TraceDump is x-govmm-dump-exit-trace's reply: what the file holds.
type TraceDump struct {
	Events  uint64 `json:"events"`  // slices written
	Dropped uint64 `json:"dropped"` // events recorded but overwritten in the bounded rings
}

// PCILister is implemented by a Machine with a PCI bus.
type PCILister interface {
	PCIFunctions() []PCIFunction
}
