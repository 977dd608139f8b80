package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

var le = binary.LittleEndian

// Values the DSDT and FADT promise and devices.ACPIPM must honour.
const (
	// S5SleepType is the SLP_TYP of \_S5_: Linux powers off by writing
	// SLP_EN | S5SleepType<<2 (0x34) to the sleep control register.
	S5SleepType = 5
	// ResetValue is the FADT RESET_VALUE written to the reset register.
	ResetValue = 1
)

// Recommended placement: the RSDP where Linux scans for it (the BIOS area,
// reserved in govmm's e820 map), the other tables right after it.
const (
	DefaultRSDPAddr   = 0xe0000
	DefaultTablesAddr = 0xe0040
)

// Architectural defaults used when Config leaves an address at zero.
const (
	DefaultLAPICAddr  = 0xfee00000
	DefaultIOAPICAddr = 0xfec00000
)

// MaxCPUs is the most CPUs the MADT describes: xAPIC IDs are 8 bits, 0xff
// means "all", and the IOAPIC conventionally takes the ID after the last
// CPU (as in the MP table).
const MaxCPUs = 254

// Scan window of Linux's (and ACPICA's) search for the RSDP.
const (
	biosAreaStart = 0xe0000
	biosAreaEnd   = 0x100000
)

// Config describes the machine the tables announce.
type Config struct {
	CPUs       int    // local APICs, APIC IDs and ACPI processor UIDs 0..CPUs-1
	IOAPICID   uint8  // usually CPUs, as in the MP table
	IOAPICAddr uint32 // 0 means DefaultIOAPICAddr
	LAPICAddr  uint32 // 0 means DefaultLAPICAddr

	// The HW-reduced sleep registers (FADT SLEEP_CONTROL_REG and
	// SLEEP_STATUS_REG), 8-bit I/O ports. Both are required: Linux
	// offers S5 (power-off) only when both addresses are set.
	SleepControlPort uint16
	SleepStatusPort  uint16
	// ResetPort is the FADT RESET_REG (8-bit I/O port, written with
	// ResetValue); 0 leaves ACPI reset unsupported.
	ResetPort uint16

	// Serial lists the 16550 UARTs to describe in the DSDT. Under
	// HW-reduced ACPI Linux has no legacy PIC, so ISA IRQs are not
	// identity-mapped to GSIs: a UART found only by legacy probing gets
	// an IRQ number nothing delivers, and its output stalls. Describe
	// every UART the guest should use (COM1: port 0x3f8, GSI 4).
	Serial []SerialPort

	// PCI, when set, adds a PCI host bridge (PNP0A03, configuration
	// through ports 0xcf8/0xcfc). With ACPI enabled, x86 Linux scans PCI
	// only below host bridges the DSDT declares: without one no PCI
	// device is found.
	PCI *PCIHostBridge

	// PowerButton, when set, adds an ACPI power button the VMM can press.
	PowerButton *PowerButton
}

// PowerButton is an ACPI power button (PNP0C0C) behind a Generic Event
// Device (ACPI0013). A HW-reduced platform has no fixed-feature button and
// no SCI, so, as in QEMU's microvm and Cloud Hypervisor, the VMM pulses the
// GED's interrupt and the GED's _EVT method notifies the button with 0x80
// ("pressed"). Linux's button driver then reports KEY_POWER on an input
// device; powering off is up to the guest's user space.
type PowerButton struct {
	// GSI is the GED's interrupt: edge-triggered, active high. It must
	// not be shared with another device.
	GSI uint32
}

// SerialPort is one 16550 UART: 8 I/O ports at Port, edge-triggered,
// active-high interrupt on GSI.
type SerialPort struct {
	Port uint16
	GSI  uint32
}

