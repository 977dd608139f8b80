package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/exittrace"
	"github.com/govmm/govmm/guestlog"
)

// PCI identity of a modern (non-transitional) virtio device (virtio 1.2,
// 4.1.2): device ID 0x1040 + virtio device ID, revision 1. The subsystem
// IDs are QEMU's, which guests have seen for a decade.
const (
	PCIVendorID          = 0x1af4
	PCIDeviceIDBase      = 0x1040
	PCIRevision          = 1
	PCISubsystemVendorID = 0x1af4
	PCISubsystemID       = 0x1100
)

// Device status bits (virtio 1.2, 2.1).
const (
	StatusAcknowledge      = 1
	StatusDriver           = 2
	StatusDriverOK         = 4
	StatusFeaturesOK       = 8
	StatusDeviceNeedsReset = 0x40
	StatusFailed           = 0x80
)

// NoVector is the MSI-X vector value meaning "no interrupt".
const NoVector = 0xffff

// Layout of the one memory BAR (BAR 0, 64-bit): each structure on its own
// page, notifications last so they form their own bus range (and exit
// table row). Guests find everything through the capabilities, so the
// layout is ours to choose.
const (
	pciBAR        = 0
	pciBARSize    = 0x8000
	pciCommonOff  = 0x0000
	pciISROff     = 0x1000
	pciDeviceOff  = 0x2000
	pciDeviceSize = 0x1000 // what Linux maps at most (PAGE_SIZE)
	pciMSIXOff    = 0x3000 // table: 16 bytes per vector
	pciPBAOff     = 0x4000
	pciNotifyOff  = 0x5000
	pciNotifySize = 0x1000
	// pciNotifyMultiplier spaces the queues' notify addresses 4 bytes
	// apart, so each queue has its own ioeventfd without datamatch.
	pciNotifyMultiplier = 4
	// pciMaxVectors is what fits between the table and the PBA; one
	// vector per queue plus one for configuration changes.
	pciMaxVectors = (pciPBAOff - pciMSIXOff) / 16
	pciMaxQueues  = pciMaxVectors - 1
)

// PCI classes by device type, as QEMU gives them.
func pciClass(deviceType uint16) uint32 {
	switch deviceType {
	case IDNet:
		return 0x020000 // network controller, ethernet
	case IDBlock:
		return 0x018000 // mass storage, other
	case IDConsole:
		return 0x078000 // communication controller, other
	}
	return 0xff0000 // unassigned class
}

// virtio_pci_cap cfg_type values (virtio 1.2, 4.1.4).
const (
	pciCapCommonCfg = 1
	pciCapNotifyCfg = 2
	pciCapISRCfg    = 3
	pciCapDeviceCfg = 4
	pciCapPCICfg    = 5
)

// struct virtio_pci_common_cfg offsets (virtio 1.2, 4.1.4.3).
const (
	ccDeviceFeatureSelect = 0x00
	ccDeviceFeature       = 0x04
	ccDriverFeatureSelect = 0x08
	ccDriverFeature       = 0x0c
	ccMSIXConfig          = 0x10
	ccNumQueues           = 0x12
	ccDeviceStatus        = 0x14
	ccConfigGeneration    = 0x15
	ccQueueSelect         = 0x16
	ccQueueSize           = 0x18
	ccQueueMSIXVector     = 0x1a
	ccQueueEnable         = 0x1c
	ccQueueNotifyOff      = 0x1e
	ccQueueDesc           = 0x20
	ccQueueDriver         = 0x28
	ccQueueDevice         = 0x30
	ccQueueNotifyData     = 0x38
	ccQueueReset          = 0x3a
	ccSize                = 0x3c
)

// ISR status bits.
const (
	isrQueue  = 1
	isrConfig = 2
)

// MSIController delivers MSI messages for a device. vmm implements it
// over KVM: a GSI per vector routed with KVM_SET_GSI_ROUTING and an irqfd,
// or KVM_SIGNAL_MSI per interrupt.
type MSIController interface {
	NewVector() (MSIVector, error)
}

// MSIVector is one MSI-X table entry's path into the guest.
type MSIVector interface {
	// SetMessage points the vector at an MSI address/data pair.
	SetMessage(addr uint64, data uint32) error
	// Fire sends the message last set. It runs on device goroutines and
	// vCPU threads, concurrently with other vectors.
	Fire() error
	Close() error
}

// IOEventFDs registers ioeventfds; *kvm.VM implements it.
type IOEventFDs interface {
	IOEventFD(efd int, addr uint64, size uint32, pio bool, datamatch *uint64) error
	IOEventFDDeassign(efd int, addr uint64, size uint32, pio bool, datamatch *uint64) error
}

