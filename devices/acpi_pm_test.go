package devices

import "testing"

func TestACPIPM(t *testing.T) {
	tests := []struct {
		name          string
		offset        uint64
		data          []byte
		off, resetted int
	}{
		// What Linux's acpi_hw_extended_sleep writes for S5: SLP_EN | 5<<2.
		{"S5", ACPIPMSleepControl, []byte{0x34}, 1, 0},
		{"S5 with stray bits", ACPIPMSleepControl, []byte{0x34 | 0x83}, 1, 0},
		{"S5 type without SLP_EN", ACPIPMSleepControl, []byte{0x14}, 0, 0},
		{"S3 (not offered)", ACPIPMSleepControl, []byte{0x20 | 3<<2}, 0, 0},
		{"S0 wake", ACPIPMSleepControl, []byte{0x20}, 0, 0},
		{"clear WAK_STS", ACPIPMSleepStatus, []byte{0x80}, 0, 0},
		{"S5 value to status", ACPIPMSleepStatus, []byte{0x34}, 0, 0},
		{"reset", ACPIPMReset, []byte{ACPIResetValue}, 0, 1},
		{"reset wrong value", ACPIPMReset, []byte{0xfe}, 0, 0},
		{"S5 value to reset", ACPIPMReset, []byte{0x34}, 0, 0},
		// A word write at the control register also reaches the status one.
		{"word S5", ACPIPMSleepControl, []byte{0x34, 0x80}, 1, 0},
		{"word status+reset", ACPIPMSleepStatus, []byte{0x80, ACPIResetValue}, 0, 1},
		{"past the range", ACPIPMSize, []byte{0x34}, 0, 0},
		{"huge offset", ^uint64(0), []byte{0x34, 0x34}, 0, 0},
		{"empty", ACPIPMSleepControl, nil, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var off, reset int
			p := NewACPIPM(func() { off++ }, func() { reset++ })
			p.Write(tt.offset, tt.data)
			if off != tt.off || reset != tt.resetted {
				t.Errorf("power-off called %d times, reset %d; want %d, %d", off, reset, tt.off, tt.resetted)
			}
		})
	}
}

func TestACPIPMRepeatsAndNil(t *testing.T) {
	var off int
	p := NewACPIPM(func() { off++ }, nil)
	for range 3 {
		p.Write(ACPIPMSleepControl, []byte{0x34})
	}
	if off != 3 {
		t.Errorf("power-off called %d times for 3 requests", off)
	}
	p.Write(ACPIPMReset, []byte{ACPIResetValue}) // nil reset: ignored

	NewACPIPM(nil, nil).Write(ACPIPMSleepControl, []byte{0x34})
}

func TestACPIPMReadsZero(t *testing.T) {
	p := NewACPIPM(nil, nil)
	for _, size := range []int{1, 2, 4, 8} {
		for off := uint64(0); off < ACPIPMSize+1; off++ {
			data := make([]byte, size)
			for i := range data {
				data[i] = 0xaa
			}
			p.Read(off, data)
			for _, b := range data {
				if b != 0 {
					t.Fatalf("read offset %d size %d = % x, want zeros", off, size, data)
				}
			}
		}
	}
}

// On a bus, the three registers sit at consecutive ports.
func TestACPIPMOnBus(t *testing.T) {
	const base = 0x600
	var off, reset int
	b := NewBus("io")
	if _, err := b.Register("acpi-pm", base, ACPIPMSize, NewACPIPM(func() { off++ }, func() { reset++ })); err != nil {
		t.Fatal(err)
	}
	b.Dispatch(base+ACPIPMSleepStatus, []byte{0x80}, true)
	b.Dispatch(base+ACPIPMSleepControl, []byte{0x34}, true)
	b.Dispatch(base+ACPIPMReset, []byte{ACPIResetValue}, true)
	if off != 1 || reset != 1 {
		t.Errorf("power-off %d, reset %d; want 1, 1", off, reset)
	}
	data := []byte{0xff}
	if b.Dispatch(base+ACPIPMSleepStatus, data, false) == nil || data[0] != 0 {
		t.Errorf("status read % x", data)
	}
}
