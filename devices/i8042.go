package devices

import "sync"

// I8042 ports, relative to base 0x60: the range 0x60..0x64 (size 5) also
// covers 0x61..0x63, which belong to other chips (0x61 is the PIT/speaker
// gate, handled in-kernel when KVM's PIT is used); they read as 0xff.
const (
	I8042Base = 0x60
	I8042Size = 5

	i8042Data    = 0 // port 0x60
	i8042Command = 4 // port 0x64

	i8042CmdWriteOutput = 0xd1
	// Commands 0xf0-0xff pulse low the output port bits 3-0 whose bit in
	// the command is clear: any even one pulses bit 0, the CPU reset
	// (0xfe is the usual one, Linux's reboot=k).
	i8042CmdPulseBits = 0xf0
	i8042OutResetBit  = 0x01 // output port bit 0 low asserts CPU reset
)

// I8042 is the keyboard controller reduced to its one job here: resetting
// the machine (Linux reboot=k). There is no keyboard behind it.
type I8042 struct {
	reset func()

	mu sync.Mutex
	// awaitOutput is set after command 0xD1: the next data byte is the
	// output port value.
	awaitOutput bool
}

// NewI8042 returns a controller that calls reset when the guest pulses
// the CPU reset line. reset runs on the vCPU thread with no lock held;
// Linux repeats the command until it takes effect, so reset must be
// idempotent and must not wait for the vCPUs to stop.
func NewI8042(reset func()) *I8042 {
	return &I8042{reset: reset}
}

// Reset forgets a half-written output port command (machine reset).
func (k *I8042) Reset() {
	k.mu.Lock()
	k.awaitOutput = false
	k.mu.Unlock()
}

// Read returns 0 for data and status: no data to read and an empty input
// buffer, so Linux's kb_wait never spins.
func (k *I8042) Read(offset uint64, data []byte) {
	v := byte(0xff)
	if len(data) == 1 && (offset == i8042Data || offset == i8042Command) {
		v = 0
	}
	for i := range data {
		data[i] = v
	}
}

func (k *I8042) Write(offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	v := data[0]
	doReset := false
	k.mu.Lock()
	switch offset {
	case i8042Command:
		// Any other command ends a pending 0xd1's wait for its data
		// byte, as on an 8042; QEMU (kbd_write_command) keeps it
		// waiting across most commands. Linux never puts one between.
		k.awaitOutput = v == i8042CmdWriteOutput
		// As QEMU's kbd_write_command: pulsing bit 0 resets.
		doReset = v&i8042CmdPulseBits == i8042CmdPulseBits && v&i8042OutResetBit == 0
	case i8042Data:
		if k.awaitOutput {
			k.awaitOutput = false
			doReset = v&i8042OutResetBit == 0
		}
	}
	k.mu.Unlock()
	if doReset && k.reset != nil {
		k.reset()
	}
}
