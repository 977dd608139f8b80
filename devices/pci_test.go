package devices

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/govmm/govmm/guestlog"
)

// cfgPorts drives a host bridge through its ports, as a guest would.
type cfgPorts struct {
	t   *testing.T
	bus *Bus
}

func newCfgPorts(t *testing.T) (*PCIHostBridge, *Bus, cfgPorts) {
	t.Helper()
	io, mmio := NewBus("io"), NewBus("mmio")
	h := NewPCIHostBridge(mmio, io)
	if _, err := io.Register("pci", PCIConfigPort, PCIConfigPortSize, h); err != nil {
		t.Fatal(err)
	}
	return h, mmio, cfgPorts{t, io}
}

func cfgAddr(dev, fn, reg int) uint32 {
	return pciEnable | uint32(dev)<<11 | uint32(fn)<<8 | uint32(reg)&0xfc
}

// read reads n bytes at register reg of 00:dev.fn through 0xcfc+(reg&3).
func (p cfgPorts) read(dev, fn, reg, n int) uint32 {
	p.t.Helper()
	p.latch(cfgAddr(dev, fn, reg))
	b := make([]byte, 4)
	if p.bus.Dispatch(PCIConfigPort+4+uint64(reg&3), b[:n], false) == nil {
		p.t.Fatalf("data port access at reg %#x size %d unclaimed", reg, n)
	}
	return binary.LittleEndian.Uint32(b)
}

func (p cfgPorts) write(dev, fn, reg, n int, v uint32) {
	p.t.Helper()
	p.latch(cfgAddr(dev, fn, reg))
	b := binary.LittleEndian.AppendUint32(nil, v)
	p.bus.Dispatch(PCIConfigPort+4+uint64(reg&3), b[:n], true)
}

func (p cfgPorts) latch(a uint32) {
	p.bus.Dispatch(PCIConfigPort, binary.LittleEndian.AppendUint32(nil, a), true)
}

func TestPCIHostBridgeFunction(t *testing.T) {
	_, _, p := newCfgPorts(t)
	for _, tc := range []struct {
		name         string
		dev, fn, reg int
		size         int
		want         uint32
	}{
		{"vendor+device", 0, 0, 0, 4, PCIHostBridgeDevice<<16 | PCIHostBridgeVendor},
		{"vendor word", 0, 0, 0, 2, PCIHostBridgeVendor},
		{"device word at 0xcfe", 0, 0, 2, 2, PCIHostBridgeDevice},
		{"device high byte at 0xcff", 0, 0, 3, 1, PCIHostBridgeDevice >> 8},
		{"unaligned word at 0xcfd", 0, 0, 1, 2, (PCIHostBridgeDevice&0xff)<<8 | PCIHostBridgeVendor>>8},
		{"class", 0, 0, 8, 4, PCIClassHostBridge << 8},
		{"header type", 0, 0, PCIHeaderType, 1, 0},
		{"empty slot", 5, 0, 0, 4, 0xffffffff},
		{"function 1", 0, 1, 0, 2, 0xffff},
		{"last slot", 31, 0, 0, 2, 0xffff},
	} {
		if got := p.read(tc.dev, tc.fn, tc.reg, tc.size); got != tc.want {
			t.Errorf("%s: read %#x, want %#x", tc.name, got, tc.want)
		}
	}
	// Another bus, and a latch without the enable bit, reach nothing.
	p.latch(1 << 16)
	p.latch(pciEnable | 1<<16)
	b := make([]byte, 4)
	p.bus.Dispatch(PCIConfigPort+4, b, false)
	if got := binary.LittleEndian.Uint32(b); got != 0xffffffff {
		t.Errorf("bus 1 reads %#x", got)
	}
	p.latch(0)
	p.bus.Dispatch(PCIConfigPort+4, b, false)
	if got := binary.LittleEndian.Uint32(b); got != 0xffffffff {
		t.Errorf("disabled latch reads %#x", got)
	}
	// Identity registers are read-only.
	p.write(0, 0, 0, 4, 0x12345678)
	if got := p.read(0, 0, 0, 4); got != PCIHostBridgeDevice<<16|PCIHostBridgeVendor {
		t.Errorf("vendor/device changed to %#x by a write", got)
	}
}

