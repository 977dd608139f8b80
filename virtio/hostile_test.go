package virtio

import (
	"bytes"
	"encoding/binary"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/guestlog"
)

// Tests of what a hostile guest can make a device do. A bound on time
// here is only "it ends at all": generous, never a measurement.
const endsWithin = 10 * time.Second

// countWriter counts what it is given.
type countWriter struct{ n atomic.Uint64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n.Add(uint64(len(p)))
	return len(p), nil
}

// TestConsoleHostileChainsBounded: a transmit chain of 64 descriptors
// that each cover all of guest RAM, and an indirect table of 4096 such
// descriptors, produce at most consoleTxMax bytes of output each.
func TestConsoleHostileChainsBounded(t *testing.T) {
	out := &countWriter{}
	c, _, tx, _ := newConsoleEnv(t, new(bytes.Buffer))
	c.out = devices.NewOutputSink(out, consoleOutMax, consoleTxMax, nil)
	ram := uint32(len(tx.mem))
	// 64 descriptors, the whole table, each covering RAM.
	for i := range uint16(consoleQueueSize) {
		flags := uint16(descFlagNext)
		if i == consoleQueueSize-1 {
			flags = 0
		}
		tx.writeDesc(tx.desc, i, 0, ram, flags, i+1)
	}
	tx.publish(0)
	if err := c.Notify(1); err != nil {
		t.Fatal(err)
	}
	tx.mustUsed()
	// An indirect table of maxIndirect descriptors, each covering RAM.
	table := tx.alloc(descSize * maxIndirect)
	for i := range uint16(maxIndirect) {
		flags := uint16(descFlagNext)
		if i == maxIndirect-1 {
			flags = 0
		}
		tx.writeDesc(table, i, 0, ram, flags, i+1)
	}
	tx.writeDesc(tx.desc, 0, table, descSize*maxIndirect, descFlagIndirect, 0)
	tx.publish(0)
	if err := c.Notify(1); err != nil {
		t.Fatal(err)
	}
	tx.mustUsed()
	c.Flush()
	if n := out.n.Load(); n != 2*consoleTxMax {
		t.Errorf("two hostile requests wrote %d bytes, want %d", n, 2*consoleTxMax)
	}
	want := uint64(consoleQueueSize+maxIndirect)*uint64(ram) - 2*consoleTxMax
	if d := c.OutputDropped(); d != want {
		t.Errorf("dropped %d bytes, want %d", d, want)
	}
}

// stuckWriter blocks every Write until released, like a terminal
// nobody reads.
type stuckWriter struct{ release chan struct{} }

func (w stuckWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

// TestConsoleStuckTerminal: a terminal that stopped reading costs the
// guest its output, not its vCPU: Notify and Close return.
func TestConsoleStuckTerminal(t *testing.T) {
	w := stuckWriter{make(chan struct{})}
	defer close(w.release)
	c, _, tx, _ := newConsoleEnv(t, new(bytes.Buffer))
	c.out = devices.NewOutputSink(w, consoleOutMax, consoleTxMax, nil)
	head, _ := tx.chain(rd(bytes.Repeat([]byte{'x'}, consoleTxMax)))
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 4*consoleOutMax/consoleTxMax && err == nil; i++ {
			tx.publish(head)
			err = c.Notify(1)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(endsWithin):
		t.Fatal("transmit blocked on a terminal that does not read")
	}
	if n := tx.usedIdx(); n != 4*consoleOutMax/consoleTxMax {
		t.Errorf("%d requests completed, want %d", n, 4*consoleOutMax/consoleTxMax)
	}
	// What the buffer could not take was dropped: all of it but the
	// buffer and the one write the writer is stuck in.
	if d := c.OutputDropped(); d < 4*consoleOutMax-2*consoleOutMax || d > 4*consoleOutMax-consoleOutMax {
		t.Errorf("dropped %d of %d bytes, want between %d and %d", d, 4*consoleOutMax, 2*consoleOutMax, 3*consoleOutMax)
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(consoleFlushTimeout + endsWithin):
		t.Fatal("Close waited for a terminal that does not read")
	}
}

// floodMem plays a guest that keeps a queue full for ever, without a
// goroutine of its own (and so without depending on who is faster):
// whenever the device looks up the buffer of the flood chain, the same
// chain is made available once more.
type floodMem struct {
	testMem
	mu   sync.Mutex // the test and the device's goroutines both publish
	d    *testDriver
	head uint16
	buf  uint64 // guest address of the chain's buffer
	on   bool
}

func (m *floodMem) Slice(gpa, n uint64) ([]byte, error) {
	m.mu.Lock()
	if m.on && gpa == m.buf {
		m.d.publish(m.head)
	}
	m.mu.Unlock()
	return m.testMem.Slice(gpa, n)
}

// flood fills the queue with a chain of one readable buffer and keeps
// it full until stop.
func (m *floodMem) flood(data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	head, addrs := m.d.chain(rd(data))
	m.head, m.buf, m.on = head, addrs[0], true
	for range m.d.size {
		m.d.publish(head)
	}
}

func (m *floodMem) stop() {
	m.mu.Lock()
	m.on = false
	m.mu.Unlock()
}

// keptFull is what the flood tests' waits are under.
const keptFull = " while the guest kept the queue full"

// waitFor polls cond until it holds, failing the test after endsWithin.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(endsWithin)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// within runs f and fails the test if it has not returned after
// endsWithin; onTimeout, unless nil, runs first, to unblock what f waits
// for.
func within(t *testing.T, what string, f func(), onTimeout func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(endsWithin):
		if onTimeout != nil {
			onTimeout()
		}
		t.Fatalf("%s did not return in %v", what, endsWithin)
	}
}

