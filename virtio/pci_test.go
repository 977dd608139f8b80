package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/devices"
)

// fakeDevice records what the transport asks of it.
type fakeDevice struct {
	mu        sync.Mutex
	sizes     []uint16
	features  uint64
	config    [8]byte
	activated int
	features0 uint64
	queues    []*Queue
	irq       Interrupt
	resets    int
	notifies  []int
	notifyErr error
	notified  chan int
}

func newFakeDevice(sizes ...uint16) *fakeDevice {
	return &fakeDevice{sizes: sizes, features: 1<<5 | RingFeatures, config: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, notified: make(chan int, 100)}
}

func (d *fakeDevice) Name() string         { return "virtio-fake" }
func (d *fakeDevice) Type() uint16         { return IDBlock }
func (d *fakeDevice) Features() uint64     { return d.features }
func (d *fakeDevice) QueueSizes() []uint16 { return d.sizes }
func (d *fakeDevice) ReadConfig(off uint64, data []byte) {
	clear(data)
	if off < uint64(len(d.config)) {
		copy(data, d.config[off:])
	}
}
func (d *fakeDevice) WriteConfig(off uint64, data []byte) {}
func (d *fakeDevice) Activate(mem Memory, features uint64, queues []*Queue, irq Interrupt) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.activated++
	d.features0, d.queues, d.irq = features, queues, irq
	return nil
}
func (d *fakeDevice) Notify(q int) error {
	d.mu.Lock()
	d.notifies = append(d.notifies, q)
	err := d.notifyErr
	d.mu.Unlock()
	select {
	case d.notified <- q:
	default: // nobody is counting (the hostile walk)
	}
	return err
}
func (d *fakeDevice) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resets++
	d.queues, d.irq = nil, nil
}

func (d *fakeDevice) state() (activated, resets int, notifies []int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.activated, d.resets, append([]int(nil), d.notifies...)
}

// fakeMSI records messages and counts fires per vector.
type fakeMSI struct {
	mu      sync.Mutex
	vectors []*fakeVector
}

type fakeVector struct {
	m     *fakeMSI
	addr  uint64
	data  uint32
	set   int
	fired int
}

func (m *fakeMSI) NewVector() (MSIVector, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := &fakeVector{m: m}
	m.vectors = append(m.vectors, v)
	return v, nil
}

func (v *fakeVector) SetMessage(addr uint64, data uint32) error {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	v.addr, v.data = addr, data
	v.set++
	return nil
}

func (v *fakeVector) Fire() error {
	v.m.mu.Lock()
	defer v.m.mu.Unlock()
	v.fired++
	return nil
}

func (v *fakeVector) Close() error { return nil }

func (m *fakeMSI) fired(i int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vectors[i].fired
}

// fakeIOEvents keeps ioeventfd registrations by address.
type fakeIOEvents struct {
	mu   sync.Mutex
	regs map[uint64]int
	fail bool
}

func (f *fakeIOEvents) IOEventFD(efd int, addr uint64, size uint32, pio bool, dm *uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("no ioeventfd here")
	}
	if size != 2 || pio || dm != nil {
		return fmt.Errorf("unexpected ioeventfd size %d pio %v datamatch %v", size, pio, dm)
	}
	if _, dup := f.regs[addr]; dup {
		return unix.EEXIST
	}
	f.regs[addr] = efd
	return nil
}

func (f *fakeIOEvents) IOEventFDDeassign(efd int, addr uint64, size uint32, pio bool, dm *uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.regs[addr] != efd {
		return unix.ENOENT
	}
	delete(f.regs, addr)
	return nil
}

func (f *fakeIOEvents) fd(addr uint64) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fd, ok := f.regs[addr]
	return fd, ok
}

type sliceMemory []byte

func (m sliceMemory) Slice(gpa, n uint64) ([]byte, error) {
	if gpa > uint64(len(m)) || n > uint64(len(m))-gpa {
		return nil, errors.New("outside RAM")
	}
	return m[gpa : gpa+n], nil
}

const testBARBase = 0xc0000000

// rig is a transport on a PCI bus, driven like a guest driver would.
type rig struct {
	t    *testing.T
	dev  *fakeDevice
	msi  *fakeMSI
	ioev *fakeIOEvents
	tr   *Transport
	mmio *devices.Bus
}

func newRig(t *testing.T, ioeventfd bool, sizes ...uint16) *rig {
	t.Helper()
	dev := newFakeDevice(sizes...)
	r := newRigWith(t, dev, make(sliceMemory, 1<<20), ioeventfd)
	r.dev = dev
	return r
}

