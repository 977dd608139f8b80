package devices

import "encoding/binary"

// DebugPort reports every value the guest writes to it. Test guests use it
// to signal results and exit, and the guest's /init to announce that boot
// finished, without going through the UART.
type DebugPort struct {
	onWrite func(value uint32)
}

// NewDebugPort returns a port that calls onWrite (on the vCPU thread, so
// it must not block on the vCPUs) with each value written at offset 0.
func NewDebugPort(onWrite func(value uint32)) *DebugPort {
	return &DebugPort{onWrite: onWrite}
}

// Read returns 0 so a guest can probe for the port.
func (d *DebugPort) Read(offset uint64, data []byte) {
	var v byte
	switch len(data) {
	case 1, 2, 4:
	default:
		v = 0xff
	}
	for i := range data {
		data[i] = v
	}
}

func (d *DebugPort) Write(offset uint64, data []byte) {
	if offset != 0 || d.onWrite == nil {
		return
	}
	var v uint32
	switch len(data) {
	case 1:
		v = uint32(data[0])
	case 2:
		v = uint32(binary.LittleEndian.Uint16(data))
	case 4:
		v = binary.LittleEndian.Uint32(data)
	default:
		return
	}
	d.onWrite(v)
}
