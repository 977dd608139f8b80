package devices

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/govmm/govmm/guestlog"
)

// PCI configuration mechanism #1: a 32-bit address latch at 0xcf8 and a
// data window at 0xcfc-0xcff. Register the host bridge there, size 8.
const (
	PCIConfigPort     = 0xcf8
	PCIConfigPortSize = 8
)

// Offsets of the type 0 configuration header (PCI Local Bus 3.0, 6.1).
const (
	PCIVendorID        = 0x00
	PCIDeviceID        = 0x02
	PCICommand         = 0x04
	PCIStatus          = 0x06
	PCIRevision        = 0x08
	PCIClassProgIF     = 0x09
	PCICacheLineSize   = 0x0c
	PCILatencyTimer    = 0x0d
	PCIHeaderType      = 0x0e
	PCIBAR0            = 0x10
	PCISubsystemVendor = 0x2c
	PCISubsystemID     = 0x2e
	PCIROMAddress      = 0x30
	PCICapabilityList  = 0x34
	PCIInterruptLine   = 0x3c
	PCIInterruptPin    = 0x3d

	// PCIConfigSize is the conventional configuration space, all that
	// mechanism #1 reaches.
	PCIConfigSize = 256
	// PCINumBARs is the number of BAR registers of a type 0 header.
	PCINumBARs = 6
	// pciHeaderEnd is where capabilities may start.
	pciHeaderEnd = 0x40
)

// Command and status register bits.
const (
	PCICommandIO          = 1 << 0
	PCICommandMemory      = 1 << 1
	PCICommandMaster      = 1 << 2
	PCICommandParity      = 1 << 6
	PCICommandSERR        = 1 << 8
	PCICommandINTxDisable = 1 << 10
	PCIStatusCapList      = 1 << 4
)

// Capability IDs used by govmm's functions.
const (
	PCICapVendor = 0x09
	PCICapMSIX   = 0x11
)

// Identity of the host bridge at 00:00.0: the ID Firecracker and Cloud
// Hypervisor use for their virtual root. Linux's pci_sanity_check accepts
// mechanism #1 once it finds a host bridge class on bus 0.
const (
	PCIHostBridgeVendor = 0x8086
	PCIHostBridgeDevice = 0x0d57
	PCIClassHostBridge  = 0x060000
)

// PCIMaxSlots is the number of device numbers on a bus.
const PCIMaxSlots = 32

// pciEnable is bit 31 of the 0xcf8 latch: without it the data window is
// not a configuration access.
const pciEnable = 1 << 31

// BARKind is what a base address register decodes.
type BARKind int

const (
	BARNone BARKind = iota
	BARMem32
	BARMem64 // takes this BAR and the next one (the upper 32 bits)
	BARIO
)

// BARRegion is one device window inside a BAR. The host bridge registers
// each region as its own bus range, so exits to, say, a virtio notify area
// get their own row in the exit table.
type BARRegion struct {
	Name         string
	Offset, Size uint64
	Dev          Device
}

// BAR describes one base address register of a function.
type BAR struct {
	Kind         BARKind
	Size         uint64 // a power of two: at least 16 for memory, 4..256 for I/O
	Prefetchable bool
	// Regions are put on the MMIO (or I/O) bus at the address the guest
	// programs, while the command register enables decoding.
	Regions []BARRegion
	// Moved, if set, is told every change of where the BAR decodes, after
	// the regions moved (base is meaningless when mapped is false). It is
	// called with the function's config lock held: it must not call back
	// into the PCIConfig.
	Moved func(base uint64, mapped bool)
}

// PCIHeader identifies a function.
type PCIHeader struct {
	VendorID, DeviceID uint16
	Revision           uint8
	// Class is class code, subclass and programming interface: 0xCCSSPP.
	Class                          uint32
	SubsystemVendorID, SubsystemID uint16
}