// newRigWith puts dev on a transport over mem.
func newRigWith(t *testing.T, dev Device, mem Memory, ioeventfd bool) *rig {
	t.Helper()
	return newRigConfig(t, dev, TransportConfig{Memory: mem}, ioeventfd)
}

// newRigConfig puts dev on a transport configured as c, with the rig's
// MSI controller and, if ioeventfd, fake ioeventfds.
func newRigConfig(t *testing.T, dev Device, c TransportConfig, ioeventfd bool) *rig {
	t.Helper()
	r := &rig{t: t, msi: &fakeMSI{}, mmio: devices.NewBus("mmio")}
	c.MSI = r.msi
	if ioeventfd {
		r.ioev = &fakeIOEvents{regs: map[uint64]int{}}
		c.IOEventFDs = r.ioev
	}
	tr, err := NewTransport(dev, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	r.tr = tr
	host := devices.NewPCIHostBridge(r.mmio, devices.NewBus("io"))
	if err := tr.ConfigSpace().SetBARAddress(0, testBARBase); err != nil {
		t.Fatal(err)
	}
	if _, err := host.AddDevice(tr); err != nil {
		t.Fatal(err)
	}
	r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMemory|devices.PCICommandMaster)
	return r
}

func (r *rig) cfgRead(off, n int) uint32 {
	b := make([]byte, 4)
	r.tr.ReadConfig(uint64(off), b[:n])
	return binary.LittleEndian.Uint32(b)
}

func (r *rig) cfgWrite(off, n int, v uint32) {
	r.tr.WriteConfig(uint64(off), binary.LittleEndian.AppendUint32(nil, v)[:n])
}

func (r *rig) read(off uint64, n int) uint64 {
	r.t.Helper()
	b := make([]byte, 8)
	if r.mmio.Dispatch(testBARBase+off, b[:n], false) == nil {
		r.t.Fatalf("BAR read at %#x unclaimed", off)
	}
	return binary.LittleEndian.Uint64(b)
}

func (r *rig) write(off uint64, n int, v uint64) {
	r.t.Helper()
	if r.mmio.Dispatch(testBARBase+off, binary.LittleEndian.AppendUint64(nil, v)[:n], true) == nil {
		r.t.Fatalf("BAR write at %#x unclaimed", off)
	}
}

func (r *rig) status() uint8 { return uint8(r.read(ccDeviceStatus, 1)) }