// consoleRig is a virtio console on a transport, activated the way a
// driver would, in memory that floods its transmit queue on demand.
func consoleRig(t *testing.T, ioeventfd bool) (*rig, *floodMem) {
	mem := &floodMem{testMem: make(testMem, testMemSize)}
	// setupQueue puts queue 1 at 0x20000.
	mem.d = &testDriver{t: t, mem: mem.testMem, size: consoleQueueSize, desc: 0x20000, avail: 0x21000, used: 0x22000, heap: 0x100000}
	r := newRigWith(t, NewConsole(io.Discard), mem, ioeventfd)
	activateConsole(r)
	return r, mem
}

func activateConsole(r *rig) {
	r.negotiate(FeatureVersion1 | RingFeatures)
	r.setupQueue(0, consoleQueueSize, 0)
	r.setupQueue(1, consoleQueueSize, 1)
	r.write(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	if r.status()&StatusDriverOK == 0 {
		r.t.Fatal("console not activated")
	}
}

// kick notifies transmitq the way the rig's transport expects: through
// the ioeventfd when there is one, else as an MMIO write on a goroutine
// of its own (a vCPU thread), which is returned to wait for.
func kick(r *rig, ioeventfd bool) (vcpu chan struct{}) {
	vcpu = make(chan struct{})
	if ioeventfd {
		fd, ok := r.ioev.fd(testBARBase + pciNotifyOff + pciNotifyMultiplier)
		if !ok {
			r.t.Fatal("no ioeventfd for transmitq")
		}
		unix.Write(fd, binary.LittleEndian.AppendUint64(nil, 1))
		close(vcpu)
		return vcpu
	}
	go func() {
		defer close(vcpu)
		r.write(pciNotifyOff+pciNotifyMultiplier, 2, 1)
	}()
	return vcpu
}

// TestTransportStopWinsOverFlood: a guest that keeps transmitq full
// keeps its notification busy for ever; a reset (driver writes status
// 0) and a Close must still return, abandoning that work.
func TestTransportStopWinsOverFlood(t *testing.T) {
	for _, ioeventfd := range []bool{false, true} {
		name := map[bool]string{false: "mmio", true: "ioeventfd"}[ioeventfd]
		t.Run(name, func(t *testing.T) {
			r, m := consoleRig(t, ioeventfd)
			tx := m.d
			m.flood([]byte("x"))
			defer m.stop()
			vcpu := kick(r, ioeventfd)
			waitFor(t, "transmitq to be served", func() bool { return tx.usedIdx() > 2*consoleQueueSize })
			within(t, "reset"+keptFull, func() { r.write(ccDeviceStatus, 1, 0) }, m.stop)
			within(t, "the notification", func() { <-vcpu }, m.stop)
			if r.status() != 0 {
				t.Errorf("status %#x after reset", r.status())
			}
			m.stop()

			// Again, ended by Close this time.
			*tx = testDriver{t: t, mem: tx.mem, size: tx.size, desc: tx.desc, avail: tx.avail, used: tx.used, heap: tx.heap}
			activateConsole(r)
			m.flood([]byte("y"))
			vcpu = kick(r, ioeventfd)
			waitFor(t, "transmitq to be served", func() bool { return tx.usedIdx() > 2*consoleQueueSize })
			within(t, "Close"+keptFull, func() { r.tr.Close() }, m.stop)
			within(t, "the notification", func() { <-vcpu }, m.stop)
		})
	}
}

// TestTransportBARMoveWinsOverFlood: moving BAR 0 stops the notifiers,
// which a flooded queue kept busy; the move returns, and the queue is
// served again afterwards.
func TestTransportBARMoveWinsOverFlood(t *testing.T) {
	r, m := consoleRig(t, true)
	tx := m.d
	m.flood([]byte("z"))
	defer m.stop()
	kick(r, true)
	waitFor(t, "transmitq to be served", func() bool { return tx.usedIdx() > 2*consoleQueueSize })
	within(t, "BAR move"+keptFull, func() { r.cfgWrite(devices.PCIBAR0, 4, testBARBase+BARSize) }, m.stop)
	if _, ok := r.ioev.fd(testBARBase + BARSize + pciNotifyOff + pciNotifyMultiplier); !ok {
		t.Fatal("no ioeventfd at the new BAR address")
	}
	// The device still runs, now from the notifier at the new address.
	before := tx.usedIdx()
	waitFor(t, "transmitq to be served after the move", func() bool { return tx.usedIdx()-before > 2*consoleQueueSize })
	m.stop()
}

// TestTransportDecodingOffWinsOverFlood: turning memory decoding off
// with a flooded queue returns, and so does turning it on again. Without
// the BAR the queue has no ioeventfd, and the move's look at every queue
// served it on the writer's thread, a vCPU holding the function's
// configuration lock, for as long as the guest refilled it (an audit's
// note).
func TestTransportDecodingOffWinsOverFlood(t *testing.T) {
	r, m := consoleRig(t, true)
	tx := m.d
	m.flood([]byte("d"))
	defer m.stop()
	kick(r, true)
	waitFor(t, "transmitq to be served", func() bool { return tx.usedIdx() > 2*consoleQueueSize })
	within(t, "decoding off"+keptFull, func() { r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMaster) }, m.stop)
	before := tx.usedIdx()
	waitFor(t, "transmitq to be served with decoding off", func() bool { return tx.usedIdx()-before > 2*consoleQueueSize })
	within(t, "decoding on"+keptFull, func() { r.cfgWrite(devices.PCICommand, 2, devices.PCICommandMemory|devices.PCICommandMaster) }, m.stop)
	if _, ok := r.ioev.fd(testBARBase + pciNotifyOff + pciNotifyMultiplier); !ok {
		t.Fatal("no ioeventfd once decoding is back")
	}
	before = tx.usedIdx()
	waitFor(t, "transmitq to be served after decoding is back", func() bool { return tx.usedIdx()-before > 2*consoleQueueSize })
	m.stop()
}

// TestTransportWarningsCounted: the transport logs a burst about a guest
// writing where no queue's notify address is, then keeps counting (the
// old cap went silent after ten and forgot the rest).
func TestTransportWarningsCounted(t *testing.T) {
	var set guestlog.Set
	mem := make(sliceMemory, 1<<20)
	tr, err := NewTransport(newFakeDevice(8), TransportConfig{Name: "virtio-fake", Memory: mem, MSI: &fakeMSI{}, GuestLog: &set})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	const writes = 5000
	for range writes {
		pciNotifyDevice{tr}.Write(0x100, []byte{0, 0})
	}
	want := []guestlog.Count{{Device: "virtio-fake", Kind: "notify_offset", N: writes}}
	if got := set.Counts(); !slices.Equal(got, want) {
		t.Errorf("counts %v, want %v", got, want)
	}
}
