package vmm

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/virtio"
	"github.com/govmm/govmm/vmm/acpi"
	"github.com/govmm/govmm/vmm/boot"
)

// The PCI MMIO window: the 32-bit hole up to the IOAPIC, from 3 GiB or,
// when low RAM reaches past 3 GiB (boot.LowRAMTop: a guest of 3 to 3.5
// GiB, all of it below the hole), from above low RAM. govmm places BARs
// from its bottom, as firmware would; Linux keeps them, or moves them
// within the window the DSDT declares, the same one (acpiPCI).
const pciMMIOEnd = acpi.DefaultIOAPICAddr

// pciMMIOAlign is what the window's base is rounded up to from the top of
// low RAM: Linux reserves the stretch from the end of an e820 RAM range
// up to the next 64 MiB as "RAM buffer", in case firmware stole RAM there
// (ram_alignment in arch/x86/kernel/e820.c), and never places a BAR there
// itself. QEMU's hole starts right at the top of low RAM, but its firmware
// places BARs from the top of the window down, far from RAM. Low RAM of
// 3 GiB and of 3.5 GiB is aligned already.
const pciMMIOAlign = 64 << 20

// pciMMIOBase is the bottom of the PCI MMIO window for memSize bytes of
// RAM. A guest of less than 3 GiB keeps the window at 3 GiB, where its
// BARs always were: QEMU's hole would start lower, at the top of RAM, but
// nothing gains from BARs there.
func pciMMIOBase(memSize uint64) uint64 {
	top := (boot.LowRAMTop(memSize) + pciMMIOAlign - 1) &^ (pciMMIOAlign - 1)
	return max(top, boot.LowRAMSplit)
}

// DiskConfig is one virtio-blk disk.
type DiskConfig struct {
	Path     string // raw image file or block device
	ReadOnly bool
	// Queues is the number of request queues (VIRTIO_BLK_F_MQ), each with
	// its own notifier and MSI-X vector; 0 means one per vCPU, as QEMU's
	// num-queues default.
	Queues int
	// Direct serves the disk with O_DIRECT, around the host's page cache
	// (--disk PATH,cache=none; virtio.BlockConfig.Direct).
	Direct bool
}

// pciDevices is the VM's PCI bus: the host bridge behind ports
// 0xcf8-0xcff and one virtio-pci function per device.
type pciDevices struct {
	host       *devices.PCIHostBridge
	router     *gsiRouter
	transports []*virtio.Transport
	disks      []pciDisk
	nets       []pciNet
	nextBAR    uint64
	names      map[string]int // device name -> instances so far
}

// pciDisk is one virtio-blk disk on the bus.
type pciDisk struct {
	name string // its transport's: virtio-blk, virtio-blk1, ...
	cfg  DiskConfig
	blk  *virtio.Block
}

// pciNet is one virtio-net device on the bus.
type pciNet struct {
	name string // its transport's: virtio-net, virtio-net1, ...
	tap  string
	net  *virtio.Net
}

// addPCI creates the PCI bus and the configured virtio devices. Called
// for Linux guests only (a raw guest has no irqchip to route MSIs to).
func (v *VM) addPCI() error {
	p := &pciDevices{
		host:    devices.NewPCIHostBridge(v.MMIOBus, v.IOBus),
		router:  newGSIRouter(v.kvm, !v.cfg.NoIRQFD),
		nextBAR: pciMMIOBase(v.mem.Size()),
		names:   map[string]int{},
	}
	v.pci = p
	p.host.SetResetControl(v.resetControl)
	if _, err := v.IOBus.Register("pci", devices.PCIConfigPort, devices.PCIConfigPortSize, p.host); err != nil {
		return fmt.Errorf("register PCI host bridge: %w", err)
	}
	for _, d := range v.cfg.Disks {
		queues := d.Queues
		if queues == 0 {
			queues = min(v.cfg.CPUs, virtio.BlockMaxQueues)
		}
		blk, err := virtio.OpenBlock(virtio.BlockConfig{Path: d.Path, ReadOnly: d.ReadOnly, Queues: queues, Direct: d.Direct})
		if err != nil {
			return err
		}
		if err := v.addVirtio(blk, v.cfg.BlockPoll); err != nil {
			return err
		}
		p.disks = append(p.disks, pciDisk{name: p.transports[len(p.transports)-1].Name(), cfg: d, blk: blk})
	}
	if err := v.addNets(); err != nil { // net.go
		return err
	}
	if v.cfg.VirtioConsole {
		v.vconsole = virtio.NewConsole(v.console)
		if err := v.addVirtio(v.vconsole, 0); err != nil {
			return err
		}
	}
	if v.cfg.RNG {
		if err := v.addVirtio(virtio.NewRNG(), 0); err != nil {
			return err
		}
	}
	if v.cfg.OnPanic == "" {
		return nil // as QEMU without -device pvpanic-pci: the guest's panic= decides
	}
	panicDev, err := devices.NewPVPanic(v.guestPanicked)
	if err != nil {
		return fmt.Errorf("pvpanic: %w", err)
	}
	return p.addFunction("pvpanic", panicDev, devices.PVPanicBARSize)
}