// PCIFunction is what the host bridge reaches in a slot. ReadConfig and
// WriteConfig get offset+len(data) <= PCIConfigSize, len 1, 2 or 4.
type PCIFunction interface {
	ReadConfig(offset uint64, data []byte)
	WriteConfig(offset uint64, data []byte)
	// ConfigSpace is the header that carries the function's BARs;
	// AddDevice attaches it to the buses the BARs decode on.
	ConfigSpace() *PCIConfig
}

// barState is one BAR register's emulation; mu of the PCIConfig guards it.
type barState struct {
	cfg    BAR
	upper  bool // the upper half of the 64-bit BAR before it
	mapped bool
	base   uint64
	// ranges are the regions' bus ranges, kept after an unmap so a
	// remap re-registers them with their IDs (bounded stats caches).
	ranges []*Range
	// onBus says whether ranges are currently registered.
	onBus bool
	// blocked says the BAR decodes but another device's range is in
	// its way: it is placed when that range goes (placeBlocked).
	blocked bool
}

// PCIConfig emulates a type 0 configuration header: read-only identity,
// a command register that gates BAR decoding, BARs with sizing semantics
// (write all ones, read back the size mask), and a capability list.
// Functions embed or wrap it.
type PCIConfig struct {
	mu    sync.Mutex
	b     [PCIConfigSize]byte
	wmask [PCIConfigSize]byte // bits the guest may change
	bars  [PCINumBARs]barState
	// lastCap is the offset of the last capability (0: none), capEnd
	// the first free byte after it.
	lastCap, capEnd int
	// mmio and io are the buses BAR regions go on; nil until attached.
	mmio, io *Bus
	// log gets what the guest does wrong with the BARs (placing one
	// over another device), rate limited; mu guards the pointer.
	log *guestlog.Logger
	// atAttach is the configuration space as it was when the function
	// was attached, with the BAR addresses "firmware" gave it: a reset
	// returns to it.
	atAttach [PCIConfigSize]byte
	// hasBlocked says some BAR is blocked, for placeBlocked to read
	// without the lock.
	hasBlocked atomic.Bool
}

// NewPCIConfig returns a header with identity h, no BARs and no
// capabilities, decoding disabled.
func NewPCIConfig(h PCIHeader) *PCIConfig {
	c := &PCIConfig{capEnd: pciHeaderEnd, log: guestlog.New("pci")}
	le := binary.LittleEndian
	le.PutUint16(c.b[PCIVendorID:], h.VendorID)
	le.PutUint16(c.b[PCIDeviceID:], h.DeviceID)
	c.b[PCIRevision] = h.Revision
	c.b[PCIClassProgIF] = byte(h.Class)
	c.b[PCIClassProgIF+1] = byte(h.Class >> 8)
	c.b[PCIClassProgIF+2] = byte(h.Class >> 16)
	le.PutUint16(c.b[PCISubsystemVendor:], h.SubsystemVendorID)
	le.PutUint16(c.b[PCISubsystemID:], h.SubsystemID)
	// What Linux and firmware write: decoding and bus mastering, INTx
	// disable, cache line size, latency timer and the interrupt line
	// (a scratch register: the pin stays 0, there is no INTx).
	le.PutUint16(c.wmask[PCICommand:], PCICommandIO|PCICommandMemory|PCICommandMaster|
		PCICommandParity|PCICommandSERR|PCICommandINTxDisable)
	c.wmask[PCICacheLineSize] = 0xff
	c.wmask[PCILatencyTimer] = 0xff
	c.wmask[PCIInterruptLine] = 0xff
	return c
}

// ConfigSpace makes a bare PCIConfig a PCIFunction (the host bridge's).
func (c *PCIConfig) ConfigSpace() *PCIConfig { return c }

// Errors from AddBAR and AddCapability.
var (
	ErrBadBAR      = errors.New("invalid BAR")
	ErrConfigSpace = errors.New("no room left in configuration space")
)