// TransportConfig is what a Transport needs besides its device.
type TransportConfig struct {
	// Name labels the bus ranges (exit table rows) and log lines;
	// empty means the device's Name. The notify area is Name+".notify".
	Name   string
	Memory Memory
	// MSI delivers interrupts; required.
	MSI MSIController
	// IOEventFDs, when set, turns queue notifications into eventfd
	// signals served by a goroutine per queue; nil leaves them MMIO
	// exits served on the vCPU thread.
	IOEventFDs IOEventFDs
	// PollMax, when positive, has each queue's notifier poll the queue
	// after serving it, for an adaptive window of up to PollMax, before
	// it waits for the next notification (see pollWindow). It trades CPU
	// time for the latency of a wake-up; 0 never polls.
	PollMax time.Duration
	// GuestLog, when set, holds the logger (named Name) that the
	// transport, its configuration space and the device log their
	// warnings to, so that the VM can count them.
	GuestLog *guestlog.Set
	// RequestTelemetry times every request per queue and kind
	// (telemetry.go, read with RequestStats); off, no clock is read on
	// the request path.
	RequestTelemetry bool
	// Trace, when set, records each queue's notifies and interrupts in
	// the exit timeline.
	Trace *exittrace.Trace
}

// QueueCounters count one queue's traffic.
type QueueCounters struct {
	NotifyEventFD uint64 // guest notifications that arrived on the ioeventfd
	NotifyMMIO    uint64 // guest notifications that were MMIO exits
	Interrupts    uint64 // used-buffer interrupts the device raised
	Polled        uint64 // times polling found buffers no notification announced
}

type pciQueueCounters struct {
	eventfd, mmio, interrupts, polled atomic.Uint64
	kicks                             atomic.Uint64 // eventfd signals of the transport's own (kick)
}

// Transport puts a virtio Device on PCI as a modern virtio-pci function.
// It implements devices.PCIFunction.
type Transport struct {
	dev      Device
	deferrer notifyDeferrer // dev, if its notifications may wait; else nil
	name     string
	guestLog
	mem      Memory
	ioev     IOEventFDs
	pollMax  time.Duration
	headroom hostHeadroom // read by the poll when pollMax > 0
	cfg      *devices.PCIConfig
	offered  uint64 // device features | VERSION_1
	nq       int
	msixCap  int // config space offset of the MSI-X capability
	pciCfgAt int // config space offset of the VIRTIO_PCI_CAP_PCI_CFG capability

	// mu guards the common configuration and the device's life cycle.
	// Nothing on a device's notify or interrupt path takes it, so a
	// reset may wait for a running Notify while holding it.
	mu              sync.Mutex
	deviceFeatSel   uint32
	driverFeatSel   uint32
	driverFeatures  uint64
	status          uint8
	queueSel        uint16
	queues          []*Queue
	barBase         uint64
	barMapped       bool
	notifiers       []*pciNotifier // running eventfd readers, one per queue
	resumeKicks     sync.WaitGroup // kickReady's kicks of queues without a notifier
	ioeventfdBroken bool           // registration failed once: stay on MMIO

	// Read without mu on the interrupt and notify paths.
	active       atomic.Bool
	needsReset   atomic.Bool
	isr          atomic.Uint32
	configGen    atomic.Uint32
	configVector atomic.Uint32
	queueVector  []atomic.Uint32

	notifyMu []sync.Mutex       // one Device.Notify per queue at a time
	traces   []*exittrace.Queue // per queue; nil entries when tracing is off
	counters []pciQueueCounters
	configIR atomic.Uint64 // configuration interrupts raised

	msix *msix
}

// NewTransport wraps dev. Add it to a devices.PCIHostBridge and place its
// BAR with ConfigSpace().SetBARAddress(0, addr) (BARSize bytes, aligned).
func NewTransport(dev Device, c TransportConfig) (*Transport, error) {
	if dev == nil || c.Memory == nil || c.MSI == nil {
		return nil, errors.New("virtio-pci: device, memory and MSI controller are required")
	}
	sizes := dev.QueueSizes()
	if len(sizes) == 0 || len(sizes) > pciMaxQueues {
		return nil, fmt.Errorf("virtio-pci: %s has %d queues, want 1..%d", dev.Name(), len(sizes), pciMaxQueues)
	}
	for i, s := range sizes {
		if s == 0 || s&(s-1) != 0 || s > MaxQueueSize {
			return nil, fmt.Errorf("virtio-pci: %s queue %d: size %d is not a power of two up to %d", dev.Name(), i, s, MaxQueueSize)
		}
	}
	name := c.Name
	if name == "" {
		name = dev.Name()
	}
	deferrer, _ := dev.(notifyDeferrer)
	t := &Transport{
		dev: dev, deferrer: deferrer, name: name, guestLog: guestLog{c.GuestLog.Logger(name)}, mem: c.Memory, ioev: c.IOEventFDs,
		pollMax:     max(c.PollMax, 0),
		offered:     dev.Features() | FeatureVersion1,
		nq:          len(sizes),
		queueVector: make([]atomic.Uint32, len(sizes)),
		notifyMu:    make([]sync.Mutex, len(sizes)),
		counters:    make([]pciQueueCounters, len(sizes)),
	}
	if t.pollMax > 0 {
		t.headroom = headroom()
	}
	for i, s := range sizes {
		q := NewQueue(s)
		if c.RequestTelemetry {
			var ops []string
			if d, ok := dev.(requestOps); ok {
				ops = d.RequestOps(i)
			}
			q.tel = newQueueTelemetry(ops, s)
		}
		t.queues = append(t.queues, q)
		t.traces = append(t.traces, c.Trace.NewQueue(name, i))
	}
	if d, ok := dev.(interface{ setGuestLog(*guestlog.Logger) }); ok {
		d.setGuestLog(t.warn)
	}
	t.resetRegisters()
	var err error
	if t.msix, err = newMSIX(c.MSI, len(sizes)+1); err != nil {
		return nil, fmt.Errorf("virtio-pci: %s: %w", name, err)
	}
	if err := t.buildConfigSpace(); err != nil {
		t.msix.close()
		return nil, fmt.Errorf("virtio-pci: %s: %w", name, err)
	}
	return t, nil
}