func TestPCILatch(t *testing.T) {
	_, _, p := newCfgPorts(t)
	// Linux's pci_check_type1: a byte to 0xcfb, then the dword latch
	// must read back what was written.
	p.bus.Dispatch(PCIConfigPort+3, []byte{1}, true)
	p.latch(0x80000000)
	b := make([]byte, 4)
	p.bus.Dispatch(PCIConfigPort, b, false)
	if got := binary.LittleEndian.Uint32(b); got != 0x80000000 {
		t.Errorf("latch reads %#x, want 0x80000000", got)
	}
	// Linux's pci_check_type2 wants bytes 0xcf8 and 0xcfa to read 0 on a
	// type 2 bridge: they must not, here.
	p.bus.Dispatch(PCIConfigPort, []byte{0}, true)
	one := []byte{0}
	p.bus.Dispatch(PCIConfigPort, one, false)
	if one[0] != 0xff {
		t.Errorf("byte read of 0xcf8 = %#x, want 0xff", one[0])
	}
	p.latch(0x80000003)
	p.bus.Dispatch(PCIConfigPort, b, false)
	if got := binary.LittleEndian.Uint32(b); got != 0x80000000 {
		t.Errorf("latch keeps low bits: %#x", got)
	}
}

type movedCall struct {
	base   uint64
	mapped bool
}

func newTestFunction(t *testing.T, bars map[int]BAR) (*PCIConfig, *[]movedCall) {
	t.Helper()
	c := NewPCIConfig(PCIHeader{VendorID: 0x1af4, DeviceID: 0x1042, Revision: 1, Class: 0x018000})
	var calls []movedCall
	for i, b := range bars {
		b.Moved = func(base uint64, mapped bool) { calls = append(calls, movedCall{base, mapped}) }
		if err := c.AddBAR(i, b); err != nil {
			t.Fatal(err)
		}
	}
	return c, &calls
}

func TestPCIBARSizing(t *testing.T) {
	c, _ := newTestFunction(t, map[int]BAR{
		0: {Kind: BARMem64, Size: 0x8000},
		2: {Kind: BARMem32, Size: 0x100000, Prefetchable: true},
		3: {Kind: BARIO, Size: 0x20},
		4: {Kind: BARMem64, Size: 1 << 33, Prefetchable: true},
	})
	for i := 0; i < PCINumBARs; i++ {
		c.WriteConfig(uint64(PCIBAR0+4*i), []byte{0xff, 0xff, 0xff, 0xff})
	}
	want := []uint32{
		0xffff8004,                 // 64-bit memory, 32 KiB
		0xffffffff,                 // its upper half
		0xfff00008,                 // 32-bit prefetchable, 1 MiB
		0xffffffe1,                 // I/O, 32 ports
		0x0000000c,                 // 64-bit prefetchable, 8 GiB: no low address bits
		^uint32((1<<33 - 1) >> 32), // upper half: the size mask's top
	}
	for i, w := range want {
		b := make([]byte, 4)
		c.ReadConfig(uint64(PCIBAR0+4*i), b)
		if got := binary.LittleEndian.Uint32(b); got != w {
			t.Errorf("BAR %d after writing all ones: %#x, want %#x", i, got, w)
		}
	}
	// Sizing patterns never decode, even with decoding enabled.
	c.WriteConfig(PCICommand, []byte{PCICommandMemory | PCICommandIO, 0})
	for i := range PCINumBARs {
		if _, mapped := c.BARAddress(i); mapped {
			t.Errorf("BAR %d decodes while it holds the sizing pattern", i)
		}
	}
	// The expansion ROM is absent: sizing it reads 0.
	c.WriteConfig(PCIROMAddress, []byte{0xff, 0xff, 0xff, 0xff})
	if b := c.Bytes(PCIROMAddress, 4); binary.LittleEndian.Uint32(b) != 0 {
		t.Errorf("ROM BAR reads %x", b)
	}
}

func TestPCIAddBARErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		index int
		bar   BAR
	}{
		{"index", 6, BAR{Kind: BARMem32, Size: 0x1000}},
		{"size not power of two", 0, BAR{Kind: BARMem32, Size: 0x3000}},
		{"tiny memory", 0, BAR{Kind: BARMem32, Size: 8}},
		{"64-bit in last slot", 5, BAR{Kind: BARMem64, Size: 0x1000}},
		{"huge I/O", 0, BAR{Kind: BARIO, Size: 0x1000}},
		{"region outside", 0, BAR{Kind: BARMem32, Size: 0x1000, Regions: []BARRegion{{"x", 0x800, 0x1000, &recorder{}}}}},
		{"nil region device", 0, BAR{Kind: BARMem32, Size: 0x1000, Regions: []BARRegion{{"x", 0, 0x10, nil}}}},
	} {
		c := NewPCIConfig(PCIHeader{})
		if err := c.AddBAR(tc.index, tc.bar); !errors.Is(err, ErrBadBAR) {
			t.Errorf("%s: AddBAR = %v, want ErrBadBAR", tc.name, err)
		}
	}
	c := NewPCIConfig(PCIHeader{})
	if err := c.AddBAR(0, BAR{Kind: BARMem64, Size: 0x1000}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddBAR(1, BAR{Kind: BARMem32, Size: 0x1000}); !errors.Is(err, ErrBadBAR) {
		t.Errorf("BAR over the upper half of a 64-bit BAR: %v", err)
	}
}