// PCIHostBridge describes PCI segment 0, buses 0-255, and the windows
// Linux may place BARs in. BARs the VMM assigns outside the windows are
// reassigned by Linux.
type PCIHostBridge struct {
	// MMIO32Base and MMIO32Size give the window for 32-bit memory BARs
	// (for example from 3 GiB, the top of low RAM, up to the IOAPIC:
	// 0xc0000000, 0x3ec00000).
	MMIO32Base, MMIO32Size uint32
	// MMIO64Base and MMIO64Size give an optional window above 4 GiB.
	MMIO64Base, MMIO64Size uint64
	// IOBase and IOSize give an optional window for I/O BARs (e.g.
	// 0x1000, 0xf000); it must not cover 0xcf8-0xcff.
	IOBase uint16
	IOSize uint32
	// Routes are the _PRT entries for legacy INTx. Linux programs a GSI
	// routed this way level-triggered, active-low; KVM's in-kernel IOAPIC
	// takes KVM_IRQ_LINE level 1 as asserted whatever the polarity. Leave
	// empty when devices use MSI/MSI-X only (Linux then logs "PCI INT A:
	// no GSI" for each device, harmlessly).
	Routes []PCIRoute
}

// PCIRoute routes INTx pin Pin (0 = INTA .. 3 = INTD) of every function
// of device Device (0..31) on bus 0 to GSI.
type PCIRoute struct {
	Device uint8
	Pin    uint8
	GSI    uint32
}

// Errors returned by Write.
var (
	ErrConfig   = errors.New("invalid ACPI configuration")
	ErrLayout   = errors.New("ACPI tables do not fit")
	ErrRSDPAddr = errors.New("RSDP address outside the BIOS area Linux scans")
)

// Table sizes and offsets fixed by the ACPI 6.5 specification.
const (
	rsdpLen      = 36
	rsdpV1Len    = 20
	headerLen    = 36
	fadtLen      = 276 // revision 6: up to the hypervisor vendor identity
	madtFixedLen = headerLen + 8
	tableAlign   = 16

	fadtRevision      = 6
	fadtMinorRevision = 5 // ACPI 6.5
	madtRevision      = 5
	dsdtRevision      = 2 // 64-bit AML integers
	xsdtRevision      = 1

	oemRevision     = 1
	creatorRevision = 1
)

var (
	oemID     = [6]byte{'G', 'O', 'V', 'M', 'M', ' '}
	creatorID = [4]byte{'G', 'O', 'V', 'M'}
)

// FADT fixed feature flags (ACPI 6.5 table 5.10).
const (
	fadtWBINVD        = 1 << 0
	fadtPowerButton   = 1 << 4 // no fixed-feature power button
	fadtSleepButton   = 1 << 5 // no fixed-feature sleep button
	fadtResetRegSup   = 1 << 10
	fadtHWReducedACPI = 1 << 20
)

// FADT IA-PC boot architecture flags (ACPI 6.5 table 5.11).
const (
	iapcLegacyDevices = 1 << 0 // LPC/ISA devices the OS may probe
	iapc8042          = 1 << 1 // an i8042 at 0x60/0x64
	iapcVGANotPresent = 1 << 2
)

// Generic Address Structure fields.
const (
	gasSystemIO   = 1
	gasAccessByte = 1
	gasLen        = 12
)

// cmosCentury is the CMOS index of the century byte (FADT CENTURY), as
// devices.RTC serves it.
const cmosCentury = 0x32

// MADT structure types (ACPI 6.5 table 5.44) and flags.
const (
	madtPCATCompat     = 1 << 0 // dual 8259 present (KVM's in-kernel PIC)
	madtLAPIC          = 0
	madtIOAPIC         = 1
	madtISO            = 2
	madtLAPICNMI       = 4
	madtLAPICEnabled   = 1 << 0
	madtAllProcessors  = 0xff
	madtFlagsEdgeHigh  = 0x5 // polarity 01 active high, trigger 01 edge
	madtFlagsConforms  = 0
	madtLAPICLen       = 8
	madtIOAPICLen      = 12
	madtISOLen         = 10
	madtLAPICNMILen    = 6
	pitIRQ, pitGSI     = 0, 2
	lint1              = 1
	maxSerialPorts     = 9 // COM1..COM9
	maxPCIDevice       = 31
	maxPCIRoutes       = 255 // elements of one AML package
	pciConfigPort      = 0xcf8
	pciConfigPortCount = 8
)

