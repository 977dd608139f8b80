package devices

import (
	"io"
	"log"
	"sync"
	"time"
)

// SerialSize is the number of ports an 8250 decodes.
const SerialSize = 8

// Register offsets from the UART's base port.
const (
	uartData = 0 // RBR on read, THR on write, DLL with DLAB set
	uartIER  = 1 // DLM with DLAB set
	uartIIR  = 2 // FCR on write
	uartLCR  = 3
	uartMCR  = 4
	uartLSR  = 5
	uartMSR  = 6
	uartSCR  = 7
)

const (
	ierRDI  = 0x01 // received data available
	ierTHRI = 0x02 // transmitter holding register empty
	ierRLSI = 0x04 // receiver line status
	ierMask = 0x0f

	iirNoInt = 0x01
	iirTHRI  = 0x02
	iirRDI   = 0x04
	iirRLSI  = 0x06
	iirFIFO  = 0xc0 // both bits set: Linux identifies a 16550A

	fcrEnable  = 0x01
	fcrClearRX = 0x02
	fcrClearTX = 0x04

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1f

	lsrDR   = 0x01
	lsrOE   = 0x02
	lsrTHRE = 0x20
	lsrTEMT = 0x40

	msrCTS = 0x10
	msrDSR = 0x20
	msrRI  = 0x40
	msrDCD = 0x80
)

const (
	// serialRXSize bounds what host input can queue while the guest is
	// not reading: Input takes no more, and its caller waits for Room.
	// Only the guest's own loopback writes can overrun it. It is the
	// receive FIFO's size; with the FIFO off (FCR bit 0 clear) the
	// receiver holds one byte, as an 8250 does.
	serialRXSize = 4096
	// serialOutSize caps the output buffer so a guest printing without
	// newlines still reaches the terminal in reasonable chunks.
	serialOutSize = 1024
	// serialSinkMax bounds output waiting for a slow host terminal (see
	// OutputSink); beyond it output is dropped and counted, where QEMU
	// drops a character after four failed retries.
	serialSinkMax = 1 << 20
	// serialFlushTimeout bounds how long Flush and Close wait for output
	// to reach a terminal that stopped reading.
	serialFlushTimeout = 2 * time.Second
	// DefaultSerialFlushDelay flushes partial lines (a shell prompt) that
	// would otherwise wait for a newline that never comes.
	DefaultSerialFlushDelay = 20 * time.Millisecond
)

// Serial is an 8250/16550A UART. Transmission is instantaneous: THR and
// the transmitter always read empty, which is why the THR-empty interrupt
// has to be synthesized the way Linux's 8250 driver expects. Output goes
// to the host through an OutputSink: a terminal that stops reading never
// holds a vCPU.
type Serial struct {
	mu sync.Mutex // guards everything below

	irq     IRQLine
	level   bool // last level successfully set on irq
	irqErrd bool // an irq error was logged already

	out        *OutputSink
	outBuf     []byte
	flushDelay time.Duration
	timer      *time.Timer

	ier, lcr, mcr, scr, fcr byte
	dll, dlm                byte
	// thriPending latches a THR-empty event until the guest reads it from
	// IIR, as the real chip does; Linux's transmit path (and its startup
	// probe for the THRE bug) relies on it.
	thriPending bool
	overrun     bool

	// With the FIFO off, rbr is the receiver's one byte (rx unused,
	// rxLen 0 or 1 says whether it is unread): a second byte overwrites
	// it and sets LSR.OE, and reading it leaves it there, so an RBR
	// read with nothing new returns it again, as under QEMU.
	rbr    byte
	rx     [serialRXSize]byte
	rxHead int
	rxLen  int
	// input gets a token once the guest has read half the receive
	// buffer, or it was cleared, after Input turned bytes away.
	input InputRoom
}

// NewSerial returns a UART that drives irq (may be nil for a polled UART)
// and writes guest output to out (nil discards it).
func NewSerial(irq IRQLine, out io.Writer) *Serial {
	logged := false // only the first output error is logged
	return &Serial{
		irq: irq,
		out: NewOutputSink(out, serialSinkMax, 64<<10, func(err error) {
			if !logged {
				logged = true
				log.Printf("serial: write output: %v (further errors not logged)", err)
			}
		}),
		outBuf:     make([]byte, 0, serialOutSize),
		flushDelay: DefaultSerialFlushDelay,
		dll:        0x0c, // 9600 baud, what firmware usually leaves behind
		input:      NewInputRoom(),
	}
}