func TestPCIBARMapping(t *testing.T) {
	h, mmio, p := newCfgPorts(t)
	cfgDev, notifyDev := &recorder{fill: 0x11}, &recorder{fill: 0x22}
	c, calls := newTestFunction(t, map[int]BAR{
		0: {Kind: BARMem64, Size: 0x8000, Regions: []BARRegion{
			{"dev", 0, 0x5000, cfgDev},
			{"dev.notify", 0x5000, 0x1000, notifyDev},
		}},
	})
	if err := c.SetBARAddress(0, 0xc0000000); err != nil {
		t.Fatal(err)
	}
	slot, err := h.AddDevice(c)
	if err != nil || slot != 1 {
		t.Fatalf("AddDevice = %d, %v; want slot 1", slot, err)
	}
	if got := p.read(1, 0, 0, 4); got != 0x10421af4 {
		t.Fatalf("slot 1 vendor/device %#x", got)
	}
	if r := mmio.Find(0xc0000000); r != nil {
		t.Fatalf("BAR decodes before the command register enables memory: %v", r)
	}
	// The guest enables memory decoding.
	p.write(1, 0, PCICommand, 2, PCICommandMemory|PCICommandMaster)
	if got, want := c.BARs(), []BARInfo{{Index: 0, Kind: BARMem64, Size: 0x8000, Base: 0xc0000000, Mapped: true}}; !slices.Equal(got, want) {
		t.Errorf("BARs() = %+v, want %+v", got, want)
	}
	r := mmio.Find(0xc0005004)
	if r == nil || r.Name != "dev.notify" || r.Base != 0xc0005000 {
		t.Fatalf("notify region at %v, want dev.notify at 0xc0005000", r)
	}
	notifyID := r.ID
	data := make([]byte, 2)
	mmio.Dispatch(0xc0005004, data, true)
	if notifyDev.offset != 4 || !notifyDev.write {
		t.Errorf("notify region got offset %#x write %v", notifyDev.offset, notifyDev.write)
	}
	// Linux moves a 64-bit BAR with decoding off, one half at a time.
	p.write(1, 0, PCICommand, 2, PCICommandMaster)
	if mmio.Find(0xc0000000) != nil {
		t.Error("BAR still decodes with memory space disabled")
	}
	p.write(1, 0, PCIBAR0, 4, 0xd0010000)
	p.write(1, 0, PCIBAR0+4, 4, 0x1)
	p.write(1, 0, PCICommand, 2, PCICommandMemory|PCICommandMaster)
	if got := p.read(1, 0, PCIBAR0, 4); got != 0xd0010004 {
		t.Errorf("BAR0 reads %#x", got)
	}
	r = mmio.Find(0x1_d0015000)
	if r == nil || r.Name != "dev.notify" || r.ID != notifyID {
		t.Fatalf("after the move: %v, want dev.notify with ID %d", r, notifyID)
	}
	if mmio.Find(0xc0005000) != nil {
		t.Error("old address still decodes")
	}
	want := []movedCall{{0xc0000000, true}, {0, false}, {0x1_d0010000, true}}
	if len(*calls) != len(want) {
		t.Fatalf("Moved calls %v, want %v", *calls, want)
	}
	for i := range want {
		if (*calls)[i] != want[i] {
			t.Errorf("Moved call %d = %v, want %v", i, (*calls)[i], want[i])
		}
	}
	// A BAR placed over another device does not decode.
	if _, err := mmio.Register("other", 0xe0000000, 0x1000, &recorder{}); err != nil {
		t.Fatal(err)
	}
	p.write(1, 0, PCIBAR0+4, 4, 0)
	p.write(1, 0, PCIBAR0, 4, 0xe0000000)
	if addr, mapped := c.BARAddress(0); mapped {
		t.Errorf("BAR over another device decodes at %#x", addr)
	}
	if r := mmio.Find(0xe0005000); r != nil {
		t.Errorf("half-placed BAR left %v on the bus", r)
	}
	if len(mmio.Ranges()) != 1 {
		t.Errorf("bus has %v", mmio.Ranges())
	}
}

func TestPCIIOBAR(t *testing.T) {
	h, _, p := newCfgPorts(t)
	dev := &recorder{fill: 0x5a}
	c, _ := newTestFunction(t, map[int]BAR{1: {Kind: BARIO, Size: 0x20, Regions: []BARRegion{{"io", 0, 0x20, dev}}}})
	if _, err := h.AddDevice(c); err != nil {
		t.Fatal(err)
	}
	p.write(1, 0, PCIBAR0+4, 4, 0xc000)
	p.write(1, 0, PCICommand, 2, PCICommandIO)
	if got, want := c.BARs(), []BARInfo{{Index: 1, Kind: BARIO, Size: 0x20, Base: 0xc000, Mapped: true}}; !slices.Equal(got, want) {
		t.Errorf("BARs() = %+v, want %+v", got, want)
	}
	b := []byte{0}
	if r := p.bus.Dispatch(0xc010, b, false); r == nil || b[0] != 0x5a {
		t.Errorf("I/O BAR read %#x via %v", b[0], r)
	}
	// An I/O BAR beyond 64 KiB of ports does not decode.
	p.write(1, 0, PCIBAR0+4, 4, 0x10000)
	if _, mapped := c.BARAddress(1); mapped {
		t.Error("I/O BAR at 0x10000 decodes")
	}
}