// Write lays out the tables in mem, indexed by guest physical address:
// the RSDP at rsdpAddr (16-byte aligned, inside 0xe0000-0xfffff where
// Linux scans for it), then the DSDT, FADT, MADT and XSDT from tablesAddr
// upward. It returns the first address past the last table. The range
// [tablesAddr, end) must be reserved (or ACPI) memory in the guest's e820
// map; Write cannot check that.
func Write(mem []byte, rsdpAddr, tablesAddr uint64, cfg Config) (end uint64, err error) {
	if err := cfg.validate(); err != nil {
		return 0, err
	}
	if rsdpAddr < biosAreaStart || rsdpAddr > biosAreaEnd-rsdpLen || rsdpAddr%16 != 0 {
		return 0, fmt.Errorf("%w: %#x (want a 16-byte aligned address in %#x-%#x)", ErrRSDPAddr, rsdpAddr, biosAreaStart, biosAreaEnd-rsdpLen)
	}
	if rsdpAddr+rsdpLen > uint64(len(mem)) {
		return 0, fmt.Errorf("%w: RSDP at %#x past the end of %#x bytes of memory", ErrLayout, rsdpAddr, len(mem))
	}

	dsdt := cfg.dsdt()
	madt := cfg.madt()
	// Addresses first: the FADT names the DSDT, the XSDT names the rest.
	addr := alignUp(tablesAddr)
	dsdtAddr := addr
	fadtAddr := alignUp(dsdtAddr + uint64(len(dsdt)))
	madtAddr := alignUp(fadtAddr + fadtLen)
	xsdtAddr := alignUp(madtAddr + uint64(len(madt)))
	xsdt := xsdtTable(fadtAddr, madtAddr)
	end = xsdtAddr + uint64(len(xsdt))
	if tablesAddr > end || end > uint64(len(mem)) {
		return 0, fmt.Errorf("%w: %d bytes of tables at %#x need memory up to %#x, have %#x", ErrLayout, end-tablesAddr, tablesAddr, end, len(mem))
	}
	if tablesAddr < rsdpAddr+rsdpLen && rsdpAddr < end {
		return 0, fmt.Errorf("%w: tables %#x-%#x overlap the RSDP at %#x", ErrLayout, tablesAddr, end-1, rsdpAddr)
	}
	fadt := cfg.fadt(dsdtAddr)

	clear(mem[tablesAddr:end])
	for _, t := range []struct {
		addr uint64
		b    []byte
	}{{dsdtAddr, dsdt}, {fadtAddr, fadt}, {madtAddr, madt}, {xsdtAddr, xsdt}} {
		copy(mem[t.addr:], t.b)
	}
	copy(mem[rsdpAddr:], rsdp(xsdtAddr))
	return end, nil
}

func (c *Config) validate() error {
	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		return fmt.Errorf("%w: %d CPUs, want 1..%d", ErrConfig, c.CPUs, MaxCPUs)
	}
	if c.SleepControlPort == 0 || c.SleepStatusPort == 0 {
		return fmt.Errorf("%w: sleep control and status ports are required (Linux offers power-off only with both)", ErrConfig)
	}
	if len(c.Serial) > maxSerialPorts {
		return fmt.Errorf("%w: %d serial ports, at most %d", ErrConfig, len(c.Serial), maxSerialPorts)
	}
	for _, s := range c.Serial {
		if s.Port == 0 || s.Port > 0xffff-7 {
			return fmt.Errorf("%w: serial port at %#x", ErrConfig, s.Port)
		}
	}
	if b := c.PowerButton; b != nil {
		for _, s := range c.Serial {
			if s.GSI == b.GSI {
				return fmt.Errorf("%w: power button GSI %d is a serial port's", ErrConfig, b.GSI)
			}
		}
	}
	if p := c.PCI; p != nil {
		if p.MMIO32Size == 0 || uint64(p.MMIO32Base)+uint64(p.MMIO32Size) > 1<<32 {
			return fmt.Errorf("%w: PCI 32-bit MMIO window %#x+%#x", ErrConfig, p.MMIO32Base, p.MMIO32Size)
		}
		if p.MMIO64Size != 0 && (p.MMIO64Base < 1<<32 || p.MMIO64Base+p.MMIO64Size < p.MMIO64Base) {
			return fmt.Errorf("%w: PCI 64-bit MMIO window %#x+%#x", ErrConfig, p.MMIO64Base, p.MMIO64Size)
		}
		if p.IOSize != 0 {
			last := uint32(p.IOBase) + p.IOSize - 1
			if last > 0xffff || (uint32(p.IOBase) < pciConfigPort+pciConfigPortCount && pciConfigPort <= last) {
				return fmt.Errorf("%w: PCI I/O window %#x+%#x (must stay below 0x10000 and clear of 0xcf8-0xcff)", ErrConfig, p.IOBase, p.IOSize)
			}
		}
		if len(p.Routes) > maxPCIRoutes {
			return fmt.Errorf("%w: %d PCI routes, at most %d", ErrConfig, len(p.Routes), maxPCIRoutes)
		}
		for _, r := range p.Routes {
			if r.Device > maxPCIDevice || r.Pin > 3 {
				return fmt.Errorf("%w: PCI route device %d pin %d", ErrConfig, r.Device, r.Pin)
			}
		}
	}
	return nil
}