// AddBAR declares BAR index. Call it before the function is attached.
func (c *PCIConfig) AddBAR(index int, bar BAR) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if index < 0 || index >= PCINumBARs {
		return fmt.Errorf("%w: index %d", ErrBadBAR, index)
	}
	if bar.Size == 0 || bar.Size&(bar.Size-1) != 0 {
		return fmt.Errorf("%w %d: size %#x is not a power of two", ErrBadBAR, index, bar.Size)
	}
	switch bar.Kind {
	case BARMem32:
		if bar.Size < 16 || bar.Size > 1<<31 {
			return fmt.Errorf("%w %d: 32-bit memory BAR of %#x bytes", ErrBadBAR, index, bar.Size)
		}
	case BARMem64:
		if bar.Size < 16 || bar.Size > 1<<63 || index == PCINumBARs-1 {
			return fmt.Errorf("%w %d: 64-bit memory BAR of %#x bytes (or no room for its upper half)", ErrBadBAR, index, bar.Size)
		}
	case BARIO:
		if bar.Size < 4 || bar.Size > 256 || bar.Prefetchable {
			return fmt.Errorf("%w %d: I/O BAR of %#x bytes", ErrBadBAR, index, bar.Size)
		}
	default:
		return fmt.Errorf("%w %d: kind %d", ErrBadBAR, index, bar.Kind)
	}
	for _, r := range bar.Regions {
		if r.Size == 0 || r.Offset >= bar.Size || r.Size > bar.Size-r.Offset || r.Dev == nil {
			return fmt.Errorf("%w %d: region %s at %#x+%#x outside %#x bytes", ErrBadBAR, index, r.Name, r.Offset, r.Size, bar.Size)
		}
	}
	if c.bars[index].cfg.Kind != BARNone || c.bars[index].upper ||
		(bar.Kind == BARMem64 && (c.bars[index+1].cfg.Kind != BARNone || c.bars[index+1].upper)) {
		return fmt.Errorf("%w %d: already in use", ErrBadBAR, index)
	}
	c.bars[index].cfg = bar
	if bar.Kind == BARMem64 {
		c.bars[index+1].upper = true
	}
	c.putBAR(index, 0)
	return nil
}

// SetBARAddress places BAR index at addr, as firmware would before the
// OS boots; the BAR decodes once the guest enables the command bit.
func (c *PCIConfig) SetBARAddress(index int, addr uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if index < 0 || index >= PCINumBARs || c.bars[index].cfg.Kind == BARNone {
		return fmt.Errorf("%w: no BAR %d", ErrBadBAR, index)
	}
	bar := c.bars[index].cfg
	if addr&(bar.Size-1) != 0 || (bar.Kind != BARMem64 && addr > math.MaxUint32) {
		return fmt.Errorf("%w %d: address %#x does not fit a BAR of %#x bytes", ErrBadBAR, index, addr, bar.Size)
	}
	c.putBAR(index, addr)
	c.updateMappings()
	return nil
}

// BARAddress returns where BAR index decodes now, if it does.
func (c *PCIConfig) BARAddress(index int) (addr uint64, mapped bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if index < 0 || index >= PCINumBARs {
		return 0, false
	}
	return c.bars[index].base, c.bars[index].mapped
}

// BARInfo describes a declared BAR as a monitor reports it (QMP
// query-pci): its place, kind and size, and where it decodes now.
type BARInfo struct {
	Index        int
	Kind         BARKind
	Size         uint64
	Prefetchable bool
	Base         uint64 // meaningful only while Mapped
	Mapped       bool   // decoding is enabled and the BAR has an address
}

// BARs lists the declared BARs in index order (the upper half of a 64-bit
// BAR is part of the one before it).
func (c *PCIConfig) BARs() []BARInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []BARInfo
	for i, st := range c.bars {
		if st.cfg.Kind == BARNone {
			continue
		}
		out = append(out, BARInfo{
			Index: i, Kind: st.cfg.Kind, Size: st.cfg.Size, Prefetchable: st.cfg.Prefetchable,
			Base: st.base, Mapped: st.mapped,
		})
	}
	return out
}