// negotiate runs the driver's side of 3.1.1 up to FEATURES_OK.
func (r *rig) negotiate(features uint64) {
	r.write(ccDeviceStatus, 1, StatusAcknowledge)
	r.write(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver)
	r.write(ccDriverFeatureSelect, 4, 0)
	r.write(ccDriverFeature, 4, features&0xffffffff)
	r.write(ccDriverFeatureSelect, 4, 1)
	r.write(ccDriverFeature, 4, features>>32)
	r.write(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
}

// setupQueue programs queue q as Linux does: 64-bit addresses in halves.
func (r *rig) setupQueue(q int, size uint16, vector uint16) {
	r.write(ccQueueSelect, 2, uint64(q))
	r.write(ccQueueSize, 2, uint64(size))
	base := uint64(0x10000 * (q + 1))
	for _, f := range []struct {
		off  uint64
		addr uint64
	}{{ccQueueDesc, base}, {ccQueueDriver, base + 0x1000}, {ccQueueDevice, base + 0x2000}} {
		r.write(f.off, 4, f.addr&0xffffffff)
		r.write(f.off+4, 4, f.addr>>32)
	}
	r.write(ccQueueMSIXVector, 2, uint64(vector))
	r.write(ccQueueEnable, 2, 1)
}

// enableMSIX enables MSI-X and programs and unmasks every vector.
func (r *rig) enableMSIX() {
	cap := r.tr.msixCap
	r.cfgWrite(cap+2, 2, 1<<15|1<<14) // enable, function masked
	for i := 0; i < r.tr.msix.size(); i++ {
		e := uint64(pciMSIXOff + 16*i)
		r.write(e, 4, 0xfee00000)
		r.write(e+4, 4, 0)
		r.write(e+8, 4, uint64(0x4020+i))
		r.write(e+12, 4, 0) // unmask
	}
	r.cfgWrite(cap+2, 2, 1<<15)
}

func TestTransportConfigSpace(t *testing.T) {
	r := newRig(t, false, 128, 64)
	if got := r.cfgRead(0, 4); got != (PCIDeviceIDBase+IDBlock)<<16|PCIVendorID {
		t.Errorf("vendor/device %#x", got)
	}
	if got := r.cfgRead(devices.PCIRevision, 4); got != 0x01800001 {
		t.Errorf("class/revision %#x, want mass storage (0x018000), revision 1", got)
	}
	if got := r.cfgRead(devices.PCISubsystemVendor, 4); got != PCISubsystemID<<16|PCISubsystemVendorID {
		t.Errorf("subsystem %#x", got)
	}
	type vcap struct{ bar, off, length, extra uint32 }
	found := map[uint32]vcap{}
	var msixCtrl, msixTable, msixPBA uint32
	ptr := r.cfgRead(devices.PCICapabilityList, 1)
	for n := 0; ptr != 0; n++ {
		if n > 48 || ptr&3 != 0 || ptr < 0x40 {
			t.Fatalf("bad capability list at %#x", ptr)
		}
		switch r.cfgRead(int(ptr), 1) {
		case devices.PCICapVendor:
			capLen := r.cfgRead(int(ptr)+2, 1)
			typ := r.cfgRead(int(ptr)+3, 1)
			c := vcap{r.cfgRead(int(ptr)+4, 1), r.cfgRead(int(ptr)+8, 4), r.cfgRead(int(ptr)+12, 4), 0}
			want := uint32(16)
			if typ == pciCapNotifyCfg || typ == pciCapPCICfg {
				want = 20
				c.extra = r.cfgRead(int(ptr)+16, 4)
			}
			if capLen != want {
				t.Errorf("cfg_type %d: cap_len %d, want %d", typ, capLen, want)
			}
			found[typ] = c
		case devices.PCICapMSIX:
			msixCtrl = r.cfgRead(int(ptr)+2, 2)
			msixTable = r.cfgRead(int(ptr)+4, 4)
			msixPBA = r.cfgRead(int(ptr)+8, 4)
		}
		ptr = r.cfgRead(int(ptr)+1, 1)
	}
	want := map[uint32]vcap{
		pciCapCommonCfg: {0, pciCommonOff, ccSize, 0},
		pciCapNotifyCfg: {0, pciNotifyOff, 2 * pciNotifyMultiplier, pciNotifyMultiplier},
		pciCapISRCfg:    {0, pciISROff, 1, 0},
		pciCapDeviceCfg: {0, pciDeviceOff, pciDeviceSize, 0},
		pciCapPCICfg:    {0, 0, 0, 0},
	}
	for typ, w := range want {
		if got, ok := found[typ]; !ok || got != w {
			t.Errorf("cfg_type %d: %+v (present %v), want %+v", typ, got, ok, w)
		}
	}
	if msixCtrl != 2 || msixTable != pciMSIXOff || msixPBA != pciPBAOff {
		t.Errorf("MSI-X control %#x table %#x PBA %#x; want 3 vectors, table %#x, PBA %#x",
			msixCtrl, msixTable, msixPBA, pciMSIXOff, pciPBAOff)
	}
	// Each structure lies inside the BAR, the notify area on its own.
	for typ, c := range found {
		if uint64(c.off)+uint64(c.length) > BARSize {
			t.Errorf("cfg_type %d outside the BAR", typ)
		}
	}
	if pciNotifyOff+pciNotifySize > pciBARSize || pciMaxQueues*pciNotifyMultiplier > pciNotifySize {
		t.Error("BAR layout does not fit")
	}
	// BAR 0 sizes as a 64-bit memory BAR of BARSize.
	r.cfgWrite(devices.PCICommand, 2, 0)
	r.cfgWrite(devices.PCIBAR0, 4, 0xffffffff)
	if got := r.cfgRead(devices.PCIBAR0, 4); got != ^uint32(BARSize-1)|4 {
		t.Errorf("BAR 0 size mask %#x", got)
	}
}

func TestTransportFeatureNegotiation(t *testing.T) {
	dev := newFakeDevice(16)
	offered := dev.features | FeatureVersion1
	for _, tc := range []struct {
		name   string
		driver uint64
		ok     bool
	}{
		{"all offered", offered, true},
		{"VERSION_1 only", FeatureVersion1, true},
		{"no VERSION_1", offered &^ FeatureVersion1, false},
		{"not offered", offered | 1<<40, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, false, 16)
			r.write(ccDeviceFeatureSelect, 4, 0)
			lo := r.read(ccDeviceFeature, 4)
			r.write(ccDeviceFeatureSelect, 4, 1)
			hi := r.read(ccDeviceFeature, 4)
			if got := hi<<32 | lo; got != offered {
				t.Fatalf("device features %#x, want %#x", got, offered)
			}
			r.write(ccDeviceFeatureSelect, 4, 2)
			if got := r.read(ccDeviceFeature, 4); got != 0 {
				t.Errorf("feature word 2 = %#x", got)
			}
			r.negotiate(tc.driver)
			if got := r.status()&StatusFeaturesOK != 0; got != tc.ok {
				t.Fatalf("FEATURES_OK = %v, want %v", got, tc.ok)
			}
			if !tc.ok {
				return
			}
			// Features are frozen after FEATURES_OK.
			r.write(ccDriverFeatureSelect, 4, 0)
			r.write(ccDriverFeature, 4, 0)
			r.setupQueue(0, 16, 1)
			r.write(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
			r.dev.mu.Lock()
			got := r.dev.features0
			r.dev.mu.Unlock()
			if got != tc.driver {
				t.Errorf("device activated with %#x, want %#x", got, tc.driver)
			}
		})
	}
}

