package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/internal/atomicfile"
	"github.com/govmm/govmm/vcpu"
	"github.com/govmm/govmm/virtio"
	"github.com/govmm/govmm/vmm/qmp"
)

// ExitTable is the whole exit table of a running VM: the exits user space
// handled and KVM's own counters. QMP's query-exit-stats returns it and
// `govmm stat` reads it.
type ExitTable struct {
	User   exitstats.Snapshot        `json:"user"`
	Kernel *exitstats.KernelSnapshot `json:"kernel,omitempty"`
	// Resets counts machine resets: the exits above add up over all the
	// boots since the VM started.
	Resets uint64 `json:"resets"`
	// VirtioQueues is each virtio queue's traffic and request telemetry.
	VirtioQueues []VirtioQueueStats `json:"virtio_queues,omitempty"`
}

// control adapts a VM to the QMP server (qmp.Machine).
type control struct {
	vm     *VM
	kstats *exitstats.KernelStats // nil where the kernel has no stats fd

	srv *qmp.Server
}

// ServeQMP serves the QEMU Machine Protocol on a unix socket at path
// (created 0600). It returns a function that stops serving.
func (v *VM) ServeQMP(path string) (func() error, error) {
	c := &control{vm: v}
	ks, err := v.openKernelStats()
	if err != nil && !errors.Is(err, errNoStatsFD) {
		return nil, err
	}
	c.kstats = ks
	srv, err := qmp.Listen(path, c)
	if err != nil {
		ks.Close()
		return nil, fmt.Errorf("QMP socket: %w", err)
	}
	c.srv = srv
	v.qmpServer.Store(srv)
	// RESETs the host asked for over QMP are the server's to emit.
	v.resetMu.Lock()
	v.onReset = func(cause string) {
		if cause != CauseHostReset {
			srv.Emit("RESET", map[string]any{"guest": true, "reason": cause})
		}
	}
	v.emit = srv.EmitAll
	// A disk without space on the host stops the VM for a cont, which
	// only a QMP client can give (stopForNoSpace).
	if v.pci != nil {
		for _, d := range v.pci.disks {
			d.blk.SetNoSpace(func(err error) { v.stopForNoSpace(d.name, err) })
		}
	}
	v.onPanic = func(action string, stopped bool) {
		if action == "" {
			srv.Emit("GUEST_CRASHLOADED", map[string]any{"action": "run"})
			return
		}
		panicked := qmp.Event{Name: "GUEST_PANICKED", Data: map[string]any{"action": action}}
		if stopped {
			// STOP as QEMU's vm_stop after the event, with no room
			// between them for the RESUME of a client's quick cont.
			srv.EmitAll(panicked, qmp.Event{Name: "STOP"})
			return
		}
		srv.EmitAll(panicked)
	}
	v.resetMu.Unlock()
	go func() {
		if err := srv.Serve(); err != nil {
			log.Printf("QMP: %v", err)
		}
	}()
	emitted := make(chan struct{})
	go func() {
		defer close(emitted)
		c.emitShutdown()
	}()
	return func() error {
		select {
		case <-v.ended:
			<-emitted // SHUTDOWN is queued before Close drains the clients
		default:
		}
		return errors.Join(srv.Close(), ks.Close())
	}, nil
}

// RemoveQMPSocket removes the QMP socket, if ServeQMP made one and it is
// still the file there, without closing the server: for a forced exit,
// which cannot wait for ServeQMP's stop.
func (v *VM) RemoveQMPSocket() {
	if s := v.qmpServer.Load(); s != nil {
		s.RemoveSocket()
	}
}

// emitShutdown tells QMP clients how the VM ended, in QEMU's words, unless
// a QMP command ended it and the server has said so already.
func (c *control) emitShutdown() {
	<-c.vm.ended
	// After the reset under way, if any, has sent its RESET.
	c.vm.resetting.Lock()
	c.vm.resetting.Unlock()
	o := c.vm.outcome
	if o.Cause == CauseHostQuit || o.Cause == CauseHostReset {
		return // the server sent SHUTDOWN before its reply to the command
	}
	c.srv.Ended(!o.ByHost, o.Cause)
}

// endByHost ends the VM for a QMP command.
func (c *control) endByHost(reason vcpu.StopReason, cause string) {
	c.vm.end(Outcome{Reason: reason, VCPU: -1, ByHost: true, Cause: cause})
}

func (c *control) Status() qmp.Status {
	s := c.vm.Status()
	return qmp.Status{Running: s == "running", Status: s}
}