// putBAR writes a BAR register (both halves of a 64-bit one) with addr
// and its type bits; mu must be held.
func (c *PCIConfig) putBAR(index int, addr uint64) {
	le := binary.LittleEndian
	le.PutUint32(c.b[PCIBAR0+4*index:], c.barValue(index, uint32(addr)))
	if c.bars[index].cfg.Kind == BARMem64 {
		le.PutUint32(c.b[PCIBAR0+4*(index+1):], c.barValue(index+1, uint32(addr>>32)))
	}
}

// barValue is what BAR register index holds after v is written to it: the
// address bits the size allows, and the read-only type bits. Writing all
// ones therefore reads back the size mask. mu must be held.
func (c *PCIConfig) barValue(index int, v uint32) uint32 {
	st := &c.bars[index]
	if st.upper {
		size := c.bars[index-1].cfg.Size
		return v &^ uint32((size-1)>>32)
	}
	bar := st.cfg
	switch bar.Kind {
	case BARMem32, BARMem64:
		v = v &^ uint32(bar.Size-1) &^ 0xf
		if bar.Kind == BARMem64 {
			v |= 0x4
		}
		if bar.Prefetchable {
			v |= 0x8
		}
		return v
	case BARIO:
		return v&^uint32(bar.Size-1)&^0x3 | 0x1
	}
	return 0 // unimplemented BARs are hardwired to zero
}

// AddCapability appends a capability: id, then body (the bytes after the
// ID and next pointer). wmask, when non-nil, has body's length and marks
// the bits the guest may write. It returns the capability's offset.
func (c *PCIConfig) AddCapability(id uint8, body, wmask []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if wmask != nil && len(wmask) != len(body) {
		return 0, fmt.Errorf("capability %#x: write mask of %d bytes for a body of %d", id, len(wmask), len(body))
	}
	off := (c.capEnd + 3) &^ 3 // capability pointers are dword aligned
	if off+2+len(body) > PCIConfigSize {
		return 0, fmt.Errorf("capability %#x of %d bytes: %w", id, 2+len(body), ErrConfigSpace)
	}
	c.b[off] = id
	c.b[off+1] = 0
	copy(c.b[off+2:], body)
	copy(c.wmask[off+2:], wmask)
	if c.lastCap == 0 {
		c.b[PCICapabilityList] = byte(off)
	} else {
		c.b[c.lastCap+1] = byte(off)
	}
	c.b[PCIStatus] |= PCIStatusCapList
	c.lastCap, c.capEnd = off, off+2+len(body)
	return off, nil
}

// ReadConfig reads configuration space; bytes past its end read as 0xff.
func (c *PCIConfig) ReadConfig(offset uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		if o := offset + uint64(i); o < PCIConfigSize {
			data[i] = c.b[o]
		} else {
			data[i] = 0xff
		}
	}
}

// WriteConfig writes configuration space: writable bits change, BAR
// writes keep only what the BAR's size allows, and a change of a BAR or
// the command register moves the BAR's regions on the bus.
func (c *PCIConfig) WriteConfig(offset uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	barTouched := [PCINumBARs]bool{}
	remap := false
	for i, v := range data {
		o := offset + uint64(i)
		if o >= PCIConfigSize {
			break
		}
		if o >= PCIBAR0 && o < PCIBAR0+4*PCINumBARs {
			c.b[o] = v // merged now, masked below
			barTouched[(o-PCIBAR0)/4] = true
			continue
		}
		if o == PCICommand || o == PCICommand+1 {
			remap = true
		}
		c.b[o] = c.b[o]&^c.wmask[o] | v&c.wmask[o]
	}
	le := binary.LittleEndian
	for i, touched := range barTouched {
		if touched {
			off := PCIBAR0 + 4*i
			le.PutUint32(c.b[off:], c.barValue(i, le.Uint32(c.b[off:])))
			remap = true
		}
	}
	if remap {
		c.updateMappings()
	}
}