func TestTransportQueueSetupAndReset(t *testing.T) {
	r := newRig(t, false, 128, 64)
	if got := r.read(ccNumQueues, 2); got != 2 {
		t.Fatalf("num_queues %d", got)
	}
	r.negotiate(FeatureVersion1)
	r.write(ccQueueSelect, 2, 1)
	if got := r.read(ccQueueSize, 2); got != 64 {
		t.Errorf("queue 1 size %d, want its maximum 64", got)
	}
	if got := r.read(ccQueueNotifyOff, 2); got != 1 {
		t.Errorf("queue 1 notify_off %d", got)
	}
	r.write(ccQueueSelect, 2, 7)
	if got := r.read(ccQueueSize, 2); got != 0 {
		t.Errorf("missing queue 7 has size %d, want 0", got)
	}
	r.write(ccQueueSize, 2, 8) // ignored, no panic
	r.setupQueue(0, 64, 1)
	r.write(ccQueueSelect, 2, 0)
	if got := r.read(ccQueueDesc, 8); got != 0x10000 {
		t.Errorf("queue_desc read as a quadword: %#x", got)
	}
	if got := r.read(ccQueueDriver+4, 4)<<32 | r.read(ccQueueDriver, 4); got != 0x11000 {
		t.Errorf("queue_driver %#x", got)
	}
	if got := r.read(ccQueueEnable, 2); got != 1 {
		t.Errorf("queue_enable %d", got)
	}
	if got := r.read(ccQueueMSIXVector, 2); got != 1 {
		t.Errorf("queue vector %d", got)
	}
	r.write(ccQueueMSIXVector, 2, 3) // only vectors 0..2 exist
	if got := r.read(ccQueueMSIXVector, 2); got != NoVector {
		t.Errorf("out-of-range vector reads %#x, want NO_VECTOR", got)
	}
	r.write(ccQueueMSIXVector, 2, 1)
	// Changing an enabled queue is ignored.
	r.write(ccQueueSize, 2, 16)
	if got := r.read(ccQueueSize, 2); got != 64 {
		t.Errorf("size of an enabled queue changed to %d", got)
	}
	r.write(ccMSIXConfig, 2, 0)
	r.write(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	if act, _, _ := r.dev.state(); act != 1 {
		t.Fatalf("activated %d times", act)
	}
	r.dev.mu.Lock()
	qs := r.dev.queues
	r.dev.mu.Unlock()
	if len(qs) != 2 || qs[0] == nil || qs[1] != nil || qs[0].Size() != 64 {
		t.Fatalf("activated with queues %v", qs)
	}
	if got := r.status(); got != 0xf {
		t.Errorf("status %#x", got)
	}
	// Reset: the device stops, every register returns to its reset value.
	r.write(ccDeviceStatus, 1, 0)
	if _, resets, _ := r.dev.state(); resets != 1 {
		t.Errorf("device reset %d times", resets)
	}
	if r.status() != 0 {
		t.Errorf("status after reset %#x", r.status())
	}
	r.write(ccQueueSelect, 2, 0)
	if got := r.read(ccQueueEnable, 2); got != 0 {
		t.Error("queue still enabled after reset")
	}
	if got := r.read(ccQueueSize, 2); got != 128 {
		t.Errorf("queue size after reset %d, want 128", got)
	}
	if got := r.read(ccQueueMSIXVector, 2); got != NoVector {
		t.Errorf("queue vector after reset %#x", got)
	}
	if got := r.read(ccMSIXConfig, 2); got != NoVector {
		t.Errorf("config vector after reset %#x", got)
	}
	// A notification now finds no running device.
	r.write(pciNotifyOff, 2, 0)
	if _, _, n := r.dev.state(); len(n) != 1 { // the one at activation
		t.Errorf("notifies %v after reset", n)
	}
}

func TestTransportDriverOKWithoutFeaturesOK(t *testing.T) {
	r := newRig(t, false, 16)
	r.write(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver|StatusDriverOK)
	if act, _, _ := r.dev.state(); act != 0 || r.status()&StatusDriverOK != 0 {
		t.Errorf("activated %d times, status %#x", act, r.status())
	}
}

// A driver that clears Bus Master Enable stops the device: a function
// must then make no memory access (PCI 3.0, 6.2.2) and MSI-X messages are
// memory writes. Linux clears it on unbind and, for kexec, at shutdown,
// so that no device writes into the next kernel's memory. As in QEMU,
// DRIVER_OK reads clear; the device runs again only after a reset.
// (Found by an audit: the device went on filling buffers and signalling.)
func TestTransportBusMasterOffStopsTheDevice(t *testing.T) {
	mem := make(sliceMemory, 1<<20)
	r := newRigWith(t, NewRNG(), mem, false)
	le := binary.LittleEndian
	start := func() {
		clear(mem)
		r.enableMSIX()
		r.negotiate(FeatureVersion1)
		r.setupQueue(0, 16, 0) // desc 0x10000, avail 0x11000, used 0x12000
		r.write(ccDeviceStatus, 1, 0xf)
	}
	// post makes one writable 64-byte buffer available and notifies.
	post := func() {
		le.PutUint64(mem[0x10000:], 0x20000)
		le.PutUint32(mem[0x10008:], 64)
		le.PutUint16(mem[0x1000c:], 2) // VIRTQ_DESC_F_WRITE
		idx := le.Uint16(mem[0x11002:])
		le.PutUint16(mem[0x11004+2*uint32(idx%16):], 0)
		le.PutUint16(mem[0x11002:], idx+1)
		r.write(pciNotifyOff, 2, 0)
	}
	used := func() uint16 { return le.Uint16(mem[0x12002:]) }

	start()
	post()
	if used() != 1 || r.msi.fired(0) != 1 {
		t.Fatalf("with Bus Master on: used idx %d, %d interrupts, want 1 and 1", used(), r.msi.fired(0))
	}
	r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMemory)
	post()
	if used() != 1 || r.msi.fired(0) != 1 {
		t.Errorf("with Bus Master off: used idx %d, %d interrupts, want the device stopped at 1 and 1", used(), r.msi.fired(0))
	}
	if s := r.status(); s&StatusDriverOK != 0 || s&StatusDeviceNeedsReset == 0 {
		t.Errorf("status %#x with Bus Master off, want DRIVER_OK clear and DEVICE_NEEDS_RESET set", s)
	}
	// Bus Master back on: the device stays stopped, DRIVER_OK too, until
	// the driver resets it.
	r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMemory|devices.PCICommandMaster)
	r.write(ccDeviceStatus, 1, 0xf)
	post()
	if s := r.status(); used() != 1 || s&StatusDriverOK != 0 {
		t.Errorf("DRIVER_OK without a reset: status %#x, used idx %d, want the device still stopped", s, used())
	}
	r.write(ccDeviceStatus, 1, 0)
	start()
	post()
	if used() != 1 || r.msi.fired(0) != 2 {
		t.Errorf("after a reset: used idx %d, %d interrupts, want 1 and 2", used(), r.msi.fired(0))
	}
	// A driver that sets DRIVER_OK with the bit clear gets no running
	// device either (it ran and wrote guest memory; found in review).
	r.write(ccDeviceStatus, 1, 0)
	r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMemory)
	start()
	post()
	if s := r.status(); used() != 0 || s&StatusDriverOK != 0 {
		t.Errorf("DRIVER_OK with Bus Master off: status %#x, used idx %d, want DRIVER_OK refused and nothing used", s, used())
	}
}

