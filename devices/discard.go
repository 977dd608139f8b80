package devices

// Discard claims ports that Linux probes but that we do not emulate (the
// 0x80 POST delay port, PIC ELCR, ...): claiming them keeps the unclaimed
// counter and log meaningful, and a fixed read value tells the probe that
// nothing is there, or that it is in its reset state.
type Discard struct {
	readValue byte
}

// NewDiscard returns a device that ignores writes and reads as readValue.
func NewDiscard(readValue byte) *Discard {
	return &Discard{readValue: readValue}
}

func (d *Discard) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = d.readValue
	}
}

func (d *Discard) Write(offset uint64, data []byte) {}