// Reset returns configuration space to what it was when the function was
// attached (machine reset): decoding off, BARs back at their first
// addresses, capabilities as first set. BARs move off the bus as the
// command register clears, with their Moved callbacks. Functions that
// mirror capability bits in state of their own reset that themselves.
func (c *PCIConfig) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.b = c.atAttach
	c.updateMappings()
}

// Bytes returns a copy of n bytes of configuration space at offset, for
// functions that keep state in their capabilities.
func (c *PCIConfig) Bytes(offset, n int) []byte {
	out := make([]byte, n)
	c.ReadConfig(uint64(offset), out)
	return out
}

// decode returns where BAR index decodes under the current command
// register and BAR value; mu must be held.
func (c *PCIConfig) decode(index int) (uint64, bool) {
	bar := c.bars[index].cfg
	le := binary.LittleEndian
	cmd := le.Uint16(c.b[PCICommand:])
	lo := le.Uint32(c.b[PCIBAR0+4*index:])
	var base, limit uint64
	switch bar.Kind {
	case BARMem32:
		if cmd&PCICommandMemory == 0 {
			return 0, false
		}
		base, limit = uint64(lo&^0xf), math.MaxUint32
	case BARMem64:
		if cmd&PCICommandMemory == 0 {
			return 0, false
		}
		base = uint64(lo&^0xf) | uint64(le.Uint32(c.b[PCIBAR0+4*(index+1):]))<<32
		limit = math.MaxUint64
	case BARIO:
		if cmd&PCICommandIO == 0 {
			return 0, false
		}
		base, limit = uint64(lo&^0x3), 0xffff
	default:
		return 0, false
	}
	// Address 0 is "unassigned", and a BAR whose last byte would be the
	// top of its address space still holds the all-ones sizing pattern
	// (QEMU's pci_bar_address rule): neither decodes.
	if base == 0 || base > limit || bar.Size-1 >= limit-base {
		return 0, false
	}
	return base, true
}

// updateMappings moves every BAR whose decoding changed; mu must be held.
func (c *PCIConfig) updateMappings() {
	for i := range c.bars {
		st := &c.bars[i]
		if st.cfg.Kind == BARNone {
			continue
		}
		base, ok := c.decode(i)
		if ok == st.mapped && base == st.base {
			continue
		}
		c.unmapBAR(st)
		st.blocked = false
		if ok {
			if err := c.mapBAR(st, base); err != nil {
				c.log.Printf("bar_overlap", "BAR at %#x not decoded: %v", base, err)
				ok, st.blocked = false, true
			}
		}
		c.setMapped(st, base, ok)
	}
	c.noteBlocked()
}

// noteBlocked sets hasBlocked from the BARs; mu must be held.
func (c *PCIConfig) noteBlocked() {
	blocked := false
	for i := range c.bars {
		blocked = blocked || c.bars[i].blocked
	}
	c.hasBlocked.Store(blocked)
}

// setMapped records where the BAR decodes and tells its device; mu must
// be held.
func (c *PCIConfig) setMapped(st *barState, base uint64, ok bool) {
	st.base, st.mapped = base, ok
	if !ok {
		st.base = 0
	}
	if st.cfg.Moved != nil {
		st.cfg.Moved(st.base, st.mapped)
	}
}