func TestTransportMMIONotifyAndInterrupts(t *testing.T) {
	r := newRig(t, false, 16, 16)
	r.enableMSIX()
	r.negotiate(FeatureVersion1)
	r.setupQueue(0, 16, 1)
	r.setupQueue(1, 16, 2)
	r.write(ccMSIXConfig, 2, 0)
	r.write(ccDeviceStatus, 1, 0xf)
	// The activation looks at each queue once.
	if _, _, n := r.dev.state(); len(n) != 2 {
		t.Fatalf("notifies at activation: %v", n)
	}
	r.write(pciNotifyOff+4, 2, 1)
	r.write(pciNotifyOff+4, 2, 1)
	r.write(pciNotifyOff, 2, 0)
	r.write(pciNotifyOff+2, 2, 0) // not a queue's address: ignored
	if _, _, n := r.dev.state(); len(n) != 5 || n[2] != 1 || n[4] != 0 {
		t.Errorf("notifies %v", n)
	}
	c := r.tr.Counters()
	if c[0].NotifyMMIO != 1 || c[1].NotifyMMIO != 2 || c[0].NotifyEventFD != 0 {
		t.Errorf("counters %+v", c)
	}

	r.dev.mu.Lock()
	irq := r.dev.irq
	r.dev.mu.Unlock()
	if err := irq.Queue(1); err != nil {
		t.Fatal(err)
	}
	if r.msi.fired(2) != 1 || r.msi.vectors[2].addr != 0xfee00000 || r.msi.vectors[2].data != 0x4022 {
		t.Errorf("vector 2: %+v", *r.msi.vectors[2])
	}
	if err := irq.Queue(5); err == nil {
		t.Error("interrupt for queue 5 accepted")
	}
	// Masked: the PBA bit is set instead, and unmasking sends it.
	r.write(pciMSIXOff+16*1+12, 4, 1)
	irq.Queue(0)
	if r.msi.fired(1) != 0 {
		t.Error("masked vector fired")
	}
	if got := r.read(pciPBAOff, 8); got != 1<<1 {
		t.Errorf("PBA %#x, want bit 1", got)
	}
	if got := r.read(pciMSIXOff+16*1+12, 4); got != 1 {
		t.Errorf("vector control %#x", got)
	}
	r.write(pciMSIXOff+16*1+12, 4, 0)
	if r.msi.fired(1) != 1 || r.read(pciPBAOff, 8) != 0 {
		t.Errorf("unmask: fired %d, PBA %#x", r.msi.fired(1), r.read(pciPBAOff, 8))
	}
	// Function mask works the same way.
	r.cfgWrite(r.tr.msixCap+2, 2, 1<<15|1<<14)
	irq.Queue(0)
	irq.Queue(0)
	if r.msi.fired(1) != 1 {
		t.Error("function-masked vector fired")
	}
	r.cfgWrite(r.tr.msixCap+2, 2, 1<<15)
	if r.msi.fired(1) != 2 {
		t.Errorf("after function unmask fired %d, want 2 (pending coalesces)", r.msi.fired(1))
	}
	if c := r.tr.Counters(); c[0].Interrupts != 3 || c[1].Interrupts != 1 {
		t.Errorf("interrupt counters %+v", c)
	}
	// A new message for a live vector is routed before the next fire.
	r.write(pciMSIXOff+16*2+8, 4, 0x4099)
	irq.Queue(1)
	if v := r.msi.vectors[2]; v.data != 0x4099 {
		t.Errorf("vector 2 data %#x after reprogramming", v.data)
	}
	// Table reads: quadword and dword.
	if got := r.read(pciMSIXOff+16*2, 8); got != 0xfee00000 {
		t.Errorf("table quadword %#x", got)
	}
	if got := r.read(pciMSIXOff+16*2+8, 4); got != 0x4099 {
		t.Errorf("table data %#x", got)
	}
}