func alignUp(a uint64) uint64 { return (a + tableAlign - 1) &^ (tableAlign - 1) }

// checksum returns the byte that makes b sum to zero, given that b's
// checksum byte is still 0.
func checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}

// header returns a table of length n with its System Description Table
// header filled in, except the checksum (set by seal).
func header(sig string, n int, revision byte, tableID string) []byte {
	t := make([]byte, n)
	copy(t[0:4], sig)
	le.PutUint32(t[4:], uint32(n))
	t[8] = revision
	copy(t[10:16], oemID[:])
	copy(t[16:24], tableID)
	le.PutUint32(t[24:], oemRevision)
	copy(t[28:32], creatorID[:])
	le.PutUint32(t[32:], creatorRevision)
	return t
}

// seal sets the header checksum so the whole table sums to zero.
func seal(t []byte) []byte {
	t[9] = 0
	t[9] = checksum(t)
	return t
}

func rsdp(xsdtAddr uint64) []byte {
	r := make([]byte, rsdpLen)
	copy(r, "RSD PTR ")
	copy(r[9:15], oemID[:])
	r[15] = 2 // revision 2: XSDT present (ACPI 2.0+)
	// RsdtAddress (r[16:20]) stays 0: there is no RSDT, and ACPICA uses the
	// XSDT whenever the revision is above 1 and XsdtAddress is set.
	le.PutUint32(r[20:], rsdpLen)
	le.PutUint64(r[24:], xsdtAddr)
	r[8] = checksum(r[:rsdpV1Len])
	r[32] = checksum(r)
	return r
}

func xsdtTable(entries ...uint64) []byte {
	t := header("XSDT", headerLen+8*len(entries), xsdtRevision, "GVMMXSDT")
	for i, e := range entries {
		le.PutUint64(t[headerLen+8*i:], e)
	}
	return seal(t)
}

// gas writes an 8-bit System I/O Generic Address Structure for port at b.
func gas(b []byte, port uint16) {
	b[0] = gasSystemIO
	b[1] = 8 // bit width
	b[2] = 0 // bit offset
	b[3] = gasAccessByte
	le.PutUint64(b[4:], uint64(port))
}