// addVirtio puts dev on the PCI bus with its BAR at the next free place
// in the window; poll is its queues' polling bound (TransportConfig.PollMax).
// It owns dev from here on, also when it fails.
func (v *VM) addVirtio(dev virtio.Device, poll time.Duration) error {
	p := v.pci
	// Rows of the exit table are per name: a second disk is virtio-blk1.
	name := dev.Name()
	if n := p.names[name]; n > 0 {
		name = fmt.Sprintf("%s%d", name, n)
	}
	p.names[dev.Name()]++
	c := virtio.TransportConfig{
		Name: name, Memory: v.mem, MSI: p.router, GuestLog: v.guestLog, PollMax: poll,
		// Request telemetry goes with the exit statistics: off, no clock
		// is read on the request path either.
		RequestTelemetry: v.cfg.ExitStats,
		Trace:            v.trace,
	}
	if !v.cfg.NoIOEventFD {
		c.IOEventFDs = v.kvm
	}
	t, err := virtio.NewTransport(dev, c)
	if err != nil {
		if cl, ok := dev.(io.Closer); ok {
			cl.Close()
		}
		return err
	}
	p.transports = append(p.transports, t)
	return p.addFunction(name, t, virtio.BARSize)
}

// addFunction places f's BAR 0 (barSize bytes, naturally aligned) at the
// next free place in the window and puts f in the next slot.
func (p *pciDevices) addFunction(name string, f devices.PCIFunction, barSize uint64) error {
	addr := (p.nextBAR + barSize - 1) &^ (barSize - 1)
	if addr+barSize > pciMMIOEnd {
		return fmt.Errorf("%s: PCI MMIO window full", name)
	}
	if err := f.ConfigSpace().SetBARAddress(0, addr); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	p.nextBAR = addr + barSize
	if _, err := p.host.AddDevice(f); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// acpiPCI describes the host bridge for the DSDT: with ACPI on, Linux
// scans PCI only below a bridge declared there.
func (v *VM) acpiPCI() *acpi.PCIHostBridge {
	if v.pci == nil {
		return nil
	}
	base := pciMMIOBase(v.mem.Size())
	return &acpi.PCIHostBridge{MMIO32Base: uint32(base), MMIO32Size: uint32(pciMMIOEnd - base)}
}

// resetPCI resets every virtio device, then the bus: configuration
// spaces, BAR placement, the address latch. The vCPUs must have stopped.
func (v *VM) resetPCI() error {
	if v.pci == nil {
		return nil
	}
	for _, t := range v.pci.transports {
		t.ResetDevice()
	}
	v.pci.host.Reset()
	return nil
}

// stopQueues, pauseQueues, waitNotifies and resumeQueues apply the
// virtio.Transport methods of those names to every virtio function.
func (v *VM) stopQueues()   { v.eachTransport((*virtio.Transport).StopQueues) }
func (v *VM) pauseQueues()  { v.eachTransport((*virtio.Transport).PauseQueues) }
func (v *VM) waitNotifies() { v.eachTransport((*virtio.Transport).WaitNotifies) }
func (v *VM) resumeQueues() { v.eachTransport((*virtio.Transport).ResumeQueues) }

func (v *VM) eachTransport(f func(*virtio.Transport)) {
	if v.pci == nil {
		return
	}
	for _, t := range v.pci.transports {
		f(t)
	}
}

// closePCI stops the device goroutines and closes the devices (a disk
// image is flushed). The vCPUs must have stopped.
func (v *VM) closePCI() error {
	if v.pci == nil {
		return nil
	}
	var errs []error
	for _, t := range v.pci.transports {
		errs = append(errs, t.Close())
	}
	v.pci.transports = nil
	return errors.Join(errs...)
}

// VirtioQueueCounters are one virtio queue's notification and interrupt
// counts.
type VirtioQueueCounters struct {
	Device string
	Queue  int
	virtio.QueueCounters
}

// VirtioCounters returns, per virtio device and queue, how guest
// notifications arrived (ioeventfd or MMIO exit) and how many interrupts
// the device raised.
func (v *VM) VirtioCounters() []VirtioQueueCounters {
	if v.pci == nil {
		return nil
	}
	var out []VirtioQueueCounters
	for _, t := range v.pci.transports {
		for q, c := range t.Counters() {
			out = append(out, VirtioQueueCounters{Device: t.Name(), Queue: q, QueueCounters: c})
		}
	}
	return out
}

// WriteVirtioTable prints VirtioCounters as a table after a blank line
// (nothing without virtio devices), and each network device's interface
// counters (the govmm_net_* metrics) in a second one.
func (v *VM) WriteVirtioTable(w io.Writer) {
	rows := v.VirtioCounters()
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "virtio device\tqueue\tnotify ioeventfd\tnotify MMIO exit\tpolled\tinterrupts\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t\n", r.Device, r.Queue, r.NotifyEventFD, r.NotifyMMIO, r.Polled, r.Interrupts)
	}
	tw.Flush()
	if len(v.pci.nets) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "network device\ttap\trx packets\trx bytes\trx drops\ttx packets\ttx bytes\ttx drops\ttx errors\t")
	for _, n := range v.pci.nets {
		s := n.net.Stats()
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", n.name, n.tap,
			s.RxPackets, s.RxBytes, s.RxDropped, s.TxPackets, s.TxBytes, s.TxDropped-s.TxInvalid, s.TxInvalid)
	}
	tw.Flush()
}
