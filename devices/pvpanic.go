package devices

// QEMU's pvpanic PCI function (hw/misc/pvpanic-pci.c): Linux's
// pvpanic-pci driver reads from its BAR which events the host handles and,
// from its panic notifier, writes the event that happened.
const (
	PVPanicVendorID = 0x1b36 // Red Hat, QEMU's own devices
	PVPanicDeviceID = 0x0011
	// Events, one bit each (include/uapi/misc/pvpanic.h).
	PVPanicPanicked    = 1 << 0 // the guest kernel panicked
	PVPanicCrashLoaded = 1 << 1 // it panicked and runs its crash kernel
	pvpanicEvents      = PVPanicPanicked | PVPanicCrashLoaded
	// PVPanicBARSize is the smallest memory BAR; QEMU's region is 2
	// bytes, of which only the first means anything.
	PVPanicBARSize = 16
)

// PVPanic is the pvpanic PCI function. Event is called, on the vCPU
// thread that wrote it, with each non-zero set of known events the guest
// reports; it must not block.
type PVPanic struct {
	*PCIConfig
	event func(events uint8)
}

// NewPVPanic returns the function with its BAR unplaced.
func NewPVPanic(event func(events uint8)) (*PVPanic, error) {
	p := &PVPanic{
		PCIConfig: NewPCIConfig(PCIHeader{
			VendorID: PVPanicVendorID, DeviceID: PVPanicDeviceID, Revision: 1,
			Class:             0x088000,                    // system peripheral, other
			SubsystemVendorID: 0x1af4, SubsystemID: 0x1100, // QEMU's defaults
		}),
		event: event,
	}
	err := p.AddBAR(0, BAR{Kind: BARMem32, Size: PVPanicBARSize,
		Regions: []BARRegion{{Name: "pvpanic", Size: PVPanicBARSize, Dev: pvpanicRegs{p}}}})
	return p, err
}

// pvpanicRegs is the BAR: byte 0 reads the events the host handles and
// takes the guest's report; every other byte reads 0 and ignores writes.
type pvpanicRegs struct{ p *PVPanic }

func (r pvpanicRegs) Read(offset uint64, data []byte) {
	fill(data, 0)
	if offset == 0 && len(data) > 0 {
		data[0] = pvpanicEvents
	}
}

func (r pvpanicRegs) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) == 0 {
		return
	}
	if ev := data[0] & pvpanicEvents; ev != 0 {
		r.p.event(ev)
	}
}