func (c *Config) fadt(dsdtAddr uint64) []byte {
	t := header("FACP", fadtLen, fadtRevision, "GVMMFACP")
	// FIRMWARE_CTRL / X_FIRMWARE_CTRL stay 0: a HW-reduced platform has no
	// FACS (ACPICA does not look for one).
	if dsdtAddr < 1<<32 {
		le.PutUint32(t[40:], uint32(dsdtAddr)) // DSDT, for 32-bit parsers
	}
	// SCI_INT, SMI_CMD and the PM1/PM2/PM timer/GPE blocks stay 0: none
	// exist on a HW-reduced platform. No C2/C3 states.
	le.PutUint16(t[96:], 0x0fff) // P_LVL2_LAT > 100: C2 unsupported
	le.PutUint16(t[98:], 0x0fff) // P_LVL3_LAT > 1000: C3 unsupported
	t[108] = cmosCentury
	// IAPC_BOOT_ARCH: Linux keeps the RTC and i8042 (no NO_CMOS_RTC, 8042
	// set) and stops probing VGA.
	le.PutUint16(t[109:], iapcLegacyDevices|iapc8042|iapcVGANotPresent)
	flags := uint32(fadtWBINVD | fadtPowerButton | fadtSleepButton | fadtHWReducedACPI)
	if c.ResetPort != 0 {
		flags |= fadtResetRegSup
		gas(t[116:], c.ResetPort)
		t[128] = ResetValue
	}
	le.PutUint32(t[112:], flags)
	t[131] = fadtMinorRevision
	le.PutUint64(t[140:], dsdtAddr) // X_DSDT
	gas(t[244:], c.SleepControlPort)
	gas(t[256:], c.SleepStatusPort)
	copy(t[268:276], "GOVMMKVM") // hypervisor vendor identity
	return seal(t)
}

func (c *Config) madt() []byte {
	n := madtFixedLen + c.CPUs*madtLAPICLen + madtIOAPICLen + madtISOLen + madtLAPICNMILen
	t := header("APIC", n, madtRevision, "GVMMAPIC")
	lapic, ioapic := c.LAPICAddr, c.IOAPICAddr
	if lapic == 0 {
		lapic = DefaultLAPICAddr
	}
	if ioapic == 0 {
		ioapic = DefaultIOAPICAddr
	}
	le.PutUint32(t[36:], lapic)
	le.PutUint32(t[40:], madtPCATCompat)
	p := madtFixedLen
	for i := 0; i < c.CPUs; i++ {
		e := t[p : p+madtLAPICLen]
		e[0], e[1], e[2], e[3] = madtLAPIC, madtLAPICLen, byte(i), byte(i) // UID, APIC ID
		le.PutUint32(e[4:], madtLAPICEnabled)
		p += madtLAPICLen
	}
	e := t[p : p+madtIOAPICLen]
	e[0], e[1], e[2] = madtIOAPIC, madtIOAPICLen, c.IOAPICID
	le.PutUint32(e[4:], ioapic)
	le.PutUint32(e[8:], 0) // GSI base
	p += madtIOAPICLen

	// The PIT's IRQ0 arrives on IOAPIC pin 2, as on every PC since the
	// IOAPIC's pin 0 went to the 8259 cascade (and as KVM's in-kernel
	// routing has it). Explicit edge/high flags matter here: with a
	// HW-reduced FADT SCI_INT is 0, so Linux takes this IRQ0 override for
	// the SCI's, where "conforming" would default to level/low.
	e = t[p : p+madtISOLen]
	e[0], e[1], e[2], e[3] = madtISO, madtISOLen, 0, pitIRQ // ISA bus
	le.PutUint32(e[4:], pitGSI)
	le.PutUint16(e[8:], madtFlagsEdgeHigh)
	p += madtISOLen

	e = t[p : p+madtLAPICNMILen]
	e[0], e[1], e[2] = madtLAPICNMI, madtLAPICNMILen, madtAllProcessors
	le.PutUint16(e[3:], madtFlagsConforms)
	e[5] = lint1
	return seal(t)
}