// Reset puts the registers in their power-on state (machine reset):
// interrupts off, FIFOs and pending events cleared, input not yet read
// dropped. Output already written stays, and is flushed.
func (s *Serial) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
	s.ier, s.lcr, s.mcr, s.scr, s.fcr = 0, 0, 0, 0, 0
	s.dll, s.dlm = 0x0c, 0
	s.thriPending, s.overrun = false, false
	s.rbr, s.rxHead, s.rxLen = 0, 0, 0
	s.madeRoomLocked()
	s.updateIRQLocked()
}

// SetFlushDelay sets how long a partial output line may wait before it is
// written out; 0 disables the timer, leaving only '\n', a full buffer and
// Flush.
func (s *Serial) SetFlushDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushDelay = d
	if d <= 0 && s.timer != nil {
		s.timer.Stop()
	}
}

// Flush writes buffered guest output to out, waiting for a terminal that
// stopped reading for at most serialFlushTimeout.
func (s *Serial) Flush() {
	s.handOver()
	s.out.Flush(serialFlushTimeout)
}

// Close flushes the output (as Flush does) and stops the goroutine that
// writes it; output after Close is dropped.
func (s *Serial) Close() {
	s.Flush()
	s.out.Close()
	if n := s.out.Dropped(); n > 0 {
		log.Printf("serial: %d bytes of guest output dropped: the terminal did not keep up", n)
	}
}

// OutputDropped returns how many output bytes a terminal that did not
// keep up cost the guest.
func (s *Serial) OutputDropped() uint64 { return s.out.Dropped() }

// handOver passes a partial line to the sink (the flush timer's job).
func (s *Serial) handOver() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
}

// Input queues bytes from the host terminal for the guest to read, as
// many as the receive buffer has room for, and returns how many: input
// waits for the guest (see Room) instead of overrunning, as a UART with
// flow control. With the FIFO off that is one byte, once the guest read
// the one before (QEMU's serial_can_receive).
func (s *Serial) Input(p []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := max(0, min(len(p), s.rxCapLocked()-s.rxLen))
	for _, c := range p[:n] {
		s.receiveLocked(c)
	}
	if n < len(p) {
		s.input.TurnedAway()
	}
	s.updateIRQLocked()
	return n
}

// Room returns a channel that gets a token once the guest has made room
// for input Input turned away. A token can be stale: Input says what fits.
func (s *Serial) Room() <-chan struct{} { return s.input.Room() }

// rxCapLocked is how many unread bytes the receiver holds: the FIFO's
// size, or one with the FIFO off.
func (s *Serial) rxCapLocked() int {
	if s.fcr&fcrEnable == 0 {
		return 1
	}
	return len(s.rx)
}

// madeRoomLocked hands Input's caller a token once half the receive
// buffer is free, so it wakes once per half buffer, not per byte read
// (with the FIFO off: once the byte held was read).
func (s *Serial) madeRoomLocked() {
	if s.rxLen <= s.rxCapLocked()/2 {
		s.input.MadeRoom()
	}
}

// Read handles IN from base+offset. A wider access covers consecutive
// registers, as an ISA bus splits it.
func (s *Serial) Read(offset uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range data {
		off := offset + uint64(i)
		if off >= SerialSize {
			data[i] = 0xff
			continue
		}
		data[i] = s.readLocked(off)
	}
}

// Write handles OUT to base+offset.
func (s *Serial) Write(offset uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, v := range data {
		off := offset + uint64(i)
		if off >= SerialSize {
			continue
		}
		s.writeLocked(off, v)
	}
}

// readLocked returns register off; mu must be held and off < SerialSize.
func (s *Serial) readLocked(off uint64) byte {
	dlab := s.lcr&lcrDLAB != 0
	switch off {
	case uartData:
		if dlab {
			return s.dll
		}
		return s.popLocked()
	case uartIER:
		if dlab {
			return s.dlm
		}
		return s.ier
	case uartIIR:
		id := s.pendingLocked()
		if id == iirTHRI {
			// Reading IIR acknowledges THR empty, and only when it is
			// the interrupt being reported.
			s.thriPending = false
			s.updateIRQLocked()
		}
		if s.fcr&fcrEnable != 0 {
			id |= iirFIFO
		}
		return id
	case uartLCR:
		return s.lcr
	case uartMCR:
		return s.mcr
	case uartLSR:
		v := byte(lsrTHRE | lsrTEMT)
		if s.rxLen > 0 {
			v |= lsrDR
		}
		if s.overrun {
			v |= lsrOE
			s.overrun = false
			s.updateIRQLocked()
		}
		return v
	case uartMSR:
		if s.mcr&mcrLoop != 0 {
			// Loopback wires the modem outputs to the inputs; Linux's
			// autoconfig checks exactly this mapping to detect a UART.
			var m byte
			if s.mcr&mcrDTR != 0 {
				m |= msrDSR
			}
			if s.mcr&mcrRTS != 0 {
				m |= msrCTS
			}
			if s.mcr&mcrOUT1 != 0 {
				m |= msrRI
			}
			if s.mcr&mcrOUT2 != 0 {
				m |= msrDCD
			}
			return m
		}
		// A terminal is always attached and ready.
		return msrDCD | msrDSR | msrCTS
	case uartSCR:
		return s.scr
	}
	return 0xff
}