func (c *control) Stop(stopped func()) error {
	c.vm.pauseThen(stopped)
	return nil
}

func (c *control) Cont(resumed func()) error {
	if c.vm.Status() == "shutdown" {
		return errors.New("Resetting the Virtual Machine is required")
	}
	c.vm.resumeAfter(resumed)
	return nil
}

// Powerdown presses the ACPI power button and returns: the guest decides.
// Its power-off, if it comes, ends the VM with SHUTDOWN guest-shutdown.
func (c *control) Powerdown() error { return c.vm.PressPowerButton() }

// Reset resets the machine in place and returns when it is done; with
// --no-reboot it leaves the machine to the server, which says SHUTDOWN
// host-qmp-system-reset and ends it (Quit).
func (c *control) Reset() error {
	if c.vm.cfg.NoReboot {
		return qmp.ErrResetEndsMachine
	}
	err := c.vm.Reset()
	if errors.Is(err, errResetJoined) {
		return qmp.ErrResetJoined
	}
	return err
}

// End implements qmp.Ender: a reset under way finishes, sending its
// RESET, before the server's SHUTDOWN, and none begins after it. The VM
// itself ends in Quit, once the SHUTDOWN and the reply are queued: ended
// here, Run could return and govmm close the server before they were,
// and the client got neither (found in review).
func (c *control) End(reason string) {
	c.vm.resetting.Lock()
	c.vm.quitting = true
	c.vm.resetting.Unlock()
}

// Quit ends the VM for quit, or for system_reset with --no-reboot.
func (c *control) Quit(reason string) {
	if reason == qmp.ReasonReset {
		c.endByHost(vcpu.Reset, CauseHostReset)
		return
	}
	c.endByHost(vcpu.Stopped, CauseHostQuit)
}

// CPUs is cheap, for query-cpus-fast: no vCPU is interrupted, and the PC
// is that of each vCPU's last exit to govmm.
func (c *control) CPUs() []qmp.CPU {
	var out []qmp.CPU
	for _, v := range c.vm.vcpus {
		out = append(out, qmp.CPU{Index: v.ID(), ThreadID: v.ThreadID(), PC: v.PC()})
	}
	return out
}

// cpuStateWait bounds how long query-cpus waits, for all vCPUs together,
// for running vCPUs to sample their state; one that does not answer in
// time (stuck in a device) shows the RIP of its last exit.
const cpuStateWait = time.Second

// CPUStates is for query-cpus: each vCPU's current RIP and whether it is
// halted, read from a paused vCPU, sampled by a running one (vcpu.State).
func (c *control) CPUStates() []qmp.CPU {
	deadline := time.Now().Add(cpuStateWait)
	var out []qmp.CPU
	for _, v := range c.vm.vcpus {
		s := v.State(deadline)
		if s.Err != nil {
			log.Printf("query-cpus: %v", s.Err)
		}
		out = append(out, qmp.CPU{Index: v.ID(), ThreadID: v.ThreadID(), PC: s.PC, Halted: s.Halted})
	}
	return out
}

func (c *control) ExitStats() any { return c.vm.exitTable(c.kstats) }

// exitTable reads both halves of the table; ks may be nil.
func (v *VM) exitTable(ks *exitstats.KernelStats) ExitTable {
	t := ExitTable{User: v.Stats(), Resets: v.Resets(), VirtioQueues: v.VirtioQueues()}
	if ks != nil {
		if snap, err := ks.Snapshot(); err == nil {
			t.Kernel = &snap
		}
	}
	return t
}

// ExitTable returns the exit table with KVM's counters beside it (opening
// the stats fds for this one reading).
func (v *VM) ExitTable() ExitTable {
	ks, err := v.openKernelStats()
	if err != nil {
		return v.exitTable(nil)
	}
	defer ks.Close()
	return v.exitTable(ks)
}

func (c *control) KVMEnabled() bool { return true }

func (c *control) MemorySize() uint64 { return c.vm.mem.Size() }