// BARSize is the size of the transport's memory BAR (BAR 0).
const BARSize = pciBARSize

func (t *Transport) buildConfigSpace() error {
	typ := t.dev.Type()
	t.cfg = devices.NewPCIConfig(devices.PCIHeader{
		VendorID: PCIVendorID, DeviceID: PCIDeviceIDBase + typ, Revision: PCIRevision,
		Class:             pciClass(typ),
		SubsystemVendorID: PCISubsystemVendorID, SubsystemID: PCISubsystemID,
	})
	t.cfg.SetGuestLog(t.warn)
	err := t.cfg.AddBAR(pciBAR, devices.BAR{
		Kind: devices.BARMem64, Size: pciBARSize,
		Regions: []devices.BARRegion{
			{Name: t.name, Offset: 0, Size: pciNotifyOff, Dev: pciBARDevice{t}},
			{Name: t.name + ".notify", Offset: pciNotifyOff, Size: pciNotifySize, Dev: pciNotifyDevice{t}},
		},
		Moved: t.barMoved,
	})
	if err != nil {
		return err
	}
	caps := []struct {
		typ          byte
		off, length  uint32
		extra, wmask []byte
	}{
		{typ: pciCapCommonCfg, off: pciCommonOff, length: ccSize},
		{typ: pciCapNotifyCfg, off: pciNotifyOff, length: uint32(t.nq) * pciNotifyMultiplier,
			extra: pciLE32(pciNotifyMultiplier)},
		{typ: pciCapISRCfg, off: pciISROff, length: 1},
		{typ: pciCapDeviceCfg, off: pciDeviceOff, length: pciDeviceSize},
		// PCI_CFG: a window into the BARs through configuration space,
		// for drivers that cannot map them. bar, offset, length and
		// pci_cfg_data are the driver's to write.
		{typ: pciCapPCICfg, extra: make([]byte, 4),
			wmask: []byte{0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	}
	for _, c := range caps {
		// struct virtio_pci_cap after cap_vndr and cap_next: cap_len,
		// cfg_type, bar, id, padding[2], offset, length.
		body := []byte{byte(16 + len(c.extra)), c.typ, pciBAR, 0, 0, 0}
		body = append(body, pciLE32(c.off)...)
		body = append(body, pciLE32(c.length)...)
		body = append(body, c.extra...)
		off, err := t.cfg.AddCapability(devices.PCICapVendor, body, c.wmask)
		if err != nil {
			return err
		}
		if c.typ == pciCapPCICfg {
			t.pciCfgAt = off
		}
	}
	// MSI-X (PCI 3.0, 6.8.2): message control (table size - 1; enable
	// and function mask writable), table and PBA offsets in BAR 0.
	n := t.msix.size()
	body := append(pciLE16(uint16(n-1)), pciLE32(pciMSIXOff|pciBAR)...)
	body = append(body, pciLE32(pciPBAOff|pciBAR)...)
	t.msixCap, err = t.cfg.AddCapability(devices.PCICapMSIX, body, []byte{0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0})
	return err
}

func pciLE16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func pciLE32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func pciLE64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// Name is the transport's label.
func (t *Transport) Name() string { return t.name }

// Device is the wrapped device.
func (t *Transport) Device() Device { return t.dev }

// ConfigSpace implements devices.PCIFunction.
func (t *Transport) ConfigSpace() *devices.PCIConfig { return t.cfg }

// overlaps reports whether [off, off+n) meets [at, at+size).
func pciOverlaps(off uint64, n int, at, size int) bool {
	return off < uint64(at+size) && uint64(at) < off+uint64(n)
}

// PCI_CFG capability fields, relative to the capability.
const (
	pciCfgBar    = 4
	pciCfgOffset = 8
	pciCfgLength = 12
	pciCfgData   = 16
)

// ReadConfig implements devices.PCIFunction. A read of pci_cfg_data first
// performs the BAR read the PCI_CFG capability describes.
func (t *Transport) ReadConfig(offset uint64, data []byte) {
	if pciOverlaps(offset, len(data), t.pciCfgAt+pciCfgData, 4) {
		if off, n, ok := t.pciCfgWindow(); ok {
			buf := make([]byte, 4)
			t.barRead(off, buf[:n])
			t.cfg.WriteConfig(uint64(t.pciCfgAt+pciCfgData), buf)
		}
	}
	t.cfg.ReadConfig(offset, data)
}

// WriteConfig implements devices.PCIFunction.
func (t *Transport) WriteConfig(offset uint64, data []byte) {
	t.cfg.WriteConfig(offset, data)
	if pciOverlaps(offset, len(data), t.msixCap+2, 2) {
		ctrl := binary.LittleEndian.Uint16(t.cfg.Bytes(t.msixCap+2, 2))
		t.msix.setControl(ctrl&(1<<15) != 0, ctrl&(1<<14) != 0)
	}
	if pciOverlaps(offset, len(data), devices.PCICommand, 2) {
		cmd := binary.LittleEndian.Uint16(t.cfg.Bytes(devices.PCICommand, 2))
		master := cmd&devices.PCICommandMaster != 0
		t.msix.setBusMaster(master)
		if !master {
			t.busMasterOff()
		}
	}
	if pciOverlaps(offset, len(data), t.pciCfgAt+pciCfgData, 4) {
		if off, n, ok := t.pciCfgWindow(); ok {
			t.barWrite(off, t.cfg.Bytes(t.pciCfgAt+pciCfgData, n))
		}
	}
}

// pciCfgWindow returns the BAR access the PCI_CFG capability selects, if
// it is one the spec allows: BAR 0, length 1, 2 or 4, naturally aligned,
// inside the BAR.
func (t *Transport) pciCfgWindow() (uint64, int, bool) {
	c := t.cfg.Bytes(t.pciCfgAt, pciCfgData)
	bar := c[pciCfgBar]
	off := binary.LittleEndian.Uint32(c[pciCfgOffset:])
	n := binary.LittleEndian.Uint32(c[pciCfgLength:])
	if bar != pciBAR || (n != 1 && n != 2 && n != 4) || off%n != 0 || uint64(off)+uint64(n) > pciBARSize {
		return 0, 0, false
	}
	return uint64(off), int(n), true
}

// barRead and barWrite route an access inside BAR 0, for the PCI_CFG
// window; MMIO exits reach the regions through the bus directly.
func (t *Transport) barRead(off uint64, data []byte) {
	if off >= pciNotifyOff {
		pciNotifyDevice{t}.Read(off-pciNotifyOff, data)
		return
	}
	pciBARDevice{t}.Read(off, data)
}

func (t *Transport) barWrite(off uint64, data []byte) {
	if off >= pciNotifyOff {
		pciNotifyDevice{t}.Write(off-pciNotifyOff, data)
		return
	}
	pciBARDevice{t}.Write(off, data)
}

// pciBARDevice is BAR 0 up to the notify area: common configuration, ISR,
// device configuration, MSI-X table and PBA.
type pciBARDevice struct{ t *Transport }

func (d pciBARDevice) Read(offset uint64, data []byte) {
	t := d.t
	clear(data)
	n := uint64(len(data))
	switch {
	case offset < pciISROff:
		t.readCommon(offset, data)
	case offset < pciDeviceOff:
		if offset == pciISROff {
			// Read-to-clear: the read acknowledges the interrupt.
			data[0] = byte(t.isr.Swap(0))
		}
	case offset < pciDeviceOff+pciDeviceSize:
		if offset-pciDeviceOff+n <= pciDeviceSize {
			t.dev.ReadConfig(offset-pciDeviceOff, data)
		}
	case offset < pciPBAOff:
		t.msix.readTable(offset-pciMSIXOff, data)
	default:
		t.msix.readPBA(offset-pciPBAOff, data)
	}
}

func (d pciBARDevice) Write(offset uint64, data []byte) {
	t := d.t
	n := uint64(len(data))
	switch {
	case offset < pciISROff:
		t.writeCommon(offset, data)
	case offset < pciDeviceOff:
		// ISR status is read-only.
	case offset < pciDeviceOff+pciDeviceSize:
		if offset-pciDeviceOff+n <= pciDeviceSize {
			t.dev.WriteConfig(offset-pciDeviceOff, data)
		}
	case offset < pciPBAOff:
		t.msix.writeTable(offset-pciMSIXOff, data)
	default:
		// The PBA is read-only.
	}
}

// pciNotifyDevice is the notify area: queue q's address is q*4 (Linux
// writes the queue index there as a 16-bit value; which queue it is
// follows from the address alone).
type pciNotifyDevice struct{ t *Transport }

func (d pciNotifyDevice) Read(offset uint64, data []byte) { clear(data) }

func (d pciNotifyDevice) Write(offset uint64, data []byte) {
	t := d.t
	if offset%pciNotifyMultiplier != 0 || offset/pciNotifyMultiplier >= uint64(t.nq) {
		t.warn.Printf("notify_offset", "notify write at unused offset %#x", offset)
		return
	}
	q := int(offset / pciNotifyMultiplier)
	t.counters[q].mmio.Add(1)
	t.notify(q)
}

// notify runs the device's Notify for queue q unless the device is not
// running; a queue error breaks the device until the driver resets it.
func (t *Transport) notify(q int) {
	if !t.active.Load() {
		return
	}
	t.notifyMu[q].Lock()
	t.queues[q].tel.notify()
	span := t.traces[q].BeginNotify()
	err := t.dev.Notify(q)
	t.traces[q].EndNotify(span)
	t.notifyMu[q].Unlock()
	if err != nil {
		t.fail(err)
	}
}

// fail marks the device broken (DEVICE_NEEDS_RESET) and tells the driver
// with a configuration interrupt, once until the next reset.
func (t *Transport) fail(err error) {
	if !t.needsReset.CompareAndSwap(false, true) {
		return
	}
	t.warn.Printf("needs_reset", "device needs reset: %v", err)
	t.raiseConfig()
}

func (t *Transport) raiseConfig() {
	t.configGen.Add(1)
	t.configIR.Add(1)
	t.isr.Or(isrConfig)
	if err := t.msix.fire(uint16(t.configVector.Load())); err != nil {
		t.warn.Printf("host_io", "configuration interrupt: %v", err)
	}
}

// pciInterrupt is the Interrupt handed to the device on activation.
type pciInterrupt struct{ t *Transport }

// Queue implements Interrupt.
func (i pciInterrupt) Queue(q int) error {
	t := i.t
	if q < 0 || q >= t.nq {
		return fmt.Errorf("virtio-pci: interrupt for queue %d of %d", q, t.nq)
	}
	t.counters[q].interrupts.Add(1)
	if !t.msix.isEnabled() {
		// Without MSI-X the ISR bit is how the driver would learn which
		// interrupt it got; there is no INTx line to raise, though.
		t.isr.Or(isrQueue)
	}
	span := t.traces[q].BeginInterrupt()
	err := t.msix.fire(uint16(t.queueVector[q].Load()))
	t.traces[q].EndInterrupt(span)
	return err
}

// Config implements Interrupt.
func (i pciInterrupt) Config() error {
	i.t.raiseConfig()
	return nil
}

// Fail implements Interrupt.
func (i pciInterrupt) Fail(err error) { i.t.fail(err) }

// readCommon reads struct virtio_pci_common_cfg. It is rendered whole and
// sliced, so any access width or alignment reads what a byte-wise read
// would.
func (t *Transport) readCommon(offset uint64, data []byte) {
	var b [0x40]byte
	t.mu.Lock()
	t.renderCommon(&b)
	t.mu.Unlock()
	if offset < uint64(len(b)) {
		copy(data, b[offset:])
	}
}

// renderCommon fills b with the common configuration; mu must be held.
func (t *Transport) renderCommon(b *[0x40]byte) {
	le := binary.LittleEndian
	le.PutUint32(b[ccDeviceFeatureSelect:], t.deviceFeatSel)
	if t.deviceFeatSel < 2 {
		le.PutUint32(b[ccDeviceFeature:], uint32(t.offered>>(32*t.deviceFeatSel)))
	}
	le.PutUint32(b[ccDriverFeatureSelect:], t.driverFeatSel)
	if t.driverFeatSel < 2 {
		le.PutUint32(b[ccDriverFeature:], uint32(t.driverFeatures>>(32*t.driverFeatSel)))
	}
	le.PutUint16(b[ccMSIXConfig:], uint16(t.configVector.Load()))
	le.PutUint16(b[ccNumQueues:], uint16(t.nq))
	b[ccDeviceStatus] = t.readStatus()
	b[ccConfigGeneration] = byte(t.configGen.Load())
	le.PutUint16(b[ccQueueSelect:], t.queueSel)
	if q := int(t.queueSel); q < t.nq {
		qu := t.queues[q]
		le.PutUint16(b[ccQueueSize:], qu.Size())
		le.PutUint16(b[ccQueueMSIXVector:], uint16(t.queueVector[q].Load()))
		if qu.Ready() {
			le.PutUint16(b[ccQueueEnable:], 1)
		}
		le.PutUint16(b[ccQueueNotifyOff:], uint16(q))
		le.PutUint64(b[ccQueueDesc:], qu.DescTable())
		le.PutUint64(b[ccQueueDriver:], qu.AvailRing())
		le.PutUint64(b[ccQueueDevice:], qu.UsedRing())
	}
	// A queue that does not exist reads as size 0 ("unavailable");
	// queue_notify_data and queue_reset stay 0 (features not offered).
}

func (t *Transport) readStatus() uint8 {
	s := t.status
	if t.needsReset.Load() {
		s |= StatusDeviceNeedsReset
	}
	return s
}

// pciCommonField is one field of the common configuration.
type pciCommonField struct{ off, size int }

var pciCommonFields = []pciCommonField{
	{ccDeviceFeatureSelect, 4}, {ccDeviceFeature, 4}, {ccDriverFeatureSelect, 4},
	{ccDriverFeature, 4}, {ccMSIXConfig, 2}, {ccNumQueues, 2}, {ccDeviceStatus, 1},
	{ccConfigGeneration, 1}, {ccQueueSelect, 2}, {ccQueueSize, 2},
	{ccQueueMSIXVector, 2}, {ccQueueEnable, 2}, {ccQueueNotifyOff, 2},
	{ccQueueDesc, 8}, {ccQueueDriver, 8}, {ccQueueDevice, 8},
	{ccQueueNotifyData, 2}, {ccQueueReset, 2},
}

// writeCommon writes the common configuration. The write is merged into
// the rendered structure and every field it touched is applied in offset
// order, so a 32-bit half of a 64-bit address works like a whole one.
func (t *Transport) writeCommon(offset uint64, data []byte) {
	if offset >= ccSize {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var b [0x40]byte
	t.renderCommon(&b)
	copy(b[offset:ccSize], data)
	for _, f := range pciCommonFields {
		if pciOverlaps(offset, len(data), f.off, f.size) {
			t.applyCommon(f.off, &b)
		}
	}
}

// applyCommon applies field off from b; mu must be held.
func (t *Transport) applyCommon(off int, b *[0x40]byte) {
	le := binary.LittleEndian
	q := int(t.queueSel)
	var qu *Queue
	if q < t.nq {
		qu = t.queues[q]
	}
	switch off {
	case ccDeviceFeatureSelect:
		t.deviceFeatSel = le.Uint32(b[off:])
	case ccDriverFeatureSelect:
		t.driverFeatSel = le.Uint32(b[off:])
	case ccDriverFeature:
		// Features are fixed once FEATURES_OK is set; words past the
		// second have no defined bits.
		if t.status&StatusFeaturesOK == 0 && t.driverFeatSel < 2 {
			shift := 32 * t.driverFeatSel
			t.driverFeatures = t.driverFeatures&^(0xffffffff<<shift) | uint64(le.Uint32(b[off:]))<<shift
		}
	case ccMSIXConfig:
		t.configVector.Store(uint32(t.msix.checkVector(le.Uint16(b[off:]))))
	case ccDeviceStatus:
		t.writeStatus(b[off])
	case ccQueueSelect:
		t.queueSel = le.Uint16(b[off:])
	case ccQueueSize:
		if qu != nil && !qu.Ready() {
			if err := qu.SetSize(le.Uint16(b[off:])); err != nil {
				t.warn.Printf("queue_config", "queue %d: %v", q, err)
			}
		}
	case ccQueueMSIXVector:
		if qu != nil {
			// An out-of-range vector reads back as NO_VECTOR, which is
			// how the driver learns the mapping failed.
			t.queueVector[q].Store(uint32(t.msix.checkVector(le.Uint16(b[off:]))))
		}
	case ccQueueEnable:
		// Only 1 may be written (4.1.4.3.2); disabling is queue_reset,
		// which is not offered.
		if qu != nil && !qu.Ready() && le.Uint16(b[off:]) == 1 && !t.active.Load() {
			if err := qu.SetReady(true); err != nil {
				t.warn.Printf("queue_config", "queue %d: %v", q, err)
			}
		}
	case ccQueueDesc, ccQueueDriver, ccQueueDevice:
		if qu != nil && !qu.Ready() {
			qu.SetAddresses(le.Uint64(b[ccQueueDesc:]), le.Uint64(b[ccQueueDriver:]), le.Uint64(b[ccQueueDevice:]))
		}
	}
	// device_feature, num_queues, config_generation, queue_notify_off,
	// queue_notify_data and queue_reset are read-only.
}

// writeStatus handles a device_status write; mu must be held. Bits only
// accumulate (Linux writes status|new): only a write of 0 clears them.
func (t *Transport) writeStatus(v uint8) {
	if v == 0 {
		t.reset()
		return
	}
	v &^= StatusDeviceNeedsReset // the device's bit, not the driver's
	old := t.status
	next := old | v
	if next&StatusFeaturesOK != 0 && old&StatusFeaturesOK == 0 {
		// Refuse features we did not offer, and a driver that did not
		// accept VERSION_1 (a legacy driver on a modern-only device):
		// FEATURES_OK then reads back clear and the driver gives up.
		if t.driverFeatures&^t.offered != 0 || t.driverFeatures&FeatureVersion1 == 0 {
			t.warn.Printf("features", "driver features %#x refused (offered %#x)", t.driverFeatures, t.offered)
			next &^= StatusFeaturesOK
		}
	}
	if next&StatusDriverOK != 0 && old&StatusDriverOK == 0 {
		switch {
		case next&StatusFeaturesOK == 0:
			t.warn.Printf("status", "DRIVER_OK without FEATURES_OK")
			next &^= StatusDriverOK
		case t.needsReset.Load():
			// Its queues were taken from it (busMasterOff): only a
			// reset gives them back.
			t.warn.Printf("status", "DRIVER_OK on a device that needs a reset")
			next &^= StatusDriverOK
		case !t.msix.isBusMaster():
			// A running device would write guest memory, which a
			// function without Bus Master Enable must not (QEMU's
			// writes go nowhere then). Drivers set the bit first.
			t.warn.Printf("status", "DRIVER_OK with Bus Master Enable clear")
			next &^= StatusDriverOK
		default:
			t.status = next
			t.activate()
			return
		}
	}
	t.status = next
}

// activate starts the device with the queues the driver enabled; mu must
// be held.
func (t *Transport) activate() {
	queues := make([]*Queue, t.nq)
	for i, q := range t.queues {
		if q.Ready() {
			queues[i] = q
		}
	}
	if err := t.dev.Activate(t.mem, t.driverFeatures, queues, pciInterrupt{t}); err != nil {
		t.fail(fmt.Errorf("activate: %w", err))
		return
	}
	t.active.Store(true)
	t.startNotifiers()
	// A driver may have made buffers available (and notified, which we
	// ignored) before DRIVER_OK: look at every queue once.
	for i, q := range queues {
		if q != nil {
			t.kick(i)
		}
	}
}

// kick has queue q looked at: by its notifier when it has one, which
// keeps the work off the caller (a vCPU holding mu), else right here.
// mu must be held.
func (t *Transport) kick(q int) {
	if t.notifiers != nil && t.notifiers[q] != nil {
		// Counted before the write so that the notifier, which takes
		// our kicks out of the guest's count, sees it in time.
		t.counters[q].kicks.Add(1)
		if _, err := unix.Write(t.notifiers[q].efd, pciLE64(1)); err == nil {
			return
		}
		t.counters[q].kicks.Add(^uint64(0))
	}
	t.notify(q)
}

// reset returns device and transport to their initial state after the
// driver wrote 0 to device_status; mu must be held.
func (t *Transport) reset() {
	t.stopDevice()
	for _, q := range t.queues {
		q.Reset()
	}
	t.resetRegisters()
}

// stopDevice stops and resets the device; mu must be held. When it
// returns, no notifier runs and the device has stopped using its queues.
func (t *Transport) stopDevice() {
	// Take the queues from the device first: the notifications stopped
	// and waited for below then end within one chunk of work, however
	// much the driver queued.
	t.StopQueues()
	t.stopNotifiers()
	t.active.Store(false)
	t.WaitNotifies()
	t.dev.Reset()
}

// busMasterOff stops a running device whose driver cleared Bus Master
// Enable: a function must then start no memory access (PCI 3.0, 6.2.2),
// and its MSI-X messages, memory writes too, are dropped (msix). Linux
// clears the bit when a driver unbinds and, for kexec, at shutdown, so
// that no device writes into the next kernel's memory. As in QEMU
// (virtio_write_config), DRIVER_OK then reads clear; DEVICE_NEEDS_RESET
// says the driver must reset the device before it runs again.
func (t *Transport) busMasterOff() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.active.Load() {
		return
	}
	t.stopDevice()
	t.status &^= StatusDriverOK
	t.needsReset.Store(true)
}

// StopQueues makes the device abandon its queues (Queue.abort), for a
// device reset or close, or a machine that is ending or about to be
// reset: every device loop, on whichever thread serves it (a vCPU's, for
// a notification without an ioeventfd), ends within a chunk of work
// however the guest keeps its rings full, so the vCPUs can be stopped
// and joined. A reset of the device gives them back. It takes no lock
// and never blocks, so Close can call it before waiting for mu.
func (t *Transport) StopQueues() {
	for _, q := range t.queues {
		q.abort()
	}
}

// PauseQueues keeps the device from taking work from its queues while
// the machine is paused, as QEMU stops its virtqueue handlers on stop:
// loops end after the chain in hand, and notifications that arrive
// meanwhile wait for ResumeQueues. Requests already taken complete
// (WaitNotifies waits for them). A device with work of its own (net's
// receive) stops it too (pauser): that waits for a batch of frames in
// hand at most, never for the guest.
func (t *Transport) PauseQueues() {
	for _, q := range t.queues {
		q.pause()
	}
	if p, ok := t.dev.(pauser); ok {
		p.Pause()
	}
}

// WaitNotifies returns once no notification of the device is being
// served, on a vCPU or a notifier: after PauseQueues or StopQueues, once
// the requests in hand have completed. Notify runs under notifyMu (a
// queue's requests complete before it returns), so taking each once
// waits out one being served.
func (t *Transport) WaitNotifies() {
	for i := range t.notifyMu {
		t.notifyMu[i].Lock()
		t.notifyMu[i].Unlock()
	}
}

// ResumeQueues undoes PauseQueues and has every ready queue looked at:
// the notifications that came while it was paused were not served.
func (t *Transport) ResumeQueues() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, q := range t.queues {
		q.unpause()
	}
	if r, ok := t.dev.(resumer); ok {
		r.Resume()
	}
	if t.active.Load() {
		t.kickReady()
	}
}

// kickReady has every ready queue looked at, for work the driver queued
// while the queues could not be served; mu must be held. Through the
// queue's ioeventfd where it has one; without (--no-ioeventfd, or the
// BAR not decoded) kick would serve the queue on this thread, a QMP
// command's or the vCPU's that moved the BAR, which a guest whose ring
// refills itself could hold for ever, holding the function's locks: a
// goroutine serves it instead, and stopNotifiers waits for it.
func (t *Transport) kickReady() {
	for i, q := range t.queues {
		switch {
		case !q.Ready():
		case t.notifiers != nil && t.notifiers[i] != nil:
			t.kick(i)
		default:
			t.resumeKicks.Add(1)
			go func() {
				defer t.resumeKicks.Done()
				t.notify(i)
			}()
		}
	}
}

// ResetDevice stops and resets the device for a machine reset, as a
// driver's write of 0 to device_status does, and returns its MSI-X table
// to the power-on state (every entry masked, MSI-X off). Configuration
// space is the PCI bus's to reset (devices.PCIHostBridge.Reset), after
// this: moving the BAR then finds the device inactive.
func (t *Transport) ResetDevice() {
	t.mu.Lock()
	t.reset()
	t.mu.Unlock()
	t.msix.reset()
}

// resetRegisters sets the common configuration to its reset values.
func (t *Transport) resetRegisters() {
	t.deviceFeatSel, t.driverFeatSel, t.driverFeatures = 0, 0, 0
	t.status, t.queueSel = 0, 0
	t.needsReset.Store(false)
	t.isr.Store(0)
	t.configVector.Store(NoVector)
	for i := range t.queueVector {
		t.queueVector[i].Store(NoVector)
	}
}

// barMoved follows BAR 0: the ioeventfds live at absolute addresses, so
// they move with it (and go when decoding is turned off). It runs with
// the PCI config lock held and takes mu, an order nothing reverses.
func (t *Transport) barMoved(base uint64, mapped bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// Hold the queues so that the notifiers, which stopNotifiers waits
	// for, finish the chain in hand and take no more.
	for _, q := range t.queues {
		q.hold()
	}
	t.stopNotifiers()
	for _, q := range t.queues {
		q.release()
	}
	t.barBase, t.barMapped = base, mapped
	if t.active.Load() {
		t.startNotifiers()
		// A kick that was in an eventfd we just closed, or that hit the
		// BAR between the two moves, is not lost: look at every queue.
		t.kickReady()
	}
}

// Counters returns a snapshot of each queue's counters.
func (t *Transport) Counters() []QueueCounters {
	out := make([]QueueCounters, t.nq)
	for i := range out {
		c := &t.counters[i]
		out[i] = QueueCounters{NotifyEventFD: c.eventfd.Load(), NotifyMMIO: c.mmio.Load(), Interrupts: c.interrupts.Load(), Polled: c.polled.Load()}
	}
	return out
}

// QueueRequestStats are one queue's request telemetry.
type QueueRequestStats struct {
	Queue int
	Ops   []RequestStats // the kinds of request seen so far
}

// RequestStats returns each queue's request telemetry: nil without
// TransportConfig.RequestTelemetry. It never waits for the device.
func (t *Transport) RequestStats() []QueueRequestStats {
	if t.queues[0].tel == nil {
		return nil
	}
	out := make([]QueueRequestStats, t.nq)
	for i, q := range t.queues {
		out[i] = QueueRequestStats{Queue: i, Ops: q.tel.snapshot()}
	}
	return out
}

// ConfigInterrupts is how many configuration-change interrupts the
// transport raised (device errors included).
func (t *Transport) ConfigInterrupts() uint64 { return t.configIR.Load() }

// Close stops the notifiers, releases the MSI vectors and closes the
// device if it has a Close method. The VM must not run any more. Work
// the guest queued is abandoned, not waited for: Close returns within
// one chunk of device work (see Queue.abort) whatever the guest did.
func (t *Transport) Close() error {
	// Before mu: a reset or BAR move holding it may be waiting for a
	// notification, which the abort ends.
	t.StopQueues()
	t.mu.Lock()
	t.stopNotifiers()
	t.active.Store(false)
	t.mu.Unlock()
	err := t.msix.close()
	if c, ok := t.dev.(io.Closer); ok {
		err = errors.Join(err, c.Close())
	}
	return err
}
