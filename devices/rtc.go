package devices

import (
	"sync"
	"time"
)

// RTC ports, relative to base 0x70.
const (
	RTCBase = 0x70
	RTCSize = 2

	rtcIndex = 0 // port 0x70
	rtcData  = 1 // port 0x71
)

// CMOS register indexes of the MC146818.
const (
	cmosSeconds   = 0x00
	cmosMinutes   = 0x02
	cmosHours     = 0x04
	cmosWeekday   = 0x06
	cmosDay       = 0x07
	cmosMonth     = 0x08
	cmosYear      = 0x09
	cmosRegA      = 0x0a
	cmosRegB      = 0x0b
	cmosRegC      = 0x0c
	cmosRegD      = 0x0d
	cmosCentury   = 0x32
	cmosSize      = 128
	cmosIndexMask = 0x7f // bit 7 of the index port is the NMI mask

	rtcRegADefault = 0x26 // 32.768 kHz base, 1024 Hz rate, UIP never set
	rtcRegBDefault = 0x02 // 24-hour mode, BCD
	rtcRegB24h     = 0x02
	rtcRegBBinary  = 0x04
	rtcRegBSet     = 0x80
	rtcRegDValid   = 0x80 // battery good
	rtcHourPM      = 0x80 // in 12-hour mode
)

// RTC is the CMOS clock and its 128 bytes of NVRAM. The time registers
// always follow the host clock: a guest setting them is ignored, because
// the guest's wall clock is the host's business and an offset would
// silently drift from it. No RTC interrupts are generated.
type RTC struct {
	now func() time.Time

	mu    sync.Mutex // guards index and cmos
	index byte
	cmos  [cmosSize]byte
}

// NewRTC returns an RTC that reads the time from now (time.Now when nil).
func NewRTC(now func() time.Time) *RTC {
	if now == nil {
		now = time.Now
	}
	r := &RTC{now: now}
	r.cmos[cmosRegA] = rtcRegADefault
	r.cmos[cmosRegB] = rtcRegBDefault
	r.cmos[cmosRegD] = rtcRegDValid
	return r
}

// SetCMOS stores a byte of NVRAM, for firmware-style data the VMM wants
// the guest to find (memory size and the like). Out-of-range indexes and
// the computed registers (clock, C, D) are ignored.
func (r *RTC) SetCMOS(index int, v byte) {
	if index < 0 || index >= cmosSize || isComputedReg(byte(index)) {
		return
	}
	r.mu.Lock()
	r.cmos[index] = v
	r.mu.Unlock()
}

func isComputedReg(i byte) bool {
	switch i {
	case cmosSeconds, cmosMinutes, cmosHours, cmosWeekday, cmosDay, cmosMonth, cmosYear, cmosCentury,
		cmosRegC, cmosRegD:
		return true
	}
	return false
}

// Read and Write take a wide access as its bytes, one port each, as an
// ISA bus splits it (QEMU's CMOS ports are 1 byte wide): a 16-bit OUT to
// 0x70 writes the index, then the data port; a 16-bit IN reads the index
// port (all ones), then the data.
func (r *RTC) Read(offset uint64, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range data {
		if offset < RTCSize && offset+uint64(i) == rtcData {
			data[i] = r.readLocked(r.index)
		} else {
			// The index port is write-only on real hardware.
			data[i] = 0xff
		}
	}
}

func (r *RTC) Write(offset uint64, data []byte) {
	if offset >= RTCSize {
		return // and offset+i cannot wrap round to a port
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, v := range data {
		switch offset + uint64(i) {
		case rtcIndex:
			r.index = v & cmosIndexMask
		case rtcData:
			r.writeLocked(r.index, v)
		}
	}
}

func (r *RTC) readLocked(i byte) byte {
	switch i {
	case cmosSeconds, cmosMinutes, cmosHours, cmosWeekday, cmosDay, cmosMonth, cmosYear, cmosCentury:
		return r.clockLocked(i)
	case cmosRegA:
		// Update-in-progress stays clear: the time is computed on each
		// read, so there is never a torn update to wait for.
		return r.cmos[cmosRegA] &^ 0x80
	case cmosRegC:
		return 0 // no interrupt flags: we raise no RTC interrupts
	case cmosRegD:
		return rtcRegDValid
	}
	return r.cmos[i]
}

func (r *RTC) writeLocked(i byte, v byte) {
	if isComputedReg(i) {
		return
	}
	r.cmos[i] = v
}

// clockLocked formats one time field in the mode register B selects.
func (r *RTC) clockLocked(i byte) byte {
	t := r.now().UTC()
	regB := r.cmos[cmosRegB]
	var v int
	pm := false
	switch i {
	case cmosSeconds:
		v = t.Second()
	case cmosMinutes:
		v = t.Minute()
	case cmosHours:
		v = t.Hour()
		if regB&rtcRegB24h == 0 {
			pm = v >= 12
			v %= 12
			if v == 0 {
				v = 12
			}
		}
	case cmosWeekday:
		v = int(t.Weekday()) + 1 // the RTC counts Sunday as 1
	case cmosDay:
		v = t.Day()
	case cmosMonth:
		v = int(t.Month())
	case cmosYear:
		v = t.Year() % 100
	case cmosCentury:
		v = t.Year() / 100 % 100
	}
	var b byte
	if regB&rtcRegBBinary != 0 {
		b = byte(v)
	} else {
		b = toBCD(v)
	}
	if pm {
		b |= rtcHourPM
	}
	return b
}

func toBCD(v int) byte {
	return byte(v/10%10<<4 | v%10)
}
