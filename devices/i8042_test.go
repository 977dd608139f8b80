package devices

import "testing"

func TestI8042(t *testing.T) {
	type access struct {
		off uint64
		v   byte
	}
	tests := []struct {
		name   string
		writes []access
		resets int
	}{
		{"pulse reset", []access{{i8042Command, 0xfe}}, 1},
		{"repeated pulse", []access{{i8042Command, 0xfe}, {i8042Command, 0xfe}}, 2},
		{"0xfe on data port", []access{{i8042Data, 0xfe}}, 0},
		{"write output port reset", []access{{i8042Command, 0xd1}, {i8042Data, 0xfe}}, 1},
		{"write output port no reset", []access{{i8042Command, 0xd1}, {i8042Data, 0xdf}}, 0},
		{"output port command cancelled", []access{{i8042Command, 0xd1}, {i8042Command, 0xad}, {i8042Data, 0x00}}, 0},
		{"data without command", []access{{i8042Data, 0x00}}, 0},
		{"other offsets", []access{{1, 0xfe}, {2, 0xfe}, {3, 0xfe}, {5, 0xfe}, {1 << 62, 0xfe}}, 0},
		// Commands 0xf0-0xff pulse output port bits 3-0 whose command
		// bit is clear: every even one pulses bit 0, the CPU reset, as
		// in QEMU's kbd_write_command.
		{"pulse 0xf0 (all four bits)", []access{{i8042Command, 0xf0}}, 1},
		{"every even pulse command", []access{{i8042Command, 0xf2}, {i8042Command, 0xf4}, {i8042Command, 0xf6},
			{i8042Command, 0xf8}, {i8042Command, 0xfa}, {i8042Command, 0xfc}}, 6},
		{"odd pulse commands leave bit 0", []access{{i8042Command, 0xf1}, {i8042Command, 0xf3}, {i8042Command, 0xfd},
			{i8042Command, 0xff}}, 0},
		{"below the pulse commands", []access{{i8042Command, 0xe0}, {i8042Command, 0xee}, {i8042Command, 0x70}}, 0},
		{"pulse cancels an output port write", []access{{i8042Command, 0xd1}, {i8042Command, 0xff}, {i8042Data, 0x00}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resets := 0
			k := NewI8042(func() { resets++ })
			for _, w := range tt.writes {
				k.Write(w.off, []byte{w.v})
			}
			if resets != tt.resets {
				t.Errorf("reset called %d times, want %d", resets, tt.resets)
			}
		})
	}
}

func TestI8042Reads(t *testing.T) {
	k := NewI8042(nil)
	k.Write(i8042Command, []byte{0xfe}) // nil reset must not panic
	k.Write(i8042Command, []byte{0xfe, 0xfe})
	tests := []struct {
		off  uint64
		size int
		want byte
	}{
		{i8042Command, 1, 0},
		{i8042Data, 1, 0},
		{1, 1, 0xff},
		{i8042Command, 2, 0xff},
		{99, 1, 0xff},
	}
	for _, tt := range tests {
		data := make([]byte, tt.size)
		k.Read(tt.off, data)
		for _, b := range data {
			if b != tt.want {
				t.Errorf("read off %d size %d = % x, want %#x", tt.off, tt.size, data, tt.want)
				break
			}
		}
	}
}
