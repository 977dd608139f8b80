package devices

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeIRQ records every level set on it.
type fakeIRQ struct {
	mu     sync.Mutex
	levels []bool
	err    error
}

func (f *fakeIRQ) SetLevel(high bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.levels = append(f.levels, high)
	return nil
}

func (f *fakeIRQ) history() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.levels)
}

// syncBuffer is a bytes.Buffer safe against the flush timer's goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestSerial() (*Serial, *fakeIRQ, *syncBuffer) {
	irq := &fakeIRQ{}
	out := &syncBuffer{}
	s := NewSerial(irq, out)
	s.SetFlushDelay(0)
	return s, irq, out
}

func in(d Device, off uint64) byte {
	var b [1]byte
	d.Read(off, b[:])
	return b[0]
}

func out(d Device, off uint64, v byte) { d.Write(off, []byte{v}) }

func TestSerialOutput(t *testing.T) {
	s, _, o := newTestSerial()
	// written is what reached the terminal once the sink has written
	// what the UART handed it (without handing over a partial line).
	written := func() string {
		s.out.Flush(10 * time.Second)
		return o.String()
	}
	for _, c := range []byte("hi") {
		out(s, uartData, c)
	}
	if got := written(); got != "" {
		t.Errorf("partial line written early: %q", got)
	}
	out(s, uartData, '\n')
	if got := written(); got != "hi\n" {
		t.Errorf("output %q, want %q", got, "hi\n")
	}
	out(s, uartData, '$')
	s.Flush()
	if got := written(); got != "hi\n$" {
		t.Errorf("after Flush output %q", got)
	}
	long := strings.Repeat("x", serialOutSize)
	s.Write(uartData, nil) // an empty access is a no-op
	for _, c := range []byte(long) {
		out(s, uartData, c)
	}
	if got := written(); len(got) < serialOutSize {
		t.Errorf("full buffer not flushed: %d bytes out", len(got))
	}
}

