package devices

import "sync"

// The PC's two other reset registers besides the i8042, as QEMU's -M pc
// has them: PIIX3's Reset Control Register at 0xcf9 (hw/isa/piix3.c) and
// System Control Port A at 0x92 (hw/i386/port92.c). Firmware, Windows
// and Linux (reboot=pci) use 0xcf9; bootloaders and BIOSes use port 0x92.
const (
	// ResetControlPort is 0xcf9, inside the PCI host bridge's ports:
	// without a host bridge register the ResetControl here, size 1;
	// with one, the bridge passes it its byte (SetResetControl).
	ResetControlPort = 0xcf9

	// Port92 is System Control Port A; register it size 1.
	Port92 = 0x92

	rcrSystemReset = 1 << 1 // hard (1) or soft (0) reset: kept, not acted on
	rcrResetCPU    = 1 << 2 // writing 1 resets the machine
	port92Reset    = 1 << 0 // a rising edge resets the machine
)

// byteReg is a one-byte register that reads back what it holds, the
// state of both registers here. Read serves byte accesses at offset 0;
// anything else reads all ones.
type byteReg struct {
	mu sync.Mutex
	v  byte
}

func (r *byteReg) Read(offset uint64, data []byte) {
	fill(data, 0xff)
	if offset != 0 || len(data) != 1 {
		return
	}
	r.mu.Lock()
	data[0] = r.v
	r.mu.Unlock()
}

// update replaces the value with f(old) and returns old.
func (r *byteReg) update(f func(old byte) byte) (old byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old = r.v
	r.v = f(old)
	return old
}

// ResetControl is PIIX3's Reset Control Register. As in QEMU, a write
// with bit 2 set resets the machine and is not kept; otherwise only bit
// 1 (the reset type) is kept and reads return it.
type ResetControl struct {
	reset func()
	byteReg
}

// NewResetControl returns the register; reset runs on the vCPU thread
// with no lock held, and must not block (see NewI8042).
func NewResetControl(reset func()) *ResetControl {
	return &ResetControl{reset: reset}
}

// Reset clears the register (machine reset).
func (r *ResetControl) Reset() { r.update(func(byte) byte { return 0 }) }

func (r *ResetControl) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) != 1 {
		return
	}
	v := data[0]
	if v&rcrResetCPU != 0 {
		if r.reset != nil {
			r.reset()
		}
		return
	}
	r.update(func(byte) byte { return v & rcrSystemReset })
}

// SystemControlA is port 0x92. Bit 0 going from 0 to 1 resets the machine
// (a write of 1 while it is already 1 does not); bit 1 is the A20 gate,
// kept but meaningless here: KVM's guests always have A20 on. Reads
// return the last value written, with bit 0 cleared by a machine reset,
// as QEMU's port92_reset does.
type SystemControlA struct {
	reset func()
	byteReg
}

// NewSystemControlA returns the port; reset as for NewResetControl.
func NewSystemControlA(reset func()) *SystemControlA {
	return &SystemControlA{reset: reset}
}

// Reset clears the reset bit (machine reset), so the next write of 1
// resets again.
func (p *SystemControlA) Reset() { p.update(func(old byte) byte { return old &^ port92Reset }) }

func (p *SystemControlA) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) != 1 {
		return
	}
	v := data[0]
	old := p.update(func(byte) byte { return v })
	if v&port92Reset != 0 && old&port92Reset == 0 && p.reset != nil {
		p.reset()
	}
}