func TestTransportISRAndConfigInterrupt(t *testing.T) {
	r := newRig(t, false, 16)
	r.negotiate(FeatureVersion1)
	r.setupQueue(0, 16, 1)
	r.write(ccDeviceStatus, 1, 0xf)
	r.dev.mu.Lock()
	irq := r.dev.irq
	r.dev.mu.Unlock()
	// MSI-X disabled: the ISR carries the cause, read-to-clear.
	irq.Queue(0)
	irq.Config()
	if got := r.read(pciISROff, 1); got != isrQueue|isrConfig {
		t.Errorf("ISR %#x", got)
	}
	if got := r.read(pciISROff, 1); got != 0 {
		t.Errorf("ISR not cleared by the read: %#x", got)
	}
	if got := r.read(ccConfigGeneration, 1); got != 1 {
		t.Errorf("config generation %d after a config interrupt", got)
	}
	// Device-specific configuration is the device's.
	if got := r.read(pciDeviceOff+2, 2); got != 0x0403 {
		t.Errorf("device config %#x", got)
	}
}

func TestTransportDeviceError(t *testing.T) {
	r := newRig(t, false, 16)
	r.enableMSIX()
	r.negotiate(FeatureVersion1)
	r.setupQueue(0, 16, 1)
	r.write(ccMSIXConfig, 2, 0)
	r.write(ccDeviceStatus, 1, 0xf)
	r.dev.mu.Lock()
	r.dev.notifyErr = errors.New("bad descriptor")
	r.dev.mu.Unlock()
	r.write(pciNotifyOff, 2, 0)
	r.write(pciNotifyOff, 2, 0)
	if got := r.status(); got != 0xf|StatusDeviceNeedsReset {
		t.Errorf("status %#x, want DEVICE_NEEDS_RESET", got)
	}
	if r.msi.fired(0) != 1 {
		t.Errorf("config vector fired %d times, want once", r.msi.fired(0))
	}
	r.dev.mu.Lock()
	r.dev.notifyErr = nil
	r.dev.mu.Unlock()
	r.write(ccDeviceStatus, 1, 0)
	if got := r.status(); got != 0 {
		t.Errorf("status after reset %#x", got)
	}
}

