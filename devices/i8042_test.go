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