func TestSerialFlushTimer(t *testing.T) {
	o := &syncBuffer{}
	s := NewSerial(nil, o)
	s.SetFlushDelay(time.Millisecond)
	out(s, uartData, '#')
	deadline := time.Now().Add(5 * time.Second)
	for o.String() != "#" {
		if time.Now().After(deadline) {
			t.Fatal("partial line never flushed by the timer")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSerialRegisters(t *testing.T) {
	s, _, o := newTestSerial()
	tests := []struct {
		name  string
		write []struct{ off, v byte }
		off   uint64
		want  byte
	}{
		{"lsr idle", nil, uartLSR, lsrTHRE | lsrTEMT},
		{"iir idle", nil, uartIIR, iirNoInt},
		{"msr idle", nil, uartMSR, msrDCD | msrDSR | msrCTS},
		{"scr", []struct{ off, v byte }{{uartSCR, 0xa5}}, uartSCR, 0xa5},
		{"lcr", []struct{ off, v byte }{{uartLCR, 0x03}}, uartLCR, 0x03},
		{"ier masked", []struct{ off, v byte }{{uartIER, 0xf0}}, uartIER, 0},
		{"dll", []struct{ off, v byte }{{uartLCR, 0x83}, {uartData, 0x01}, {uartLCR, 0x83}}, uartData, 0x01},
		{"dlm", []struct{ off, v byte }{{uartLCR, 0x83}, {uartIER, 0x02}}, uartIER, 0x02},
		{"ier untouched by dlm", []struct{ off, v byte }{{uartLCR, 0x03}}, uartIER, 0},
		{"fifo bits", []struct{ off, v byte }{{uartIIR, fcrEnable}}, uartIIR, iirFIFO | iirNoInt},
		{"fifo off", []struct{ off, v byte }{{uartIIR, 0}}, uartIIR, iirNoInt},
		// Linux's autoconfig loopback check: MCR=LOOP|0x0A must read 0x90.
		{"loopback msr", []struct{ off, v byte }{{uartMCR, mcrLoop | 0x0a}}, uartMSR, 0x90},
		{"loopback msr all", []struct{ off, v byte }{{uartMCR, mcrLoop | 0x0f}}, uartMSR, 0xf0},
		{"mcr masked", []struct{ off, v byte }{{uartMCR, 0xff}}, uartMCR, mcrMask},
		{"bad offset", nil, 8, 0xff},
		{"huge offset", nil, 1 << 63, 0xff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, w := range tt.write {
				out(s, uint64(w.off), w.v)
			}
			if got := in(s, tt.off); got != tt.want {
				t.Errorf("reg %d = %#x, want %#x", tt.off, got, tt.want)
			}
		})
	}
	out(s, 1<<40, 'x') // ignored, must not panic
	s.Flush()
	if got := o.String(); got != "" {
		t.Errorf("register writes produced output %q", got)
	}
}

func TestSerialDivisorLatch(t *testing.T) {
	s, _, o := newTestSerial()
	out(s, uartLCR, lcrDLAB|0x03)
	out(s, uartData, 0x34)
	out(s, uartIER, 0x12)
	if lo, hi := in(s, uartData), in(s, uartIER); lo != 0x34 || hi != 0x12 {
		t.Errorf("divisor = %#x/%#x, want 0x34/0x12", lo, hi)
	}
	out(s, uartLCR, 0x03)
	if got := in(s, uartIER); got != 0 {
		t.Errorf("IER = %#x after DLM write, want 0", got)
	}
	out(s, uartLCR, lcrDLAB|0x03)
	if lo, hi := in(s, uartData), in(s, uartIER); lo != 0x34 || hi != 0x12 {
		t.Errorf("divisor after DLAB toggle = %#x/%#x", lo, hi)
	}
	s.Flush()
	if got := o.String(); got != "" {
		t.Errorf("DLL write was transmitted: %q", got)
	}
}

func TestSerialTHRInterrupt(t *testing.T) {
	type step struct {
		op       string // "out", "in"
		off      uint64
		v        byte // written, or expected when reading
		levelNow bool
	}
	tests := []struct {
		name   string
		steps  []step
		levels []bool
	}{
		{
			name: "write then ack",
			steps: []step{
				{"out", uartIER, ierTHRI, true}, // enabling fires: THR is empty
				{"in", uartIIR, iirTHRI, false},
				{"in", uartIIR, iirNoInt, false},
				{"out", uartData, 'a', true},
				{"in", uartIIR, iirTHRI, false},
			},
			levels: []bool{true, false, true, false},
		},
		{
			name: "disabled interrupt stays low",
			steps: []step{
				{"out", uartData, 'a', false},
				{"in", uartIIR, iirNoInt, false},
			},
		},
		{
			// Linux's UART_BUG_THRE probe: re-enabling ETBEI must re-fire.
			name: "thre probe",
			steps: []step{
				{"out", uartIER, ierTHRI, true},
				{"in", uartIIR, iirTHRI, false},
				{"out", uartIER, 0, false},
				{"out", uartIER, ierTHRI, true},
				{"in", uartIIR, iirTHRI, false},
				{"out", uartIER, 0, false},
			},
			levels: []bool{true, false, true, false},
		},
		{
			name: "ier write without change does not re-fire",
			steps: []step{
				{"out", uartIER, ierTHRI, true},
				{"in", uartIIR, iirTHRI, false},
				{"out", uartIER, ierTHRI | ierRDI, false},
				{"in", uartIIR, iirNoInt, false},
			},
			levels: []bool{true, false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, irq, _ := newTestSerial()
			for i, st := range tt.steps {
				switch st.op {
				case "out":
					out(s, st.off, st.v)
				case "in":
					if got := in(s, st.off); got != st.v {
						t.Fatalf("step %d: reg %d = %#x, want %#x", i, st.off, got, st.v)
					}
				}
				h := irq.history()
				level := len(h) > 0 && h[len(h)-1]
				if level != st.levelNow {
					t.Fatalf("step %d: line %v, want %v (history %v)", i, level, st.levelNow, h)
				}
			}
			if h := irq.history(); !slices.Equal(h, tt.levels) {
				t.Errorf("levels %v, want %v", h, tt.levels)
			}
		})
	}
}

func TestSerialReceive(t *testing.T) {
	s, irq, _ := newTestSerial()
	out(s, uartIIR, fcrEnable) // the FIFO on, as Linux's driver runs it
	if got := in(s, uartLSR); got&lsrDR != 0 {
		t.Fatalf("LSR.DR set with nothing queued: %#x", got)
	}
	s.Input([]byte("a"))
	if got := in(s, uartLSR); got&lsrDR == 0 {
		t.Errorf("LSR = %#x, want DR set", got)
	}
	if h := irq.history(); len(h) != 0 {
		t.Errorf("irq raised with RDI disabled: %v", h)
	}
	out(s, uartIER, ierRDI)
	if h := irq.history(); !slices.Equal(h, []bool{true}) {
		t.Errorf("after enabling RDI levels = %v, want [true]", h)
	}
	if got := in(s, uartIIR); got != iirFIFO|iirRDI {
		t.Errorf("IIR = %#x, want RX data %#x", got, iirFIFO|iirRDI)
	}
	if got := in(s, uartIIR); got != iirFIFO|iirRDI {
		t.Errorf("IIR read acknowledged RX data: %#x", got)
	}
	if got := in(s, uartData); got != 'a' {
		t.Errorf("RBR = %q, want 'a'", got)
	}
	if got := in(s, uartLSR); got&lsrDR != 0 {
		t.Errorf("LSR = %#x after draining, want DR clear", got)
	}
	if h := irq.history(); !slices.Equal(h, []bool{true, false}) {
		t.Errorf("levels %v, want [true false]", h)
	}
	s.Input([]byte("bc"))
	if got := string([]byte{in(s, uartData), in(s, uartData), in(s, uartData)}); got != "bc\x00" {
		t.Errorf("RBR sequence %q", got)
	}
	if h := irq.history(); !slices.Equal(h, []bool{true, false, true, false}) {
		t.Errorf("levels %v", h)
	}
}

func TestSerialInterruptPriority(t *testing.T) {
	s, _, _ := newTestSerial()
	out(s, uartIIR, fcrEnable)
	out(s, uartIER, ierRDI|ierTHRI|ierRLSI)
	// Host input stops at a full buffer; a loopback write overruns it.
	if n := s.Input(make([]byte, serialRXSize+3)); n != serialRXSize {
		t.Errorf("Input took %d bytes, want %d", n, serialRXSize)
	}
	out(s, uartMCR, mcrLoop)
	out(s, uartData, 'x')
	out(s, uartMCR, 0)
	want := []struct {
		off uint64
		v   byte
	}{
		{uartIIR, iirFIFO | iirRLSI},
		{uartLSR, lsrTHRE | lsrTEMT | lsrDR | lsrOE}, // reading LSR clears OE
		{uartIIR, iirFIFO | iirRDI},
	}
	for i, w := range want {
		if got := in(s, w.off); got != w.v {
			t.Errorf("step %d: reg %d = %#x, want %#x", i, w.off, got, w.v)
		}
	}
	out(s, uartIIR, fcrEnable|fcrClearRX)
	if got := in(s, uartIIR); got != iirFIFO|iirTHRI {
		t.Errorf("IIR after clearing RX = %#x, want THR empty with FIFO bits", got)
	}
	if got := in(s, uartIIR); got != iirFIFO|iirNoInt {
		t.Errorf("IIR = %#x, want none pending", got)
	}
}

func TestSerialLoopback(t *testing.T) {
	s, _, o := newTestSerial()
	out(s, uartIIR, fcrEnable)
	out(s, uartMCR, mcrLoop)
	out(s, uartData, 'z')
	out(s, uartData, '\n')
	s.Flush()
	if got := o.String(); got != "" {
		t.Errorf("loopback transmitted %q", got)
	}
	if got := in(s, uartData); got != 'z' {
		t.Errorf("looped-back byte = %q, want 'z'", got)
	}
	out(s, uartMCR, 0)
	out(s, uartData, 'y')
	s.Flush()
	if got := o.String(); got != "y" {
		t.Errorf("output after leaving loopback %q", got)
	}
}

func TestSerialIRQErrorLoggedOnce(t *testing.T) {
	logs := captureLog(t)
	irq := &fakeIRQ{err: errors.New("ioctl failed")}
	s := NewSerial(irq, nil)
	for range 3 {
		out(s, uartIER, ierTHRI)
		out(s, uartIER, 0)
	}
	if n := strings.Count(logs.String(), "ioctl failed"); n != 1 {
		t.Errorf("irq error logged %d times, want 1:\n%s", n, logs)
	}
	// The line recovers and the missed level is applied.
	irq.mu.Lock()
	irq.err = nil
	irq.mu.Unlock()
	out(s, uartIER, ierTHRI)
	if h := irq.history(); !slices.Equal(h, []bool{true}) {
		t.Errorf("levels after recovery %v", h)
	}
}

func TestSerialWideAccess(t *testing.T) {
	s, _, _ := newTestSerial()
	s.Write(uartLCR, []byte{0x03, 0x0b}) // LCR and MCR in one access
	if lcr, mcr := in(s, uartLCR), in(s, uartMCR); lcr != 0x03 || mcr != 0x0b {
		t.Errorf("LCR/MCR = %#x/%#x", lcr, mcr)
	}
	data := make([]byte, 4)
	s.Read(6, data)
	if !bytes.Equal(data, []byte{msrDCD | msrDSR | msrCTS, 0, 0xff, 0xff}) {
		t.Errorf("read past the last register = % x", data)
	}
}

func TestSerialConcurrent(t *testing.T) {
	irq := &fakeIRQ{}
	o := &syncBuffer{}
	s := NewSerial(irq, o)
	s.SetFlushDelay(time.Microsecond)
	b := NewBus("pio")
	if _, err := b.Register("serial", 0x3f8, SerialSize, s); err != nil {
		t.Fatal(err)
	}
	const perWriter = 500
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			var d [1]byte
			d[0] = ierTHRI | ierRDI
			b.Dispatch(0x3f9, d[:], true)
			for range perWriter {
				d[0] = 'x'
				b.Dispatch(0x3f8, d[:], true)
				b.Dispatch(0x3fa, d[:], false)
				b.Dispatch(0x3fd, d[:], false)
			}
		})
	}
	wg.Go(func() {
		for range perWriter {
			s.Input([]byte("k"))
		}
	})
	wg.Go(func() {
		var d [1]byte
		for range perWriter {
			b.Dispatch(0x3f8, d[:], false)
		}
	})
	wg.Wait()
	s.Flush()
	if got := strings.Count(o.String(), "x"); got != 3*perWriter {
		t.Errorf("%d bytes out, want %d", got, 3*perWriter)
	}
	h := irq.history()
	for i := 1; i < len(h); i++ {
		if h[i] == h[i-1] {
			t.Fatalf("SetLevel(%v) repeated at %d", h[i], i)
		}
	}
}