// waitNotify waits for the device to see a notification for q.
func waitNotify(t *testing.T, d *fakeDevice, q int) {
	t.Helper()
	select {
	case got := <-d.notified:
		if got != q {
			t.Fatalf("notify for queue %d, want %d", got, q)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no notify for queue %d", q)
	}
}

func TestTransportIOEventFD(t *testing.T) {
	r := newRig(t, true, 16, 16)
	r.enableMSIX()
	r.negotiate(FeatureVersion1)
	r.setupQueue(1, 16, 2) // queue 0 stays disabled
	if len(r.ioev.regs) != 0 {
		t.Fatal("ioeventfds registered before DRIVER_OK")
	}
	r.write(ccDeviceStatus, 1, 0xf)
	waitNotify(t, r.dev, 1) // the look at activation
	addr := uint64(testBARBase + pciNotifyOff + 4)
	efd, ok := r.ioev.fd(addr)
	if !ok || len(r.ioev.regs) != 1 {
		t.Fatalf("ioeventfds %v, want one at %#x", r.ioev.regs, addr)
	}
	// What KVM does on a guest write: add 1 to the eventfd.
	kick := func(efd int) {
		if _, err := unix.Write(efd, binary.LittleEndian.AppendUint64(nil, 1)); err != nil {
			t.Fatal(err)
		}
	}
	kick(efd)
	waitNotify(t, r.dev, 1)
	deadline := time.Now().Add(5 * time.Second)
	for r.tr.Counters()[1].NotifyEventFD != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if c := r.tr.Counters()[1]; c.NotifyEventFD != 1 || c.NotifyMMIO != 0 {
		t.Errorf("counters %+v", c)
	}
	// The guest moves the BAR: the ioeventfd follows.
	r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMaster)
	if len(r.ioev.regs) != 0 {
		t.Errorf("ioeventfds %v with decoding off", r.ioev.regs)
	}
	r.cfgWrite(devices.PCIBAR0, 4, 0xd0000000)
	r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMemory|devices.PCICommandMaster)
	waitNotify(t, r.dev, 1) // the look after the move
	efd2, ok := r.ioev.fd(0xd0000000 + pciNotifyOff + 4)
	if !ok || len(r.ioev.regs) != 1 {
		t.Fatalf("after the move: %v", r.ioev.regs)
	}
	kick(efd2)
	waitNotify(t, r.dev, 1)
	// Reset deregisters.
	b := []byte{0}
	r.mmio.Dispatch(0xd0000000+ccDeviceStatus, b, true)
	if len(r.ioev.regs) != 0 {
		t.Errorf("ioeventfds %v after reset", r.ioev.regs)
	}
}

func TestTransportIOEventFDFallback(t *testing.T) {
	r := newRig(t, true, 16)
	r.ioev.fail = true
	r.negotiate(FeatureVersion1)
	r.setupQueue(0, 16, 0)
	r.write(ccDeviceStatus, 1, 0xf)
	waitNotify(t, r.dev, 0)
	r.write(pciNotifyOff, 2, 0)
	waitNotify(t, r.dev, 0)
	if c := r.tr.Counters()[0]; c.NotifyMMIO != 1 {
		t.Errorf("counters %+v", c)
	}
}

