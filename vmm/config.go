package vmm

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/govmm/govmm/exittrace"
	"github.com/govmm/govmm/vmm/kernelcache"
)

// DefaultCmdline is what a Linux guest gets without --append.
const DefaultCmdline = "console=ttyS0 reboot=k panic=-1 quiet"

// MaxMemSize is the largest guest RAM govmm maps, a fixed bound: RAM past
// 3 GiB lies above the 32-bit PCI hole (boot.LowRAMTop), so 1 TiB of it
// ends at 1 TiB + 1 GiB. Whether this host can hold a size is checked when the VM is built:
// its CPU's physical address bits (checkPhysBits) and the reservation of
// the mapping (newMemory).
const MaxMemSize = 1 << 40

// RawGuest is a flat binary run without a kernel: the tiny guests that
// exercise exit paths. It is copied to LoadAddr and entered there, in real
// mode or, with LongMode, in 64-bit mode with page tables that identity-map
// the low 4 GiB (RAM above 4 GiB stays unmapped).
type RawGuest struct {
	Code     []byte
	LoadAddr uint64
	LongMode bool
}

// Config describes one VM.
type Config struct {
	Kernel  string // bzImage or ELF vmlinux
	Initrd  string // optional
	Cmdline string
	// Raw, when set, replaces Kernel: no irqchip, no boot protocol, and a
	// HLT that reaches user space ends the VM.
	Raw *RawGuest

	MemSize uint64       // bytes
	Memory  MemoryConfig // how guest RAM is backed (memory.go)
	CPUs    int

	Console io.Writer // the serial port's output; nil discards it
	// ReadyMarker is the console text whose first appearance marks the
	// guest as booted, for boot timing. Empty means DefaultReadyMarker.
	ReadyMarker string

	ExitStats bool // time every exit (exitstats)
	SyncRegs  bool // use KVM_CAP_SYNC_REGS where KVM has it
	// ExitRIPs, with ExitStats, also finds per vCPU and exit row the
	// guest RIPs that cause most exits (exitstats.Registry.TrackRIPs),
	// named from GuestSymbols or else from an ELF Kernel's symbol table
	// (symbols.go).
	ExitRIPs     bool
	GuestSymbols string // a System.map or an ELF vmlinux; optional
	// ExitTraceEvents, when positive, records the exit timeline
	// (exittrace): the last ExitTraceEvents events of each vCPU and each
	// virtqueue track (rounded up to a power of two). 0 turns it off.
	ExitTraceEvents int

	Knobs Knobs // halt polling, HLT pass-through, vCPU pinning
	Boot  Boot  // how a bzImage is entered
	// KernelCache, when set, keeps the ELF unpacked from a bzImage
	// (BootDirect), so that the next boot of the same bzImage reads it
	// instead of decompressing the payload again.
	KernelCache *kernelcache.Cache

	// virtio-pci devices (Linux guests only; see pci.go).
	Disks []DiskConfig // virtio-blk disks, in PCI slot order
	// BlockPoll bounds how long a disk queue's notifier polls the queue
	// for more requests after serving it (virtio.TransportConfig.PollMax);
	// 0 never polls.
	BlockPoll time.Duration
	Nets      []NetConfig // virtio-net interfaces on host taps, in PCI slot order (net.go)
	RNG       bool        // a virtio-rng entropy device
	// VirtioConsole adds a virtio-console (the guest's hvc0, for
	// console=hvc0) that shares Console with the serial port and takes
	// the host's keyboard input.
	VirtioConsole bool
	NoIOEventFD   bool // queue notifications exit to user space instead of signalling an ioeventfd
	NoIRQFD       bool // interrupts by KVM_SIGNAL_MSI ioctl instead of an irqfd write
	// NoReboot makes a reset (system_reset, a guest reboot, a triple
	// fault) end the VM instead of restarting it in place, as QEMU's
	// -no-reboot does.
	NoReboot bool
	// OnPanic, when set, adds QEMU's pvpanic PCI device and says what a
	// guest panic it reports does: OnPanicPoweroff ends the VM as a crash,
	// OnPanicPause stops it in QEMU's "guest-panicked" state for QMP to
	// inspect. Empty: no device, and the guest's own panic= setting
	// decides (a reboot, with this project's test command line).
	OnPanic string
}