func TestPCICapabilityList(t *testing.T) {
	c := NewPCIConfig(PCIHeader{VendorID: 1})
	bodies := [][]byte{
		{16, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{20, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0},
		{0x01, 0x00, 0x00, 0x30, 0, 0, 0x00, 0x40, 0, 0}, // odd length: next must realign
		{1},
	}
	ids := []uint8{PCICapVendor, PCICapVendor, PCICapMSIX, PCICapVendor}
	var offs []int
	for i, b := range bodies {
		var wmask []byte
		if ids[i] == PCICapMSIX {
			wmask = make([]byte, len(b))
			wmask[1] = 0xc0
		}
		off, err := c.AddCapability(ids[i], b, wmask)
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	if c.Bytes(PCIStatus, 1)[0]&PCIStatusCapList == 0 {
		t.Fatal("status lacks the capability list bit")
	}
	// Walk the list as Linux's pci_find_next_capability does.
	var got []int
	ptr := int(c.Bytes(PCICapabilityList, 1)[0])
	for ttl := 48; ptr != 0 && ttl > 0; ttl-- {
		if ptr < 0x40 || ptr&3 != 0 {
			t.Fatalf("capability pointer %#x", ptr)
		}
		got = append(got, ptr)
		hdr := c.Bytes(ptr, 2)
		if hdr[0] != ids[len(got)-1] {
			t.Errorf("capability at %#x has ID %#x, want %#x", ptr, hdr[0], ids[len(got)-1])
		}
		ptr = int(hdr[1])
	}
	if len(got) != len(offs) {
		t.Fatalf("walked %v, added %v", got, offs)
	}
	for i := range got {
		if got[i] != offs[i] {
			t.Errorf("capability %d at %#x, AddCapability said %#x", i, got[i], offs[i])
		}
	}
	// Only the write mask's bits change: MSI-X enable/mask yes, table
	// size no.
	msix := offs[2]
	c.WriteConfig(uint64(msix+2), []byte{0xff, 0xff})
	if b := c.Bytes(msix+2, 2); b[0] != 0x01 || b[1] != 0xc0 {
		t.Errorf("MSI-X control after writing ones: %x", b)
	}
	c.WriteConfig(uint64(offs[0]+2), []byte{0xff})
	if b := c.Bytes(offs[0]+2, 1); b[0] != 16 {
		t.Errorf("read-only cap_len changed to %d", b[0])
	}
	// A capability that does not fit is refused.
	if _, err := c.AddCapability(PCICapVendor, make([]byte, 200), nil); !errors.Is(err, ErrConfigSpace) {
		t.Errorf("oversized capability: %v", err)
	}
}

func TestPCIAddDeviceSlots(t *testing.T) {
	h, _, _ := newCfgPorts(t)
	for i := 1; i < PCIMaxSlots; i++ {
		slot, err := h.AddDevice(NewPCIConfig(PCIHeader{VendorID: 1}))
		if err != nil || slot != i {
			t.Fatalf("AddDevice %d = %d, %v", i, slot, err)
		}
	}
	if _, err := h.AddDevice(NewPCIConfig(PCIHeader{})); !errors.Is(err, ErrNoSlot) {
		t.Errorf("33rd device: %v", err)
	}
	if _, err := h.AddDevice(nil); err == nil {
		t.Error("nil function accepted")
	}
}

// TestPCIConfigHostile throws every offset and size at the ports and the
// config space: nothing may panic.
func TestPCIConfigHostile(t *testing.T) {
	h, _, p := newCfgPorts(t)
	c, _ := newTestFunction(t, map[int]BAR{0: {Kind: BARMem64, Size: 0x1000, Regions: []BARRegion{{"r", 0, 0x1000, &recorder{}}}}})
	h.AddDevice(c)
	for reg := 0; reg < 256; reg++ {
		for _, n := range []int{1, 2, 4} {
			p.latch(cfgAddr(1, 0, reg))
			b := []byte{0xff, 0xff, 0xff, 0xff}
			port := PCIConfigPort + 4 + uint64(reg&3)
			p.bus.Dispatch(port, b[:n], true)
			p.bus.Dispatch(port, b[:n], false)
		}
	}
	for off := uint64(0); off < 8; off++ {
		for _, n := range []int{1, 2, 4, 8} {
			b := make([]byte, n)
			h.Read(off, b)
			h.Write(off, b)
		}
	}
	c.ReadConfig(250, make([]byte, 8))
	c.WriteConfig(250, make([]byte, 8))
	c.ReadConfig(1<<40, make([]byte, 4))
}

// A BAR moved over another function's BAR does not decode while the
// other is there, and decodes as soon as the other moves away or stops
// decoding, with no write to its own function (found by an audit: it
// stayed dark until its command register was written again).
func TestPCIBAROverlapClears(t *testing.T) {
	captureLog(t)
	h, mmio, p := newCfgPorts(t)
	mem32 := func(name string, dev Device) map[int]BAR {
		return map[int]BAR{0: {Kind: BARMem32, Size: 0x1000, Regions: []BARRegion{{name, 0, 0x1000, dev}}}}
	}
	a, aCalls := newTestFunction(t, mem32("a", &recorder{fill: 0xa}))
	b, _ := newTestFunction(t, mem32("b", &recorder{fill: 0xb}))
	for _, f := range []*PCIConfig{a, b} {
		if _, err := h.AddDevice(f); err != nil {
			t.Fatal(err)
		}
	}
	// a in slot 1 at 0xe0100000, b in slot 2 at 0xe0300000.
	p.write(1, 0, PCIBAR0, 4, 0xe0100000)
	p.write(2, 0, PCIBAR0, 4, 0xe0300000)
	p.write(1, 0, PCICommand, 2, PCICommandMemory)
	p.write(2, 0, PCICommand, 2, PCICommandMemory)
	at := func(addr uint64) string {
		if r := mmio.Find(addr); r != nil {
			return r.Name
		}
		return ""
	}
	p.write(1, 0, PCIBAR0, 4, 0xe0300000) // a over b: b keeps the place
	if got := at(0xe0300000); got != "b" {
		t.Fatalf("at 0xe0300000: %q, want b", got)
	}
	if _, mapped := a.BARAddress(0); mapped {
		t.Fatal("a decodes over b")
	}
	p.write(2, 0, PCIBAR0, 4, 0xe0500000) // b moves away
	if got := at(0xe0300000); got != "a" {
		t.Errorf("after b moved away, at 0xe0300000: %q, want a", got)
	}
	if got := at(0xe0500000); got != "b" {
		t.Errorf("at 0xe0500000: %q, want b", got)
	}
	if got, want := (*aCalls)[len(*aCalls)-1], (movedCall{0xe0300000, true}); got != want {
		t.Errorf("a's last Moved call %v, want %v", got, want)
	}
	// Over b again; then b stops decoding.
	p.write(1, 0, PCIBAR0, 4, 0xe0500000)
	if got := at(0xe0500000); got != "b" {
		t.Fatalf("at 0xe0500000: %q, want b", got)
	}
	p.write(2, 0, PCICommand, 2, 0)
	if got := at(0xe0500000); got != "a" {
		t.Errorf("after b stopped decoding, at 0xe0500000: %q, want a", got)
	}
	// b decodes again: a holds the place now, and b waits.
	p.write(2, 0, PCICommand, 2, PCICommandMemory)
	if got := at(0xe0500000); got != "a" {
		t.Errorf("after b decoded again, at 0xe0500000: %q, want a", got)
	}
	// A BAR that stops decoding while blocked is not placed later.
	p.write(2, 0, PCICommand, 2, 0)
	p.write(1, 0, PCICommand, 2, 0)
	if r := mmio.Find(0xe0500000); r != nil {
		t.Errorf("with decoding off everywhere, %v at 0xe0500000", r)
	}
}

// TestPCIBAROverlapLogBounded: a guest moving a BAR over another
// device's range again and again gets a burst of log lines, not one per
// move; every move is counted.
func TestPCIBAROverlapLogBounded(t *testing.T) {
	logs := captureLog(t)
	h, mmio, p := newCfgPorts(t)
	c, _ := newTestFunction(t, map[int]BAR{
		0: {Kind: BARMem32, Size: 0x1000, Regions: []BARRegion{{"dev", 0, 0x1000, &recorder{}}}},
	})
	if _, err := h.AddDevice(c); err != nil {
		t.Fatal(err)
	}
	if _, err := mmio.Register("other", 0xe0000000, 0x1000, &recorder{}); err != nil {
		t.Fatal(err)
	}
	p.write(1, 0, PCICommand, 2, PCICommandMemory)
	const moves = 24000
	for i := range moves {
		// Over the other device, then away: each first write fails.
		p.write(1, 0, PCIBAR0, 4, 0xe0000000)
		p.write(1, 0, PCIBAR0, 4, 0xd0000000+uint32(i%2)*0x1000)
	}
	if n := strings.Count(logs.String(), "\n"); n > guestlog.Burst {
		t.Errorf("%d log lines for %d overlapping moves, want at most %d", n, moves, guestlog.Burst)
	}
	if got := c.log.Counts()["bar_overlap"]; got != moves {
		t.Errorf("counted %d overlapping moves, want %d", got, moves)
	}
}

// A byte at 0xcf9 is PIIX3's reset control register, inside the host
// bridge's ports (QEMU overlaps it on them); the dword latch at 0xcf8 is
// not disturbed, and other widths at 0xcf8 stay the latch's.
func TestPCIHostBridgeResetControl(t *testing.T) {
	h, _, p := newCfgPorts(t)
	one := []byte{0}
	// Without a register, the byte finds nothing.
	p.bus.Dispatch(ResetControlPort, []byte{0x06}, true)
	p.bus.Dispatch(ResetControlPort, one, false)
	if one[0] != 0xff {
		t.Errorf("0xcf9 without a reset control register reads %#x, want 0xff", one[0])
	}

	resets := 0
	h.SetResetControl(NewResetControl(func() { resets++ }))
	p.latch(cfgAddr(0, 0, PCIClassProgIF))
	p.bus.Dispatch(ResetControlPort, []byte{0x02}, true)
	p.bus.Dispatch(ResetControlPort, one, false)
	if one[0] != 0x02 || resets != 0 {
		t.Errorf("0xcf9 = 2: reads %#x, %d resets; want 0x02, 0", one[0], resets)
	}
	p.bus.Dispatch(ResetControlPort, []byte{0x06}, true)
	if resets != 1 {
		t.Errorf("0xcf9 = 6: %d resets, want 1", resets)
	}
	b := make([]byte, 4)
	p.bus.Dispatch(PCIConfigPort, b, false)
	if got, want := binary.LittleEndian.Uint32(b), cfgAddr(0, 0, PCIClassProgIF); got != want {
		t.Errorf("latch reads %#x after 0xcf9 writes, want %#x", got, want)
	}
	// A dword latch write whose byte 1 has bit 2 set is no reset
	// control access; a word at 0xcf9 is, its first byte (QEMU 7.2
	// resets on outw 0xcf9, 0x0606; a review found it).
	p.latch(0x80000400)
	if resets != 1 {
		t.Errorf("%d resets after a latch write, want 1", resets)
	}
	p.bus.Dispatch(ResetControlPort, []byte{0x06, 0x06}, true)
	if resets != 2 {
		t.Errorf("%d resets after a word at 0xcf9, want 2", resets)
	}
	p.bus.Dispatch(ResetControlPort, []byte{0x02, 0x06}, true)
	two := []byte{0, 0}
	p.bus.Dispatch(ResetControlPort, two, false)
	if resets != 2 || two[0] != 0x02 || two[1] != 0xff {
		t.Errorf("word 0x0602 at 0xcf9: %d resets, reads % x; want 2, 02 ff", resets, two)
	}
	h.Reset()
	p.bus.Dispatch(ResetControlPort, one, false)
	if one[0] != 0x02 {
		// The host bridge's reset leaves the register to its owner.
		t.Errorf("0xcf9 reads %#x after the bridge's reset, want 0x02", one[0])
	}
}