// With the FIFO off (FCR bit 0 clear, the power-on state) the receiver
// holds one byte, as an 8250 and QEMU's serial_receive1: a second byte
// overwrites it and sets LSR.OE, and an RBR read with nothing new returns
// the last byte again. Turning the FIFO on or off clears it (PC16550D
// FCR0; QEMU's serial_ioport_write). Each sequence's reads are what the
// same register writes read under QEMU 7.2 -M pc (found by an audit).
func TestSerialNonFIFOReceiver(t *testing.T) {
	type step struct {
		write   bool
		off     uint64
		v       byte // written, or wanted
		comment string
	}
	w := func(off uint64, v byte) step { return step{true, off, v, ""} }
	r := func(off uint64, v byte, c string) step { return step{false, off, v, c} }
	const lsrIdle = lsrTHRE | lsrTEMT
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"second byte overruns the first", []step{
			w(uartMCR, mcrLoop), w(uartData, 'A'), w(uartData, 'B'),
			r(uartLSR, lsrIdle|lsrOE|lsrDR, "B overwrote A"),
			r(uartData, 'B', "the second byte"),
			r(uartLSR, lsrIdle, "read: OE and DR clear"),
			r(uartData, 'B', "nothing new: the last byte again"),
			r(uartLSR, lsrIdle, "still nothing to read"),
		}},
		{"turning the FIFO off clears it", []step{
			w(uartIIR, fcrEnable), w(uartMCR, mcrLoop), w(uartData, 'C'), w(uartData, 'D'),
			r(uartLSR, lsrIdle|lsrDR, "two bytes in the FIFO, no overrun"),
			w(uartIIR, 0),
			r(uartLSR, lsrIdle, "FIFO cleared"),
			r(uartData, 0, "no byte ever reached the one-byte receiver"),
			r(uartIIR, iirNoInt, "no FIFO bits"),
		}},
		{"turning the FIFO on clears the byte held", []step{
			w(uartMCR, mcrLoop), w(uartData, 'E'),
			w(uartIIR, fcrEnable),
			r(uartLSR, lsrIdle, "receiver cleared"),
			r(uartData, 0, "an empty FIFO reads 0"),
		}},
		{"rewriting FCR with the same mode keeps the data", []step{
			w(uartIIR, fcrEnable), w(uartMCR, mcrLoop), w(uartData, 'F'),
			w(uartIIR, fcrEnable|0xc0),
			r(uartData, 'F', "still there"),
		}},
		{"empty RBR", []step{
			w(uartMCR, mcrLoop), w(uartData, 'U'),
			r(uartData, 'U', "the byte"),
			r(uartData, 'U', "again"),
			r(uartLSR, lsrIdle, "nothing to read"),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := newTestSerial()
			for i, st := range tc.steps {
				if st.write {
					out(s, st.off, st.v)
					continue
				}
				if got := in(s, st.off); got != st.v {
					t.Errorf("step %d: reg %d = %#x, want %#x (%s)", i, st.off, got, st.v, st.comment)
				}
			}
		})
	}
}

