package virtio

import (
	"bytes"
	"errors"
	"testing"
)

func newConsoleEnv(t *testing.T, out *bytes.Buffer) (*Console, *testDriver, *testDriver, *testIRQ) {
	t.Helper()
	c := NewConsole(out)
	rx := newTestDriver(t, consoleQueueSize)
	// Both queues share the receive driver's memory, each with its own rings.
	tx := &testDriver{t: t, mem: rx.mem, q: NewQueue(consoleQueueSize), size: consoleQueueSize,
		desc: 0x200000, avail: 0x201000, used: 0x202000, heap: 0x300000}
	tx.q.SetAddresses(tx.desc, tx.avail, tx.used)
	if err := tx.q.SetReady(true); err != nil {
		t.Fatal(err)
	}
	irq := newTestIRQ()
	if err := c.Activate(rx.mem, 0, []*Queue{rx.q, tx.q}, irq); err != nil {
		t.Fatal(err)
	}
	return c, rx, tx, irq
}

func TestConsoleTransmit(t *testing.T) {
	var out bytes.Buffer
	c, _, tx, irq := newConsoleEnv(t, &out)
	head, _ := tx.add(rd([]byte("hello ")), rd([]byte("world")))
	tx.add(rd([]byte("\n")), wr(8)) // a writable buffer is not output
	if err := c.Notify(1); err != nil {
		t.Fatal(err)
	}
	c.Flush()
	if out.String() != "hello world\n" {
		t.Errorf("output %q", out.String())
	}
	if id, n := tx.mustUsed(); id != uint32(head) || n != 0 {
		t.Errorf("used %d/%d", id, n)
	}
	tx.mustUsed()
	if irq.count(1) != 1 {
		t.Errorf("%d transmit interrupts, want 1", irq.count(1))
	}
}

type failWriter struct{}

func (failWriter) Write(p []byte) (int, error) { return 0, errors.New("terminal gone") }

// TestConsoleOutputError: a host write error drops output, not the device.
func TestConsoleOutputError(t *testing.T) {
	c := NewConsole(failWriter{})
	d := newTestDriver(t, 8)
	rx := NewQueue(8)
	c.Activate(d.mem, 0, []*Queue{rx, d.q}, newTestIRQ())
	d.add(rd([]byte("x")))
	if err := c.Notify(1); err != nil {
		t.Fatal(err)
	}
	c.Flush()
	d.mustUsed()
	if err := c.Close(); err != nil {
		t.Error(err)
	}
}

func TestConsoleReceive(t *testing.T) {
	var out bytes.Buffer
	c, rx, _, irq := newConsoleEnv(t, &out)
	// Input before any buffer waits.
	c.Input([]byte("abc"))
	rx.noUsed()
	_, a := rx.add(wr(2))
	if err := c.Notify(0); err != nil {
		t.Fatal(err)
	}
	if _, n := rx.mustUsed(); n != 2 || string(rx.mem[a[0]:a[0]+2]) != "ab" {
		t.Errorf("first buffer %d %q", n, rx.mem[a[0]:a[0]+2])
	}
	// Posting a buffer delivers the rest.
	_, a = rx.add(wr(16))
	c.Notify(0)
	if _, n := rx.mustUsed(); n != 1 || rx.mem[a[0]] != 'c' {
		t.Errorf("second buffer %d %q", n, rx.mem[a[0]])
	}
	// Input with a buffer posted is delivered at once.
	_, a = rx.add(wr(16))
	c.Input([]byte("xyz"))
	if _, n := rx.mustUsed(); n != 3 || string(rx.mem[a[0]:a[0]+3]) != "xyz" {
		t.Errorf("third buffer %d %q", n, rx.mem[a[0]:a[0]+3])
	}
	if irq.count(0) != 3 {
		t.Errorf("%d receive interrupts, want 3", irq.count(0))
	}
	// A guest that does not read holds back input beyond the bound: the
	// caller keeps it until the guest takes half of what waits.
	if n := c.Input(make([]byte, consoleInputMax)); n != consoleInputMax {
		t.Errorf("Input took %d bytes of %d with nothing waiting", n, consoleInputMax)
	}
	if n := c.Input([]byte("more")); n != 0 {
		t.Errorf("Input took %d bytes with %d waiting", n, consoleInputMax)
	}
	rx.add(wr(consoleInputMax/2 - 1))
	c.Notify(0)
	select {
	case <-c.Room():
		t.Error("room signalled with more than half the input waiting")
	default:
	}
	rx.add(wr(1))
	c.Notify(0)
	select {
	case <-c.Room():
	default:
		t.Error("no room signalled with half the input taken")
	}
	if n := c.Input([]byte("more")); n != 4 {
		t.Errorf("Input took %d bytes once there was room, want 4", n)
	}
	// Input survives a reset and goes to the next driver.
	c.Reset()
	c.Input([]byte("!"))
	if err := c.Notify(0); err != nil {
		t.Errorf("Notify after Reset: %v", err)
	}
}

func TestConsoleBrokenQueue(t *testing.T) {
	var out bytes.Buffer
	c, rx, tx, _ := newConsoleEnv(t, &out)
	rx.publish(consoleQueueSize) // head out of range
	c.Input([]byte("a"))
	if err := c.Notify(0); err == nil {
		t.Error("Notify(0) on a broken receiveq succeeded")
	}
	// The transmit side is unaffected.
	tx.add(rd([]byte("ok")))
	err := c.Notify(1)
	c.Flush()
	if err != nil || out.String() != "ok" {
		t.Errorf("transmit after receive broke: %v %q", err, out.String())
	}
	if err := c.Notify(2); err == nil {
		t.Error("Notify(2) succeeded")
	}
	if err := c.Activate(rx.mem, 0, []*Queue{rx.q}, nil); err == nil {
		t.Error("Activate with one queue succeeded")
	}
}