// dsdt returns the DSDT. For the default COM1 and no PCI it is, as ASL:
//
//	DefinitionBlock ("", "DSDT", 2, "GOVMM ", "GVMMDSDT", 1) {
//	    Scope (\_SB) {
//	        Device (COM1) {
//	            Name (_HID, EisaId ("PNP0501"))
//	            Name (_UID, Zero)
//	            Name (_CRS, ResourceTemplate () {
//	                IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08)
//	                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 4 }
//	            })
//	        }
//	    }
//	    Name (\_S5, Package () { 5, 0 })
//	}
//
// and \_S5_ alone encodes as
//
//	08              NameOp
//	5C 5F 53 35 5F  \_S5_ (RootChar, NameSeg)
//	12 05           PackageOp, PkgLength 5 (itself, count and elements)
//	02              NumElements
//	0A 05           BytePrefix 5: SLP_TYPa = S5SleepType
//	00              ZeroOp: SLP_TYPb (unused: there is no PM1b)
func (c *Config) dsdt() []byte {
	var sb [][]byte
	for i, s := range c.Serial {
		sb = append(sb, amlDevice(fmt.Sprintf("COM%d", i+1),
			amlName("_HID", amlDWord(amlEISAID("PNP0501"))),
			amlName("_UID", amlInteger(uint64(i))),
			amlName("_CRS", amlResourceTemplate(
				resIO(s.Port, s.Port, 1, 8),
				resInterrupt(s.GSI, false, false),
			)),
		))
	}
	if c.PCI != nil {
		sb = append(sb, c.PCI.aml())
	}
	if c.PowerButton != nil {
		sb = append(sb, c.PowerButton.aml()...)
	}
	var body []byte
	if len(sb) > 0 {
		body = amlScope(`\_SB_`, sb...)
	}
	body = append(body, amlName(`\_S5_`, amlPackage(amlInteger(S5SleepType), amlInteger(0)))...)
	t := header("DSDT", headerLen+len(body), dsdtRevision, "GVMMDSDT")
	copy(t[headerLen:], body)
	return seal(t)
}

// aml returns, as ASL:
//
//	Device (PWRB) {
//	    Name (_HID, EisaId ("PNP0C0C"))
//	    Name (_UID, Zero)
//	}
//	Device (GED) {
//	    Name (_HID, "ACPI0013")
//	    Name (_UID, Zero)
//	    Name (_CRS, ResourceTemplate () {
//	        Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { GSI }
//	    })
//	    Method (_EVT, 1, NotSerialized) { Notify (\_SB.PWRB, 0x80) }
//	}
//
// The button is the GED's only event, so _EVT needs no selector register.
func (b *PowerButton) aml() [][]byte {
	return [][]byte{
		amlDevice("PWRB",
			amlName("_HID", amlDWord(amlEISAID("PNP0C0C"))),
			amlName("_UID", amlInteger(0)),
		),
		amlDevice("GED",
			amlName("_HID", amlString("ACPI0013")),
			amlName("_UID", amlInteger(0)),
			amlName("_CRS", amlResourceTemplate(resInterrupt(b.GSI, false, false))),
			amlMethod("_EVT", 1, amlNotify(`\_SB_.PWRB`, 0x80)),
		),
	}
}

// aml returns Device (PCI0): a PCI host bridge for segment 0, with the
// configuration ports it consumes, the windows it forwards and its INTx
// routing table.
func (p *PCIHostBridge) aml() []byte {
	crs := [][]byte{
		resWordSpace(resTypeBus, 0, 0x00, 0xff),
		resIO(pciConfigPort, pciConfigPort, 1, pciConfigPortCount),
	}
	if p.IOSize != 0 {
		crs = append(crs, resWordSpace(resTypeIO, resIOEntireRange, p.IOBase, uint16(uint32(p.IOBase)+p.IOSize-1)))
	}
	crs = append(crs, resDWordMemory(p.MMIO32Base, uint32(uint64(p.MMIO32Base)+uint64(p.MMIO32Size)-1)))
	if p.MMIO64Size != 0 {
		crs = append(crs, resQWordMemory(p.MMIO64Base, p.MMIO64Base+p.MMIO64Size-1))
	}
	body := [][]byte{
		amlName("_HID", amlDWord(amlEISAID("PNP0A03"))),
		amlName("_UID", amlInteger(0)),
		amlName("_SEG", amlInteger(0)),
		amlName("_BBN", amlInteger(0)),
		amlName("_CRS", amlResourceTemplate(crs...)),
	}
	if len(p.Routes) > 0 {
		prt := make([][]byte, len(p.Routes))
		for i, r := range p.Routes {
			// Package { Address (device, any function), Pin, Source (none:
			// the fourth element is a GSI), SourceIndex }
			prt[i] = amlPackage(amlInteger(uint64(r.Device)<<16|0xffff), amlInteger(uint64(r.Pin)), amlInteger(0), amlInteger(uint64(r.GSI)))
		}
		body = append(body, amlName("_PRT", amlPackage(prt...)))
	}
	return amlDevice("PCI0", body...)
}