// Host input never overruns the one-byte receiver: with the FIFO off
// Input takes a byte only while none is unread, and the guest reading it
// signals Room, so input goes on flowing one byte at a time, in order.
func TestSerialNonFIFOInputWaits(t *testing.T) {
	s, _, _ := newTestSerial()
	msg := []byte("hello, 8250")
	var got []byte
	p := msg
	for len(p) > 0 {
		n := s.Input(p)
		if n != 1 {
			t.Fatalf("Input took %d bytes of %q with the receiver empty, want 1", n, p)
		}
		p = p[n:]
		if len(p) > 0 {
			if n := s.Input(p); n != 0 {
				t.Fatalf("Input took %d bytes with one unread", n)
			}
			select {
			case <-s.Room():
				t.Fatal("Room signalled before the guest read")
			default:
			}
		}
		if lsr := in(s, uartLSR); lsr&lsrOE != 0 || lsr&lsrDR == 0 {
			t.Fatalf("LSR = %#x, want DR without OE", lsr)
		}
		got = append(got, in(s, uartData))
		if len(p) > 0 {
			select {
			case <-s.Room():
			default:
				t.Fatal("the guest read the byte but Room was not signalled")
			}
		}
	}
	if string(got) != string(msg) {
		t.Errorf("guest read %q, want %q", got, msg)
	}
	// Input waiting at the one-byte receiver when the guest turns the
	// FIFO on is woken, and the FIFO takes all of it.
	s.Input([]byte("a"))
	if n := s.Input([]byte("bcd")); n != 0 {
		t.Fatalf("Input took %d bytes with one unread", n)
	}
	out(s, uartIIR, fcrEnable)
	select {
	case <-s.Room():
	default:
		t.Fatal("turning the FIFO on did not signal Room")
	}
	if n := s.Input([]byte("bcd")); n != 3 {
		t.Errorf("Input took %d bytes into the FIFO, want 3", n)
	}
}

// A machine reset empties the receiver: input waiting for room is woken,
// or it would wait for ever, since the emptied receiver is never read
// down to half again (no test covered this).
func TestSerialResetWakesInput(t *testing.T) {
	s, _, _ := newTestSerial()
	out(s, uartIIR, fcrEnable)
	if n := s.Input(make([]byte, serialRXSize+1)); n != serialRXSize {
		t.Fatalf("Input took %d bytes, want %d", n, serialRXSize)
	}
	select {
	case <-s.Room():
		t.Fatal("Room signalled with the receive buffer full")
	default:
	}
	s.Reset()
	select {
	case <-s.Room():
	default:
		t.Fatal("Reset emptied the receiver but did not signal Room")
	}
	if n := s.Input([]byte("x")); n != 1 {
		t.Errorf("Input took %d bytes after the reset, want 1", n)
	}
}