// placeBlocked maps the BARs that another device's range kept off the
// bus, where that range has gone since. A BAR that once met another
// stayed dark until its own function's configuration was written again
// (found by an audit), while QEMU lets overlapping BARs coexist and a
// BAR shows again as soon as the other moves away.
func (c *PCIConfig) placeBlocked() {
	if !c.hasBlocked.Load() {
		// Most functions have none, and a function's lock can be held
		// long by its own device (a BAR move that kicks its queues).
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.noteBlocked()
	for i := range c.bars {
		st := &c.bars[i]
		if !st.blocked {
			continue
		}
		base, ok := c.decode(i)
		if !ok {
			st.blocked = false
			continue
		}
		if c.mapBAR(st, base) == nil {
			st.blocked = false
			c.setMapped(st, base, true)
		}
	}
}

func (c *PCIConfig) bus(st *barState) *Bus {
	if st.cfg.Kind == BARIO {
		return c.io
	}
	return c.mmio
}

func (c *PCIConfig) unmapBAR(st *barState) {
	if !st.onBus {
		return
	}
	b := c.bus(st)
	for _, r := range st.ranges {
		if err := b.Unregister(r); err != nil {
			c.log.Printf("bar_unmap", "%v", err)
		}
	}
	st.onBus = false
}

// mapBAR puts the BAR's regions on its bus at base. If one does not fit
// (the guest placed the BAR over another device) none is left registered,
// and the error says why. Before the function is attached there is no bus
// and the BAR "decodes" with nothing behind it.
func (c *PCIConfig) mapBAR(st *barState, base uint64) error {
	b := c.bus(st)
	if b == nil || len(st.cfg.Regions) == 0 {
		return nil
	}
	placed := make([]*Range, 0, len(st.cfg.Regions))
	fail := func(err error) error {
		for _, r := range placed {
			b.Unregister(r)
		}
		return err
	}
	for i, reg := range st.cfg.Regions {
		var r *Range
		var err error
		if i < len(st.ranges) {
			r, err = b.Reregister(st.ranges[i], base+reg.Offset)
		} else {
			r, err = b.Register(reg.Name, base+reg.Offset, reg.Size, reg.Dev)
		}
		if err != nil {
			return fail(err)
		}
		placed = append(placed, r)
	}
	st.ranges = placed
	st.onBus = true
	return nil
}

// SetGuestLog makes the function log BAR trouble to l (its device's,
// which the VM counts) instead of a logger of its own.
func (c *PCIConfig) SetGuestLog(l *guestlog.Logger) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = l
}

// attach gives the function the buses its BARs decode on.
func (c *PCIConfig) attach(mmio, io *Bus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mmio, c.io = mmio, io
	c.atAttach = c.b
	// Force a fresh mapping in case decoding was enabled before.
	for i := range c.bars {
		c.bars[i].mapped = false
	}
	c.updateMappings()
}

// PCIHostBridge is PCI segment 0, bus 0, behind configuration mechanism
// #1; the bridge itself is the function at 00:00.0. Register it on the
// I/O bus at PCIConfigPort, size PCIConfigPortSize.
type PCIHostBridge struct {
	mmio, io *Bus
	// address is the 0xcf8 latch. Linux serializes configuration
	// accesses (pci_config_lock), so one latch for all vCPUs is what
	// hardware has too.
	address atomic.Uint32
	// slots hold the function 0 of each device number; slots are filled
	// by AddDevice and never emptied, so readers need no lock.
	slots [PCIMaxSlots]atomic.Pointer[pciSlot]
	addMu sync.Mutex
	// rcr gets byte accesses to 0xcf9 (PIIX3's reset control register,
	// which sits inside these ports); nil: they find nothing.
	rcr *ResetControl
}

type pciSlot struct{ f PCIFunction }

// NewPCIHostBridge returns a bus with only the host bridge function; BARs
// of functions added later decode on mmio and io.
func NewPCIHostBridge(mmio, io *Bus) *PCIHostBridge {
	h := &PCIHostBridge{mmio: mmio, io: io}
	host := NewPCIConfig(PCIHeader{
		VendorID: PCIHostBridgeVendor, DeviceID: PCIHostBridgeDevice,
		Class: PCIClassHostBridge,
	})
	host.attach(mmio, io) // no BARs: this records its reset state
	h.slots[0].Store(&pciSlot{host})
	return h
}

// Reset clears the address latch and resets every function's
// configuration space (machine reset).
func (h *PCIHostBridge) Reset() {
	h.address.Store(0)
	for slot := range h.slots {
		if s := h.slots[slot].Load(); s != nil {
			s.f.ConfigSpace().Reset()
		}
	}
}