func TestTransportPCICfgWindow(t *testing.T) {
	r := newRig(t, false, 16, 16, 16)
	at := r.tr.pciCfgAt
	r.cfgWrite(at+pciCfgBar, 1, 0)
	r.cfgWrite(at+pciCfgOffset, 4, ccNumQueues)
	r.cfgWrite(at+pciCfgLength, 4, 2)
	if got := r.cfgRead(at+pciCfgData, 4); got != 3 {
		t.Errorf("num_queues through PCI_CFG: %d", got)
	}
	r.cfgWrite(at+pciCfgOffset, 4, ccDeviceStatus)
	r.cfgWrite(at+pciCfgLength, 4, 1)
	r.cfgWrite(at+pciCfgData, 1, StatusAcknowledge)
	if got := r.status(); got != StatusAcknowledge {
		t.Errorf("status written through PCI_CFG: %#x", got)
	}
	// A misaligned or oversized window does nothing.
	r.cfgWrite(at+pciCfgOffset, 4, 0x7fff)
	r.cfgWrite(at+pciCfgLength, 4, 4)
	r.cfgRead(at+pciCfgData, 4)
	r.cfgWrite(at+pciCfgData, 4, 0)
}

// TestTransportHostile throws every offset and width at the BAR and the
// configuration space, in every state: nothing may panic or deadlock.
func TestTransportHostile(t *testing.T) {
	r := newRig(t, true, 16, 16)
	for _, status := range []uint64{0, 0xb, 0xf, 0xff} {
		r.negotiate(FeatureVersion1)
		r.setupQueue(0, 16, 0)
		r.write(ccDeviceStatus, 1, status)
		for off := uint64(0); off < BARSize; off += 1 + off/64 {
			for _, n := range []int{1, 2, 4, 8} {
				b := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}[:n]
				r.mmio.Dispatch(testBARBase+off, b, false)
				if off == ccDeviceStatus || off == ccQueueSelect {
					continue // keep the walk going through the queue fields
				}
				r.mmio.Dispatch(testBARBase+off, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}[:n], true)
			}
		}
		for off := 0x40; off < 256; off++ {
			for _, n := range []int{1, 2, 4} {
				if off+n > 256 {
					continue
				}
				r.tr.ReadConfig(uint64(off), make([]byte, n))
				r.tr.WriteConfig(uint64(off), []byte{0xff, 0xff, 0xff, 0xff}[:n])
			}
		}
		// Restore the BAR the walk may have moved.
		r.cfgWrite(devices.PCIBAR0, 4, testBARBase)
		r.cfgWrite(devices.PCIBAR0+4, 4, 0)
		r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMemory|devices.PCICommandMaster)
		r.write(ccDeviceStatus, 1, 0)
	}
	// Drain what the walk left in the notification channel.
	for len(r.dev.notified) > 0 {
		<-r.dev.notified
	}
}

// An interrupt that became pending while its vector was masked, and whose
// vector was unmasked while Bus Master Enable was clear, is sent once the
// bit is set again and its pending bit clears (PCI 3.0, 6.8.3.4: an
// unmasked vector with its pending bit set sends its message); it stayed
// pending for ever, and the PBA kept showing it while later messages of
// the vector went out.
func TestTransportMSIXPendingSentWhenBusMasterReturns(t *testing.T) {
	r := newRig(t, false, 16)
	r.enableMSIX()
	r.write(pciMSIXOff+12, 4, 1) // mask vector 0
	if err := r.tr.msix.fire(0); err != nil {
		t.Fatal(err)
	}
	if r.read(pciPBAOff, 8)&1 == 0 {
		t.Fatal("masked vector fired: no pending bit")
	}
	r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMemory)
	r.write(pciMSIXOff+12, 4, 0) // unmask with Bus Master off: nothing sent
	if n := r.msi.fired(0); n != 0 {
		t.Fatalf("%d messages sent with Bus Master off", n)
	}
	r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMemory|devices.PCICommandMaster)
	if n, pba := r.msi.fired(0), r.read(pciPBAOff, 8); n != 1 || pba&1 != 0 {
		t.Errorf("Bus Master back on: %d messages, PBA %#x; want the pending one sent and its bit clear", n, pba)
	}
	// An unmasked vector fired with Bus Master off is dropped, as QEMU's
	// bus-master address space drops the write: not sent, not pending.
	r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMemory)
	if err := r.tr.msix.fire(0); err != nil {
		t.Fatal(err)
	}
	r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMemory|devices.PCICommandMaster)
	if n, pba := r.msi.fired(0), r.read(pciPBAOff, 8); n != 1 || pba&1 != 0 {
		t.Errorf("a message fired with Bus Master off: %d messages, PBA %#x; want it dropped", n, pba)
	}
}