// What a guest panic does (Config.OnPanic), named as QEMU's GUEST_PANICKED
// event names its action.
const (
	OnPanicPoweroff = "poweroff"
	OnPanicPause    = "pause"
)

// DefaultReadyMarker is the line guests/init prints once user space runs.
const DefaultReadyMarker = "GOVMM-READY"

// Validate checks a Config before anything is allocated.
func (c *Config) Validate() error {
	if c.Raw == nil && c.Kernel == "" {
		return fmt.Errorf("no kernel given (--kernel)")
	}
	switch c.OnPanic {
	case "", OnPanicPoweroff, OnPanicPause:
	default:
		return fmt.Errorf("--on-panic %q: want %s or %s", c.OnPanic, OnPanicPoweroff, OnPanicPause)
	}
	if err := c.checkSymbolsMatch(); err != nil {
		return err
	}
	if c.Raw != nil && c.CPUs != 1 {
		// Without an irqchip nothing could send the other vCPUs a SIPI.
		return fmt.Errorf("a raw guest runs on exactly one vCPU, not %d", c.CPUs)
	}
	if c.Raw != nil && (len(c.Disks) > 0 || len(c.Nets) > 0 || c.RNG || c.VirtioConsole) {
		return fmt.Errorf("virtio devices need a Linux guest, not a raw one")
	}
	for _, n := range c.Nets {
		if err := n.validate(); err != nil {
			return err
		}
	}
	if c.ExitTraceEvents < 0 || c.ExitTraceEvents > exittrace.MaxEvents {
		return fmt.Errorf("--exit-trace-events %d: want 1 to %d", c.ExitTraceEvents, exittrace.MaxEvents)
	}
	if c.CPUs < 1 {
		return fmt.Errorf("--smp %d: need at least one vCPU", c.CPUs)
	}
	if c.MemSize < 1<<20 {
		return fmt.Errorf("--mem %d bytes: need at least 1 MiB", c.MemSize)
	}
	if c.MemSize > MaxMemSize {
		// In KiB, whole: in MiB a size just over the limit read as the
		// limit itself (found by an audit).
		return fmt.Errorf("--mem %dK: at most %d GiB (1T) is supported", (c.MemSize+1023)>>10, MaxMemSize>>30)
	}
	if c.MemSize%memPage != 0 {
		return fmt.Errorf("--mem %d bytes: not a whole number of %d KiB pages", c.MemSize, memPage>>10)
	}
	return nil
}

// memPage is the granule of guest RAM: KVM maps memory slots in pages.
const memPage = 4 << 10

// RoundMemSize rounds a guest RAM size up to a whole page, as QEMU rounds
// -m (to 8 KiB), so that a size such as 33333K is usable.
func RoundMemSize(n uint64) uint64 {
	if n > MaxMemSize {
		return n // Validate refuses it, naming what was asked
	}
	return (n + memPage - 1) &^ (memPage - 1)
}

// ParseSize parses a memory size such as 512M, 1G or 65536K. A bare number
// is MiB, as with QEMU's -m, so "-m 512" habits carry over.
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := uint64(1 << 20)
	if suffix := t[len(t)-1]; suffix < '0' || suffix > '9' {
		switch suffix {
		case 'b', 'B':
			mult = 1
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		default:
			return 0, fmt.Errorf("size %q: want a number with an optional B, K, M, G or T suffix (a bare number is MiB)", s)
		}
		t = t[:len(t)-1]
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number with an optional B, K, M, G or T suffix (a bare number is MiB)", s)
	}
	if n > (1<<63)/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n * mult, nil
}