// writeLocked sets register off; mu must be held and off < SerialSize.
func (s *Serial) writeLocked(off uint64, v byte) {
	dlab := s.lcr&lcrDLAB != 0
	switch off {
	case uartData:
		if dlab {
			s.dll = v
			return
		}
		if s.mcr&mcrLoop != 0 {
			s.receiveLocked(v)
		} else {
			s.outputLocked(v)
		}
		s.thriPending = true
		s.updateIRQLocked()
	case uartIER:
		if dlab {
			s.dlm = v
			return
		}
		if s.ier&ierTHRI == 0 && v&ierTHRI != 0 {
			// The transmitter is already empty, so enabling the
			// interrupt must fire it: Linux starts transmitting
			// by setting ETBEI and waiting for this.
			s.thriPending = true
		}
		s.ier = v & ierMask
		s.updateIRQLocked()
	case uartIIR:
		if (v^s.fcr)&fcrEnable != 0 {
			// Turning the FIFOs on or off clears them (PC16550D data
			// sheet, FCR0; QEMU's serial_ioport_write): no byte
			// crosses between the FIFO and the one-byte receiver.
			v |= fcrClearRX | fcrClearTX
		}
		s.fcr = v
		if v&fcrClearRX != 0 {
			s.rxHead, s.rxLen = 0, 0
			s.madeRoomLocked()
			s.updateIRQLocked()
		}
	case uartLCR:
		s.lcr = v
	case uartMCR:
		s.mcr = v & mcrMask
	case uartSCR:
		s.scr = v
	}
	// LSR and MSR are read-only.
}

// pendingLocked returns the IIR interrupt ID by the 16550 priority order.
func (s *Serial) pendingLocked() byte {
	switch {
	case s.ier&ierRLSI != 0 && s.overrun:
		return iirRLSI
	case s.ier&ierRDI != 0 && s.rxLen > 0:
		return iirRDI
	case s.ier&ierTHRI != 0 && s.thriPending:
		return iirTHRI
	}
	return iirNoInt
}

// updateIRQLocked drives the line to match the pending state, touching it
// only on a change since each SetLevel is an ioctl.
func (s *Serial) updateIRQLocked() {
	if s.irq == nil {
		return
	}
	level := s.pendingLocked() != iirNoInt
	if level == s.level {
		return
	}
	if err := s.irq.SetLevel(level); err != nil {
		// Leave s.level alone so the next update retries.
		if !s.irqErrd {
			s.irqErrd = true
			log.Printf("serial: set irq level %v: %v (further errors not logged)", level, err)
		}
		return
	}
	s.level = level
}

func (s *Serial) receiveLocked(c byte) {
	if s.fcr&fcrEnable == 0 {
		// One byte, overwritten by the next: Input never does that,
		// only loopback writes can.
		if s.rxLen > 0 {
			s.overrun = true
		}
		s.rbr, s.rxLen = c, 1
		return
	}
	if s.rxLen == len(s.rx) {
		s.overrun = true
		return
	}
	s.rx[(s.rxHead+s.rxLen)%len(s.rx)] = c
	s.rxLen++
}

func (s *Serial) popLocked() byte {
	if s.fcr&fcrEnable == 0 {
		if s.rxLen > 0 {
			s.rxLen = 0
			s.madeRoomLocked()
			s.updateIRQLocked()
		}
		return s.rbr
	}
	if s.rxLen == 0 {
		return 0
	}
	c := s.rx[s.rxHead]
	s.rxHead = (s.rxHead + 1) % len(s.rx)
	s.rxLen--
	s.madeRoomLocked()
	s.updateIRQLocked()
	return c
}

func (s *Serial) outputLocked(c byte) {
	s.outBuf = append(s.outBuf, c)
	if c == '\n' || len(s.outBuf) >= serialOutSize {
		s.flushLocked()
		return
	}
	if len(s.outBuf) == 1 && s.flushDelay > 0 {
		if s.timer == nil {
			s.timer = time.AfterFunc(s.flushDelay, s.handOver)
		} else {
			s.timer.Reset(s.flushDelay)
		}
	}
}

// flushLocked hands the buffer to the sink while holding mu, so output
// from several vCPUs stays in order; the sink never blocks.
func (s *Serial) flushLocked() {
	if len(s.outBuf) == 0 {
		return
	}
	s.out.Write(s.outBuf)
	s.outBuf = s.outBuf[:0]
}