// DumpExitTrace writes the exit trace for x-govmm-dump-exit-trace. A QMP
// client names the file, so it is only ever replaced whole, 0644
// (atomicfile.WriteFunc): a FIFO or device there is refused, since
// writing to one could hold up the QMP server for every client.
func (c *control) DumpExitTrace(filename string) (qmp.TraceDump, error) {
	if filename == "" {
		return qmp.TraceDump{}, errors.New("filename is empty")
	}
	if fi, err := os.Lstat(filename); err == nil && !fi.Mode().IsRegular() && fi.Mode()&os.ModeSymlink == 0 {
		return qmp.TraceDump{}, errors.New("filename names something other than a regular file")
	}
	w, err := c.vm.saveExitTrace(func(write func(io.Writer) error) error {
		return atomicfile.WriteFunc(filename, 0o644, write)
	})
	if err != nil {
		return qmp.TraceDump{}, fmt.Errorf("x-govmm-dump-exit-trace: %w", err)
	}
	return qmp.TraceDump{Events: w.Events, Dropped: w.Dropped}, nil
}

// qdevPath is the QOM path QEMU gives the virtio backend of a device
// created with -device ...,id=name; govmm names devices as its exit table
// rows do (virtio-blk, virtio-blk1, ...: see addVirtio).
func qdevPath(name string) string { return "/machine/peripheral/" + name + "/virtio-backend" }

// Blocks lists the virtio-blk disks for query-block and query-blockstats.
func (c *control) Blocks() []qmp.Block {
	if c.vm.pci == nil {
		return nil
	}
	var out []qmp.Block
	for _, d := range c.vm.pci.disks {
		s := d.blk.Stats()
		out = append(out, qmp.Block{
			Device: d.name, Qdev: qdevPath(d.name), File: d.cfg.Path, ReadOnly: d.cfg.ReadOnly, Direct: d.cfg.Direct,
			Size: d.blk.Capacity() * virtio.SectorSize, ActualSize: allocatedBytes(d.cfg.Path), NoSpace: d.blk.WaitsForSpace(),
			Stats: qmp.BlockStats{
				ReadBytes: s.ReadBytes, WriteBytes: s.WriteBytes, UnmapBytes: s.UnmapBytes,
				ReadOps: s.ReadOps, WriteOps: s.WriteOps, FlushOps: s.FlushOps, UnmapOps: s.UnmapOps,
				ReadTimeNs: s.ReadTimeNs, WriteTimeNs: s.WriteTimeNs, FlushTimeNs: s.FlushTimeNs, UnmapTimeNs: s.UnmapTimeNs,
				FailedReadOps: s.FailedReadOps, FailedWriteOps: s.FailedWriteOps, FailedFlushOps: s.FailedFlushOps, FailedUnmapOps: s.FailedUnmapOps,
				InvalidReadOps: s.InvalidReadOps, InvalidWriteOps: s.InvalidWriteOps, InvalidUnmapOps: s.InvalidUnmapOps,
				WriteHighestOffset: s.WriteHighestOffset,
			},
		})
	}
	return out
}

// allocatedBytes is the space a file takes on the host (QEMU's
// actual-size), 0 if it cannot be read.
func allocatedBytes(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return uint64(st.Blocks) * 512 // st_blocks counts 512-byte units
}

// PCIFunctions lists bus 0 for query-pci, read from each function's
// configuration header and BARs.
func (c *control) PCIFunctions() []qmp.PCIFunction {
	p := c.vm.pci
	if p == nil {
		return nil
	}
	var out []qmp.PCIFunction
	for slot := 0; slot < devices.PCIMaxSlots; slot++ {
		f := p.host.Function(slot)
		if f == nil {
			continue
		}
		var hdr [0x40]byte
		for off := 0; off < len(hdr); off += 4 {
			f.ReadConfig(uint64(off), hdr[off:off+4])
		}
		le := binary.LittleEndian
		pf := qmp.PCIFunction{
			Slot:            slot,
			Vendor:          le.Uint16(hdr[0x00:]),
			Device:          le.Uint16(hdr[0x02:]),
			Class:           le.Uint16(hdr[0x0a:]),
			SubsystemVendor: le.Uint16(hdr[0x2c:]),
			Subsystem:       le.Uint16(hdr[0x2e:]),
			IRQLine:         hdr[devices.PCIInterruptLine],
			IRQPin:          hdr[devices.PCIInterruptPin],
		}
		if named, ok := f.(interface{ Name() string }); ok {
			pf.Name = named.Name()
		}
		for _, b := range f.ConfigSpace().BARs() {
			r := qmp.PCIRegion{
				BAR: b.Index, IO: b.Kind == devices.BARIO, Mem64: b.Kind == devices.BARMem64,
				Prefetchable: b.Prefetchable, Size: b.Size, Address: -1,
			}
			if b.Mapped {
				r.Address = int64(b.Base)
			}
			pf.Regions = append(pf.Regions, r)
		}
		out = append(out, pf)
	}
	return out
}