// SetResetControl hands byte accesses to 0xcf9 to r, as PIIX3 decodes
// them; other widths at 0xcf8 stay the address latch. Call it before the
// bridge is registered on a bus.
func (h *PCIHostBridge) SetResetControl(r *ResetControl) { h.rcr = r }

// rcrOffset is 0xcf9 within the bridge's ports.
const rcrOffset = ResetControlPort - PCIConfigPort

// ErrNoSlot is returned by AddDevice when all 32 device numbers are taken.
var ErrNoSlot = errors.New("no free PCI slot")

// AddDevice puts f in the lowest free slot of bus 0 as function 0 and
// attaches its BARs to the buses.
func (h *PCIHostBridge) AddDevice(f PCIFunction) (int, error) {
	if f == nil || f.ConfigSpace() == nil {
		return 0, fmt.Errorf("pci: add device: %w", ErrNilDevice)
	}
	h.addMu.Lock()
	defer h.addMu.Unlock()
	for slot := range h.slots {
		if h.slots[slot].Load() == nil {
			f.ConfigSpace().attach(h.mmio, h.io)
			h.slots[slot].Store(&pciSlot{f})
			return slot, nil
		}
	}
	return 0, ErrNoSlot
}

// Function returns the function in slot, or nil.
func (h *PCIHostBridge) Function(slot int) PCIFunction {
	if slot < 0 || slot >= PCIMaxSlots {
		return nil
	}
	if s := h.slots[slot].Load(); s != nil {
		return s.f
	}
	return nil
}

// target decodes the latch into a function and register offset, or nil
// when the access reaches no function (disabled, another bus, a function
// number other than 0, an empty slot): such reads return all ones, which
// the OS reads as vendor 0xffff, "nothing here".
func (h *PCIHostBridge) target() (PCIFunction, uint64) {
	a := h.address.Load()
	bus, dev, fn := (a>>16)&0xff, (a>>11)&0x1f, (a>>8)&0x7
	if a&pciEnable == 0 || bus != 0 || fn != 0 {
		return nil, 0
	}
	return h.Function(int(dev)), uint64(a & 0xfc)
}

// Read serves the ports: offset 0 is the latch (dword accesses only; a
// narrower access there belongs to other ISA devices on real hardware and
// finds nothing, but for 0xcf9: the reset control register, which an
// access from there of up to 3 bytes reaches with its first byte, as
// QEMU splits it),
// 4..7 the data window at byte (latch & 0xfc) + offset-4.
func (h *PCIHostBridge) Read(offset uint64, data []byte) {
	fill(data, 0xff)
	switch {
	case offset == rcrOffset && len(data) <= 3:
		if h.rcr != nil {
			h.rcr.Read(0, data[:1])
		}
	case offset == 0 && len(data) == 4:
		binary.LittleEndian.PutUint32(data, h.address.Load())
	case offset >= 4 && offset-4+uint64(len(data)) <= 4:
		if f, reg := h.target(); f != nil {
			f.ReadConfig(reg+offset-4, data)
		}
	}
}

// Write sets the latch or writes configuration space; see Read.
func (h *PCIHostBridge) Write(offset uint64, data []byte) {
	switch {
	case offset == rcrOffset && len(data) <= 3:
		if h.rcr != nil {
			h.rcr.Write(0, data[:1])
		}
	case offset == 0 && len(data) == 4:
		// The two low bits are hardwired to 0: registers are dwords.
		h.address.Store(binary.LittleEndian.Uint32(data) &^ 3)
	case offset >= 4 && offset-4+uint64(len(data)) <= 4:
		if f, reg := h.target(); f != nil {
			f.WriteConfig(reg+offset-4, data)
			h.placeBlocked()
		}
	}
}

// placeBlocked gives every function's blocked BARs another try, after a
// configuration write that may have moved a BAR out of their way. One
// function's lock at a time: a write holds only its own function's.
func (h *PCIHostBridge) placeBlocked() {
	for slot := range h.slots {
		if s := h.slots[slot].Load(); s != nil {
			s.f.ConfigSpace().placeBlocked()
		}
	}
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}
