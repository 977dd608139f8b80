package virtio

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sockTap is one end of a socketpair that keeps packet boundaries like
// a tap, recording the offloads the device sets.
type sockTap struct {
	*os.File
	offloads atomic.Uint64 // the last SetOffload flags, +1 (0: never set)
	// offloadErr and attachErr, when set, are what SetOffload and an
	// attaching EnableQueue fail with (a tap the host deleted: EBADFD).
	offloadErr, attachErr error
	queue                 atomic.Int32 // the last EnableQueue: 0 none, tapAttached, tapDetached
	iovs                  []unix.Iovec
}

func (s *sockTap) WriteFrame(bufs [][]byte) error { return writeFrame(s.File, bufs, &s.iovs) }

const (
	tapAttached = 1
	tapDetached = 2
)

func (s *sockTap) EnableQueue(on bool) error {
	if on && s.attachErr != nil {
		return s.attachErr
	}
	s.queue.Store(tapDetached)
	if on {
		s.queue.Store(tapAttached)
	}
	return nil
}

// mustNewNet returns a device on taps, one queue pair each.
func mustNewNet(t testing.TB, tap NetTap, mac net.HardwareAddr, offload bool, more ...NetTap) *Net {
	t.Helper()
	n, err := NewNet(append([]NetTap{tap}, more...), mac, offload)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (s *sockTap) SetOffload(flags uint) error {
	if s.offloadErr != nil {
		return s.offloadErr
	}
	s.offloads.Store(uint64(flags) + 1)
	return nil
}

// fakeTap returns the device's end of a fake tap and the test's (the
// host network's) end.
func fakeTap(t *testing.T) (dev *sockTap, host *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	dev, host = &sockTap{File: os.NewFile(uintptr(fds[0]), "tap-dev")}, os.NewFile(uintptr(fds[1]), "tap-host")
	t.Cleanup(func() { host.Close() })
	return dev, host
}

// waitTapDrained waits until the device has read every frame written to
// its end of the fake tap (nothing left in the socket's receive queue):
// a test that needs a frame "read, then held" must not guess how long
// the receive goroutine takes to get there on a loaded host.
func waitTapDrained(t *testing.T, tap *sockTap) {
	t.Helper()
	rc, err := tap.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var queued int
		var ioctlErr error
		if err := rc.Control(func(fd uintptr) { queued, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
			t.Fatal(err)
		}
		if ioctlErr != nil {
			t.Fatalf("SIOCINQ: %v", ioctlErr)
		}
		if queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the device has not read %d queued bytes from the tap in 10 s", queued)
		}
		time.Sleep(time.Millisecond)
	}
}

// testNetFeatures are the features tests negotiate: all but EVENT_IDX,
// whose used_event the test driver would have to write while the receive
// goroutine reads it (the queue tests cover EVENT_IDX).
func testNetFeatures(n *Net) uint64 {
	return n.Features()&^FeatureRingEventIdx | FeatureVersion1
}

type netEnv struct {
	n      *Net
	rx, tx *testDriver
	irq    *testIRQ
	host   *os.File
	tap    *sockTap
}

func newNetEnv(t *testing.T, offload bool) *netEnv {
	t.Helper()
	e := newInactiveNetEnv(t, offload)
	e.activate(t)
	return e
}

// newInactiveNetEnv is newNetEnv before the driver activates the device.
func newInactiveNetEnv(t *testing.T, offload bool) *netEnv {
	t.Helper()
	dev, host := fakeTap(t)
	mac := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	n := mustNewNet(t, dev, mac, offload)
	t.Cleanup(func() { n.Close() })
	rx := newTestDriver(t, netQueueSize)
	tx := &testDriver{t: t, mem: rx.mem, q: NewQueue(netQueueSize), size: netQueueSize,
		desc: 0x200000, avail: 0x202000, used: 0x203000, heap: 0x300000}
	tx.q.SetAddresses(tx.desc, tx.avail, tx.used)
	if err := tx.q.SetReady(true); err != nil {
		t.Fatal(err)
	}
	return &netEnv{n: n, rx: rx, tx: tx, irq: newTestIRQ(), host: host, tap: dev}
}

func (e *netEnv) activate(t *testing.T) {
	t.Helper()
	if err := e.n.Activate(e.rx.mem, testNetFeatures(e.n), []*Queue{e.rx.q, e.tx.q}, e.irq); err != nil {
		t.Fatal(err)
	}
}

// frame returns a header-prefixed Ethernet frame of size bytes (header
// included), as the tap carries it.
func frame(size int, seed byte) []byte {
	p := make([]byte, size)
	for i := NetHdrLen; i < size; i++ {
		p[i] = seed + byte(i)
	}
	return p
}

// waitIRQ waits for an interrupt on queue q.
func waitIRQ(t *testing.T, irq *testIRQ, q int) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case got := <-irq.ch:
			if got == q {
				return
			}
		case <-timeout:
			t.Fatalf("no interrupt on queue %d", q)
		}
	}
}

func TestNetConfig(t *testing.T) {
	dev, _ := fakeTap(t)
	n := mustNewNet(t, dev, net.HardwareAddr{2, 0, 0, 0, 0, 1}, false)
	defer n.Close()
	cfg := make([]byte, 8)
	n.ReadConfig(0, cfg)
	if !bytes.Equal(cfg, []byte{2, 0, 0, 0, 0, 1, netSLinkUp, 0}) {
		t.Errorf("config % x", cfg)
	}
	if n.Features() != RingFeatures|netFMAC|netFStatus || n.Type() != IDNet || len(n.QueueSizes()) != 2 {
		t.Errorf("identity %#x %d %v", n.Features(), n.Type(), n.QueueSizes())
	}
	dev2, _ := fakeTap(t)
	r := mustNewNet(t, dev2, nil, true)
	defer r.Close()
	if m := r.MAC(); len(m) != 6 || m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("random MAC %v not unicast and locally administered", m)
	}
}

func TestNetTransmit(t *testing.T) {
	e := newNetEnv(t, false)
	f := frame(NetHdrLen+60, 1)
	bad := append([]byte{}, f[:NetHdrLen]...)
	bad[0], bad[1] = 1, 4 // NEEDS_CSUM, GSO_TCPV6: not negotiated, must not reach the tap
	e.tx.add(rd(bad), rd(f[NetHdrLen:]))
	head, _ := e.tx.add(rd(f[:NetHdrLen]), rd(f[NetHdrLen:40]), rd(f[40:]))
	e.tx.add(rd(make([]byte, 4))) // shorter than the header: dropped
	if err := e.n.Notify(1); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2048)
	m, err := e.host.Read(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:m], f) {
		t.Errorf("tap got % x\nwant % x", got[:m], f)
	}
	e.tx.mustUsed()
	if id, n := e.tx.mustUsed(); id != uint32(head) || n != 0 {
		t.Errorf("used %d/%d", id, n)
	}
	e.tx.mustUsed()
	// One 60-byte frame went out; two malformed ones were dropped.
	if s := e.n.Stats(); s != (NetStats{TxPackets: 1, TxBytes: 60, TxDropped: 2, TxInvalid: 2}) {
		t.Errorf("counters %+v", s)
	}
	if e.irq.count(1) != 1 {
		t.Errorf("%d transmit interrupts", e.irq.count(1))
	}
	if got := e.tap.offloads.Load(); got != 1 {
		t.Errorf("tap offloads %#x+1 without offload features, want 0", got-1)
	}
}

// tcpFrame returns a header-prefixed frame of frameLen bytes after the
// header, with hdr put in front.
func tcpFrame(hdr netHdr, frameLen int, seed byte) []byte {
	p := frame(NetHdrLen+frameLen, seed)
	hdr.put(p, 0)
	return p
}

// TestNetTransmitOffloads: with CSUM and HOST_TSO negotiated, the
// guest's header reaches the tap as the guest wrote it (num_buffers
// zeroed), and every header that breaks a rule is dropped and counted.
func TestNetTransmitOffloads(t *testing.T) {
	e := newNetEnv(t, true)
	tso := netHdr{flags: netHdrFNeedsCsum, gsoType: netGSOTCPv4, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	good := tcpFrame(tso, 30000, 1)
	good[netNumBuffersOff] = 7 // the driver's garbage: zeroed on the way
	e.tx.add(rd(good[:NetHdrLen]), rd(good[NetHdrLen:]))
	for _, h := range []netHdr{
		{flags: 4}, // RSC_INFO: receive only
		{flags: netHdrFNeedsCsum, csumStart: 100, csumOffset: 0},                 // checksum beyond 60 bytes
		{gsoType: netGSOTCPv4, gsoSize: 10},                                      // TSO without NEEDS_CSUM
		{flags: netHdrFNeedsCsum, gsoType: 3, gsoSize: 10},                       // UFO: not offered
		{flags: netHdrFNeedsCsum, gsoType: netGSOTCPv6},                          // gso_size 0
		{flags: netHdrFNeedsCsum, gsoType: netGSOTCPv6, gsoSize: 10, hdrLen: 61}, // hdr_len beyond the frame
	} {
		p := tcpFrame(h, 60, 2)
		e.tx.add(rd(p))
	}
	if err := e.n.Notify(1); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, netMaxPacket)
	m, err := e.host.Read(got)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{}, good...)
	want[netNumBuffersOff] = 0
	if !bytes.Equal(got[:m], want) {
		t.Errorf("tap got %d bytes, header % x; want %d, % x", m, got[:NetHdrLen], len(want), want[:NetHdrLen])
	}
	if tx := e.n.Stats().TxDropped; tx != 6 {
		t.Errorf("%d transmit drops, want 6", tx)
	}
	if got := e.tap.offloads.Load() - 1; got != unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6|unix.TUN_F_TSO_ECN {
		t.Errorf("tap offloads %#x, want all four", got)
	}
}

// TestNetReceiveMergeable: a 64 KiB segment from the tap spans several
// mergeable buffers, num_buffers says how many, and a frame that finds
// too few buffers waits for more instead of being dropped.
func TestNetReceiveMergeable(t *testing.T) {
	e := newNetEnv(t, true)
	const bufSize = 4096
	tso := netHdr{flags: netHdrFNeedsCsum, gsoType: netGSOTCPv6, hdrLen: 86, gsoSize: 1428, csumStart: 54, csumOffset: 16}
	f := tcpFrame(tso, 65000, 5)
	var addrs []uint64
	post := func(k int) {
		for range k {
			_, a := e.rx.add(wr(bufSize))
			addrs = append(addrs, a[0])
		}
		if err := e.n.Notify(0); err != nil {
			t.Fatal(err)
		}
	}
	post(5) // too few: the frame waits
	if _, err := e.host.Write(f); err != nil {
		t.Fatal(err)
	}
	waitTapDrained(t, e.tap)
	e.rx.noUsed()
	need := (len(f) + bufSize - 1) / bufSize
	post(need - 5 + 2) // enough, and two to spare
	waitIRQ(t, e.irq, 0)
	var got []byte
	for i := range need {
		id, n, ok := e.rx.popUsed()
		if !ok {
			t.Fatalf("%d of %d buffers used", i, need)
		}
		if a := binary.LittleEndian.Uint64(e.rx.mem[e.rx.desc+16*uint64(id):]); a != addrs[i] {
			t.Fatalf("buffer %d used out of order", i)
		}
		if i < need-1 && n != bufSize {
			t.Fatalf("buffer %d: %d bytes used, want %d", i, n, bufSize)
		}
		got = append(got, e.rx.mem[addrs[i]:addrs[i]+uint64(n)]...)
	}
	e.rx.noUsed()
	hdr := parseNetHdr(got)
	if nb := binary.LittleEndian.Uint16(got[netNumBuffersOff:]); nb != uint16(need) {
		t.Errorf("num_buffers %d, want %d", nb, need)
	}
	if hdr != tso {
		t.Errorf("header %+v, want %+v", hdr, tso)
	}
	if !bytes.Equal(got[NetHdrLen:], f[NetHdrLen:]) {
		t.Errorf("payload of %d bytes differs from the %d sent", len(got)-NetHdrLen, len(f)-NetHdrLen)
	}
	if rx := e.n.Stats().RxDropped; rx != 0 {
		t.Errorf("%d receive drops", rx)
	}

	// A GSO frame the guest did not accept (UDP) is dropped; the next
	// one arrives in the spare buffers.
	e.host.Write(tcpFrame(netHdr{flags: netHdrFNeedsCsum, gsoType: 3, gsoSize: 100}, 500, 1))
	small := frame(NetHdrLen+100, 9)
	e.host.Write(small)
	waitIRQ(t, e.irq, 0)
	id, n, ok := e.rx.popUsed()
	if !ok || n != uint32(len(small)) {
		t.Fatalf("small frame: used %d/%d %v", id, n, ok)
	}
	if rx := e.n.Stats().RxDropped; rx != 1 {
		t.Errorf("%d receive drops, want 1", rx)
	}
}

// receiveWhole writes frame f into the tap and checks that the device
// hands it back whole in the receive chain at head.
func (e *netEnv) receiveWhole(t *testing.T, f []byte, head uint16) {
	t.Helper()
	if _, err := e.host.Write(f); err != nil {
		t.Fatal(err)
	}
	waitIRQ(t, e.irq, 0)
	id, n := e.rx.mustUsed()
	if id != uint32(head) || n != uint32(len(f)) {
		t.Fatalf("used %d/%d, want %d/%d", id, n, head, len(f))
	}
}

// TestNetReceiveInterruptPerBatch: frames waiting in the tap when the
// device comes up are read in one batch and signalled with one
// interrupt, which comes after the last of them is in the used ring.
func TestNetReceiveInterruptPerBatch(t *testing.T) {
	e := newInactiveNetEnv(t, false)
	const frames = 8
	addrs := make([]uint64, frames)
	for i := range frames {
		_, a := e.rx.add(wr(NetHdrLen + 1514))
		addrs[i] = a[0]
	}
	for i := range frames {
		if _, err := e.host.Write(frame(NetHdrLen+100, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	e.activate(t)
	waitIRQ(t, e.irq, 0)
	for i := range frames {
		if _, n := e.rx.mustUsed(); n != NetHdrLen+100 {
			t.Errorf("frame %d: used length %d", i, n)
		}
		if want := frame(NetHdrLen+100, byte(i)); !bytes.Equal(e.rx.mem[addrs[i]+NetHdrLen:addrs[i]+NetHdrLen+100], want[NetHdrLen:]) {
			t.Errorf("frame %d differs", i)
		}
	}
	if n := e.irq.count(0); n != 1 {
		t.Errorf("%d receive interrupts for %d frames read in one batch, want 1", n, frames)
	}
}

func TestNetReceive(t *testing.T) {
	e := newNetEnv(t, false)
	// A buffer first, then the frame.
	head, a := e.rx.add(wr(NetHdrLen), wr(1514))
	if err := e.n.Notify(0); err != nil {
		t.Fatal(err)
	}
	f := frame(NetHdrLen+100, 7)
	f[0] = 2 // DATA_VALID from the kernel: not negotiated, must not reach the guest
	e.receiveWhole(t, f, head)
	wantHdr := make([]byte, NetHdrLen)
	wantHdr[netNumBuffersOff] = 1
	if got := e.rx.mem[a[0] : a[0]+NetHdrLen]; !bytes.Equal(got, wantHdr) {
		t.Errorf("header % x", got)
	}
	if got := e.rx.mem[a[1] : a[1]+100]; !bytes.Equal(got, f[NetHdrLen:]) {
		t.Error("frame differs")
	}

	// A frame with no buffer posted waits for one, without spinning.
	f2 := frame(NetHdrLen+64, 9)
	e.host.Write(f2)
	waitTapDrained(t, e.tap)
	e.rx.noUsed()
	_, a = e.rx.add(wr(1526))
	if err := e.n.Notify(0); err != nil {
		t.Fatal(err)
	}
	waitIRQ(t, e.irq, 0)
	if _, n := e.rx.mustUsed(); n != uint32(len(f2)) || !bytes.Equal(e.rx.mem[a[0]+NetHdrLen:a[0]+uint64(len(f2))], f2[NetHdrLen:]) {
		t.Errorf("second frame: used len %d", n)
	}

	// A frame too big for the buffer is dropped; the buffer stays for
	// the next frame that fits.
	_, a = e.rx.add(wr(NetHdrLen + 20))
	e.n.Notify(0)
	e.host.Write(frame(NetHdrLen+21, 1))
	small := frame(NetHdrLen+20, 3)
	e.host.Write(small)
	waitIRQ(t, e.irq, 0)
	if _, n := e.rx.mustUsed(); n != uint32(len(small)) || !bytes.Equal(e.rx.mem[a[0]+NetHdrLen:a[0]+uint64(len(small))], small[NetHdrLen:]) {
		t.Errorf("small frame: used len %d", n)
	}
	// Three frames delivered (100, 64 and 20 bytes), one dropped.
	if s := e.n.Stats(); s != (NetStats{RxPackets: 3, RxBytes: 184, RxDropped: 1}) {
		t.Errorf("counters %+v", s)
	}
}

// TestNetReset: after Reset the receive goroutine leaves the queues
// alone, a new activation gets frames again, Close ends the goroutine.
func TestNetReset(t *testing.T) {
	e := newNetEnv(t, false)
	e.host.Write(frame(NetHdrLen+30, 1)) // read, then held waiting for a buffer
	waitTapDrained(t, e.tap)
	e.n.Reset()
	if err := e.n.Notify(1); err != nil {
		t.Errorf("Notify after Reset: %v", err)
	}
	e.rx.add(wr(1526))
	e.n.Notify(0)
	e.host.Write(frame(NetHdrLen+40, 2))
	time.Sleep(50 * time.Millisecond)
	e.rx.noUsed()

	// Activate again on fresh queues.
	rx := newTestDriver(t, netQueueSize)
	tx := newTestDriverAt(t, NewQueue(netQueueSize), netQueueSize, 0x200000, 0)
	tx.mem = rx.mem
	if err := e.n.Activate(rx.mem, 0, []*Queue{rx.q, tx.q}, e.irq); err != nil {
		t.Fatal(err)
	}
	_, a := rx.add(wr(1526))
	e.n.Notify(0)
	waitIRQ(t, e.irq, 0)
	// The frame read before the reset was dropped; the one that waited
	// in the tap arrives.
	if _, n := rx.mustUsed(); n != NetHdrLen+40 || rx.mem[a[0]+NetHdrLen] != 2+NetHdrLen {
		t.Errorf("after reactivation: used len %d", n)
	}

	done := make(chan error)
	go func() { done <- e.n.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	if err := e.n.Activate(rx.mem, 0, []*Queue{rx.q, tx.q}, e.irq); err == nil {
		t.Error("Activate after Close succeeded")
	}
}

// TestNetCloseWhileWaiting closes the device while its receive goroutine
// waits for a buffer.
func TestNetCloseWhileWaiting(t *testing.T) {
	e := newNetEnv(t, false)
	e.host.Write(frame(NetHdrLen+30, 1))
	waitTapDrained(t, e.tap)
	if err := e.n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestNetBrokenReceiveQueue: a malformed receive ring is reported to
// the transport when the receive goroutine finds it, without waiting for
// the guest to notify receiveq, and does not stop transmit.
func TestNetBrokenReceiveQueue(t *testing.T) {
	e := newNetEnv(t, false)
	e.rx.writeDesc(e.rx.desc, 0, 1<<40, 16, descFlagWrite, 0)
	e.rx.publish(0)
	e.host.Write(frame(NetHdrLen+30, 1))
	deadline := time.Now().Add(5 * time.Second)
	for len(e.irq.failures()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("broken receiveq never reported")
		}
		time.Sleep(time.Millisecond)
	}
	if err := e.n.Notify(0); err == nil {
		t.Error("Notify(0) on a broken receiveq succeeded")
	}
	e.tx.add(rd(frame(NetHdrLen+20, 0)))
	if err := e.n.Notify(1); err != nil {
		t.Fatal(err)
	}
	if m, err := e.host.Read(make([]byte, 100)); err != nil || m != NetHdrLen+20 {
		t.Errorf("transmit after broken receive: %d %v", m, err)
	}
}

// TestNetRaceNotify hammers Notify(0) while frames flow, for -race.
func TestNetRaceNotify(t *testing.T) {
	e := newNetEnv(t, false)
	const frames = 200
	go func() {
		for i := range frames {
			e.host.Write(frame(NetHdrLen+60, byte(i)))
		}
	}()
	got := 0
	posted := 0
	deadline := time.Now().Add(10 * time.Second)
	for got < frames {
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d frames", got, frames)
		}
		for posted-got < 16 {
			e.rx.add(wr(1526))
			posted++
		}
		e.n.Notify(0)
		for {
			_, n, ok := e.rx.popUsed()
			if !ok {
				break
			}
			if n != NetHdrLen+60 {
				t.Fatalf("frame %d: len %d", got, n)
			}
			got++
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestNetMultiqueue: with two queue pairs the device offers MQ and a
// control queue, starts on pair 0 with tap queue 1 detached, and after
// VQ_PAIRS_SET(2) receives and transmits on pair 1 through tap queue 1;
// malformed or unoffered commands are answered VIRTIO_NET_ERR.
// mqEnv is a device of two queue pairs, activated: d are the drivers
// of receiveq0, transmitq0, receiveq1, transmitq1 and the control queue,
// in one memory.
type mqEnv struct {
	n     *Net
	mem   testMem
	d     [5]*testDriver
	devs  [2]*sockTap
	hosts [2]*os.File
}

func newMQEnv(t *testing.T, irq Interrupt) *mqEnv {
	t.Helper()
	e := &mqEnv{mem: make(testMem, testMemSize)}
	e.devs[0], e.hosts[0] = fakeTap(t)
	e.devs[1], e.hosts[1] = fakeTap(t)
	e.n = mustNewNet(t, e.devs[0], net.HardwareAddr{2, 0, 0, 0, 0, 1}, false, e.devs[1])
	t.Cleanup(func() { e.n.Close() })
	// Five queues in one memory, 64 KiB apart.
	var qs []*Queue
	for i := range e.d {
		size := uint16(netQueueSize)
		if i == 4 {
			size = netCtrlQueueSize
		}
		e.d[i] = newTestDriverIn(t, e.mem, NewQueue(size), size, 0x10000*uint64(i+1), 0)
		e.d[i].heap = 0x100000 + 0x80000*uint64(i)
		qs = append(qs, e.d[i].q)
	}
	if err := e.n.Activate(e.mem, testNetFeatures(e.n), qs, irq); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestNetMultiqueue(t *testing.T) {
	irq := newTestIRQ()
	e := newMQEnv(t, irq)
	n, mem, d := e.n, e.mem, e.d
	dev0, dev1 := e.devs[0], e.devs[1]
	if f := n.Features(); f&(netFCtrlVQ|netFMQ) != netFCtrlVQ|netFMQ || len(n.QueueSizes()) != 5 {
		t.Fatalf("features %#x, %d queues", f, len(n.QueueSizes()))
	}
	cfg := make([]byte, 2)
	n.ReadConfig(8, cfg)
	if binary.LittleEndian.Uint16(cfg) != 2 {
		t.Errorf("max_virtqueue_pairs % x, want 2", cfg)
	}
	if dev0.queue.Load() != 0 || dev1.queue.Load() != tapDetached {
		t.Errorf("tap queues %d %d before VQ_PAIRS_SET, want pair 1's detached (%d), pair 0's untouched", dev0.queue.Load(), dev1.queue.Load(), tapDetached)
	}
	// A frame on transmitq1 before the driver enabled pair 1 (5.1.6.5.5)
	// is dropped as the guest's fault, and its chain goes back; the
	// tap queue never sees it (the first frame read from it below is
	// the one sent once the pair is enabled).
	d[3].add(rd(frame(NetHdrLen+40, 99)))
	if err := n.Notify(3); err != nil {
		t.Fatal(err)
	}
	if _, l := d[3].mustUsed(); l != 0 {
		t.Errorf("dropped frame: used length %d", l)
	}
	if s := n.Stats(); s.TxDropped != 1 || s.TxInvalid != 1 || s.TxPackets != 0 {
		t.Errorf("frame on a disabled pair: counters %+v, want one invalid drop", s)
	}

	command := func(class, cmd byte, data []byte) byte {
		t.Helper()
		_, a := d[4].add(rd(append([]byte{class, cmd}, data...)), wr(1))
		if err := n.Notify(4); err != nil {
			t.Fatal(err)
		}
		d[4].mustUsed()
		return mem[a[1]]
	}
	for _, bad := range []struct {
		class, cmd byte
		data       []byte
	}{
		{netCtrlMQ, netCtrlMQVQPairsSet, []byte{3, 0}}, // more pairs than offered
		{netCtrlMQ, netCtrlMQVQPairsSet, []byte{0, 0}},
		{netCtrlMQ, netCtrlMQVQPairsSet, []byte{2}}, // short
		{netCtrlMQ, 1, []byte{2, 0}},                // RSS_CONFIG: not offered
		{0, 0, []byte{1}},                           // RX_PROMISC: not offered
	} {
		if ack := command(bad.class, bad.cmd, bad.data); ack != netCtrlErr {
			t.Errorf("command %d/%d % x: ack %d, want VIRTIO_NET_ERR", bad.class, bad.cmd, bad.data, ack)
		}
	}
	if dev1.queue.Load() != tapDetached {
		t.Fatal("tap queue 1 attached by a refused command")
	}
	if ack := command(netCtrlMQ, netCtrlMQVQPairsSet, []byte{2, 0}); ack != netCtrlOK {
		t.Fatalf("VQ_PAIRS_SET 2: ack %d", ack)
	}
	if dev1.queue.Load() != tapAttached {
		t.Error("tap queue 1 not attached after VQ_PAIRS_SET 2")
	}

	// Receive and transmit on each pair through its own tap queue.
	for i, host := range e.hosts {
		rx, tx := d[2*i], d[2*i+1]
		_, a := rx.add(wr(1526))
		n.Notify(2 * i)
		f := frame(NetHdrLen+50, byte(10*i))
		if _, err := host.Write(f); err != nil {
			t.Fatal(err)
		}
		waitIRQ(t, irq, 2*i)
		if _, l := rx.mustUsed(); l != uint32(len(f)) || !bytes.Equal(mem[a[0]+NetHdrLen:a[0]+uint64(len(f))], f[NetHdrLen:]) {
			t.Errorf("pair %d: received %d bytes, or other bytes", i, l)
		}
		out := frame(NetHdrLen+40, byte(10*i+1))
		tx.add(rd(out))
		if err := n.Notify(2*i + 1); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 2048)
		m, err := host.Read(got)
		if err != nil || !bytes.Equal(got[:m], out) {
			t.Errorf("pair %d: tap queue got % x (%v), want % x", i, got[:m], err, out)
		}
	}

	// Reset goes back to one pair.
	n.Reset()
	if dev1.queue.Load() != tapDetached {
		t.Error("tap queue 1 still attached after Reset")
	}
}

// TestNetReceiveManyDescriptors: a receive buffer of more descriptors
// than one readv takes (IOV_MAX) still gets its frame, through the
// bounce buffer, rather than breaking the read.
func TestNetReceiveManyDescriptors(t *testing.T) {
	e := newNetEnv(t, true)
	const descs, each = 1100, 64
	table := e.rx.alloc(16 * descs)
	buf := e.rx.alloc(descs * each)
	for i := range descs {
		flags := uint16(descFlagWrite)
		if i < descs-1 {
			flags |= descFlagNext
		}
		e.rx.writeDesc(table, uint16(i), buf+uint64(i*each), each, flags, uint16(i+1))
	}
	head := e.rx.nextDesc % e.rx.size
	e.rx.nextDesc++
	e.rx.writeDesc(e.rx.desc, head, table, 16*descs, descFlagIndirect, 0)
	e.rx.publish(head)
	if err := e.n.Notify(0); err != nil {
		t.Fatal(err)
	}
	f := frame(NetHdrLen+60000, 5)
	e.receiveWhole(t, f, head)
	if got := e.rx.mem[buf+netNumBuffersOff]; got != 1 {
		t.Errorf("num_buffers %d, want 1", got)
	}
	if !bytes.Equal(e.rx.mem[buf+NetHdrLen:buf+uint64(len(f))], f[NetHdrLen:]) {
		t.Error("frame differs")
	}
	if rx := e.n.Stats().RxDropped; rx != 0 {
		t.Errorf("%d receive drops", rx)
	}
}

// refillIRQ is a driver that keeps one queue full: at each of that
// queue's interrupts it makes every chain the device used available
// again. It runs on the goroutine that serves the queue.
type refillIRQ struct {
	*testIRQ
	queue int
	d     *testDriver
}

func (r *refillIRQ) Queue(q int) error {
	if q == r.queue {
		for {
			id, _, ok := r.d.popUsed()
			if !ok {
				break
			}
			r.d.publish(uint16(id))
		}
	}
	return r.testIRQ.Queue(q)
}

// fillRing makes d's whole ring available, each chain made by bufs.
func fillRing(d *testDriver, bufs ...testBuf) {
	for range d.size {
		d.add(bufs...)
	}
}

// resetWhileFlooded serves queue (of e.n) in a goroutine while refill
// keeps it full, resets the device once the flood is under way, and
// checks that both the Reset and the Notify end: a driver that keeps a
// ring full must not keep Reset (or usePairs) waiting for the lock the
// queue is served under.
func resetWhileFlooded(t *testing.T, n *Net, queue int, irq *refillIRQ) {
	t.Helper()
	notified := make(chan error, 1)
	go func() { notified <- n.Notify(queue) }()
	// Several rounds of refills: the ring has been full for a while.
	deadline := time.Now().Add(10 * time.Second)
	for irq.count(queue) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d interrupts on queue %d in 10 s", irq.count(queue), queue)
		}
		time.Sleep(time.Millisecond)
	}
	reset := make(chan struct{})
	go func() { n.Reset(); close(reset) }()
	select {
	case <-reset:
	case <-time.After(10 * time.Second):
		t.Fatalf("Reset waits for a driver that keeps queue %d full", queue)
	}
	select {
	case err := <-notified:
		if err != nil {
			t.Errorf("Notify(%d): %v", queue, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Notify(%d) goes on serving after Reset", queue)
	}
}

// TestNetTransmitFlood: Reset wins over a driver that keeps transmitq
// full (of frames too short to send, so the tap never fills).
func TestNetTransmitFlood(t *testing.T) {
	e := newNetEnv(t, false)
	irq := &refillIRQ{testIRQ: newTestIRQ(), queue: 1, d: e.tx}
	if err := e.n.Activate(e.rx.mem, testNetFeatures(e.n), []*Queue{e.rx.q, e.tx.q}, irq); err != nil {
		t.Fatal(err)
	}
	fillRing(e.tx, rd(make([]byte, 4)))
	resetWhileFlooded(t, e.n, 1, irq)
}

// TestNetControlFlood: Reset wins over a driver that keeps the control
// queue full (of commands not offered, answered VIRTIO_NET_ERR).
func TestNetControlFlood(t *testing.T) {
	irq := &refillIRQ{testIRQ: newTestIRQ(), queue: 4}
	e := newMQEnv(t, irq)
	irq.d = e.d[4]
	fillRing(e.d[4], rd([]byte{0, 0, 1}), wr(1))
	resetWhileFlooded(t, e.n, 4, irq)
}

// TestNetTransmitManyDescriptors: a frame in more descriptors than one
// writev takes (IOV_MAX) is the guest's fault: dropped and counted as
// invalid, its chain returned, and the next frame goes out.
func TestNetTransmitManyDescriptors(t *testing.T) {
	e := newNetEnv(t, false)
	const descs, each = 1100, 16
	table := e.tx.alloc(16 * descs)
	buf := e.tx.alloc(descs * each)
	for i := range descs {
		flags := uint16(0)
		if i < descs-1 {
			flags = descFlagNext
		}
		e.tx.writeDesc(table, uint16(i), buf+uint64(i*each), each, flags, uint16(i+1))
	}
	head := e.tx.nextDesc % e.tx.size
	e.tx.nextDesc++
	e.tx.writeDesc(e.tx.desc, head, table, 16*descs, descFlagIndirect, 0)
	e.tx.publish(head)
	f := frame(NetHdrLen+60, 3)
	e.tx.add(rd(f))
	if err := e.n.Notify(1); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2048)
	m, err := e.host.Read(got)
	if err != nil || !bytes.Equal(got[:m], f) {
		t.Fatalf("tap got %d bytes (%v), want the %d-byte frame after the dropped one", m, err, len(f))
	}
	if id, _ := e.tx.mustUsed(); id != uint32(head) {
		t.Errorf("used chain %d, want the dropped one, %d", id, head)
	}
	if s := e.n.Stats(); s != (NetStats{TxPackets: 1, TxBytes: 60, TxDropped: 1, TxInvalid: 1}) {
		t.Errorf("counters %+v, want one frame sent and one invalid drop", s)
	}
}

// TestNetCloseWhileTransmitting: Close ends a transmit that waits for
// room in a tap nobody reads, instead of waiting for it.
func TestNetCloseWhileTransmitting(t *testing.T) {
	e := newNetEnv(t, false)
	rc, err := e.tap.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096) })
	// Far more than the socket takes: the transmit ends up waiting for
	// room that never comes.
	for range 64 {
		e.tx.add(rd(frame(NetHdrLen+1500, 1)))
	}
	notified := make(chan error, 1)
	go func() { notified <- e.n.Notify(1) }()
	var closeErr error
	within(t, "Close, with a transmit blocked on the tap", func() { closeErr = e.n.Close() }, nil)
	if closeErr != nil {
		t.Error(closeErr)
	}
	within(t, "the transmit, after Close", func() { <-notified }, nil)
}

// TestNetStopWhileTransmitting: the transport's Close (govmm's stop)
// returns while the notifier serving transmitq waits for room in a tap
// nobody reads: the write gives up after tapWriteWait, the aborted
// queue yields no more frames, and the notifier Close waits for ends.
func TestNetStopWhileTransmitting(t *testing.T) {
	dev, _ := fakeTap(t)
	rc, err := dev.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096) })
	n := mustNewNet(t, dev, net.HardwareAddr{2, 0, 0, 0, 0, 1}, false)
	// Guest RAM outside the Go heap, as in TestTransportPollServesEverything.
	raw, err := unix.Mmap(-1, 0, testMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(raw) })
	mem := testMem(raw)
	r := newRigConfig(t, n, TransportConfig{Memory: mem}, true)
	r.enableMSIX()
	r.negotiate(FeatureVersion1 | RingFeatures)
	r.setupQueue(0, netQueueSize, 1)
	r.setupQueue(1, netQueueSize, 2)
	r.write(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	tx := &testDriver{t: t, mem: mem, size: netQueueSize, desc: 0x20000, avail: 0x21000, used: 0x22000, heap: 0x100000}
	// Far more than the socket takes.
	for range 64 {
		tx.add(rd(frame(NetHdrLen+1500, 1)))
	}
	efd, ok := r.ioev.fd(testBARBase + pciNotifyOff + pciNotifyMultiplier)
	if !ok {
		t.Fatal("no ioeventfd for transmitq")
	}
	unix.Write(efd, binary.LittleEndian.AppendUint64(nil, 1))
	// Wait until the notifier is stuck: frames sent, and the rest wait.
	waitFor(t, "a frame sent", func() bool { return n.Stats().TxPackets > 0 })
	var closeErr error
	within(t, "the transport's Close, with a transmit blocked on the tap", func() { closeErr = r.tr.Close() }, nil)
	if closeErr != nil {
		t.Error(closeErr)
	}
	if s := n.Stats(); s.TxPackets+s.TxDropped >= 64 {
		t.Errorf("counters %+v: every frame was served, the stop did not cut transmit short", s)
	}
}

// TestNetNotifyDelay: a transmitq notification that found two small
// frames or more asks the next one to wait (a guest streaming); one that
// found a single frame does not, nor two TSO-sized ones, nor does a
// receiveq or an out-of-range queue. NetTxWaitAll waits for large frames
// too, NetTxWaitOff never.
func TestNetNotifyDelay(t *testing.T) {
	e := newNetEnv(t, false)
	f := frame(NetHdrLen+60, 1)
	notify := func(frames int) time.Duration {
		t.Helper()
		return notifyFrames(t, e, f, frames)
	}
	if d := e.n.NotifyDelay(1); d != 0 {
		t.Errorf("before any frame: delay %v, want 0", d)
	}
	if d := notify(1); d != 0 {
		t.Errorf("after one frame: delay %v, want 0", d)
	}
	if d := notify(2); d != netTxDefer {
		t.Errorf("after two frames: delay %v, want %v", d, netTxDefer)
	}
	big := frame(NetHdrLen+netTxWaitFrame, 2)
	if d := notifyFrames(t, e, big, 2); d != 0 {
		t.Errorf("after two frames of %d bytes: delay %v, want 0", len(big), d)
	}
	if d := e.n.NotifyDelay(0); d != 0 {
		t.Errorf("receiveq: delay %v, want 0", d)
	}
	for _, q := range []int{-1, 2, 99} {
		if d := e.n.NotifyDelay(q); d != 0 {
			t.Errorf("queue %d: delay %v, want 0", q, d)
		}
	}
	if d := notify(1); d != 0 {
		t.Errorf("after one frame again: delay %v, want 0", d)
	}
	// A reset forgets the streaming: the next driver has sent nothing.
	notify(2)
	e.n.Reset()
	if d := e.n.NotifyDelay(1); d != 0 {
		t.Errorf("after a reset: delay %v, want 0", d)
	}
}

// TestNetNotifyDelayModes: which streams each NetTxWait waits for.
func TestNetNotifyDelayModes(t *testing.T) {
	small, big := frame(NetHdrLen+60, 1), frame(NetHdrLen+netTxWaitFrame, 2)
	for _, c := range []struct {
		mode       NetTxWait
		small, big time.Duration // after two frames of each size
	}{
		{NetTxWaitSmall, netTxDefer, 0},
		{NetTxWaitAll, netTxDefer, netTxDefer},
		{NetTxWaitOff, 0, 0},
	} {
		e := newNetEnv(t, false)
		e.n.SetTxWait(c.mode)
		if d := notifyFrames(t, e, small, 2); d != c.small {
			t.Errorf("mode %v, two small frames: delay %v, want %v", c.mode, d, c.small)
		}
		if d := notifyFrames(t, e, big, 2); d != c.big {
			t.Errorf("mode %v, two frames of %d bytes: delay %v, want %v", c.mode, len(big), d, c.big)
		}
	}
}

// notifyFrames queues frames copies of f on transmitq, notifies it, and
// returns the delay the next notification would get.
func notifyFrames(t *testing.T, e *netEnv, f []byte, frames int) time.Duration {
	t.Helper()
	for range frames {
		e.tx.add(rd(f[:NetHdrLen]), rd(f[NetHdrLen:]))
	}
	if err := e.n.Notify(1); err != nil {
		t.Fatal(err)
	}
	for range frames {
		e.tx.mustUsed()
	}
	return e.n.NotifyDelay(1)
}

// A tap that refuses its offloads (the host deleted it: EBADFD) does not
// keep the device from activating: failing it left the control queue
// unserved, and Linux's probe spun for ever on VQ_PAIRS_SET (an audit:
// a guest reboot after the host deleted a multiqueue tap hung at boot
// with a vCPU at 100%). The device serves its queues.
func TestNetActivatesWhenTheTapRefusesOffloads(t *testing.T) {
	e := newInactiveNetEnv(t, true)
	e.tap.offloadErr = unix.EBADFD
	e.activate(t)
	f := frame(NetHdrLen+60, 3)
	e.tx.add(rd(f[:NetHdrLen]), rd(f[NetHdrLen:]))
	if err := e.n.Notify(1); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2048)
	if m, err := e.host.Read(got); err != nil || !bytes.Equal(got[:m], f) {
		t.Fatalf("tap got %d bytes (%v), want the frame", m, err)
	}
	e.tx.mustUsed()
}

// While the VM is paused the receive goroutine fills no receive buffer,
// publishes nothing and raises no interrupt, though it holds buffers and
// the tap has frames (an audit saw 43 frames land in a stopped VM); after
// Resume the frames come. A goroutine that had not stopped reads a frame
// from the tap within microseconds: 100 ms without one is the check.
func TestNetPauseStopsReceive(t *testing.T) {
	e := newNetEnv(t, false)
	for range 8 {
		e.rx.add(wr(1526))
	}
	if err := e.n.Notify(0); err != nil {
		t.Fatal(err)
	}
	e.host.Write(frame(NetHdrLen+60, 1))
	waitIRQ(t, e.irq, 0)
	e.rx.mustUsed()

	e.n.Pause()
	irqs := e.irq.count(0)
	for i := range 3 {
		e.host.Write(frame(NetHdrLen+60, byte(2+i)))
	}
	time.Sleep(100 * time.Millisecond)
	e.rx.noUsed()
	if n := e.irq.count(0); n != irqs {
		t.Errorf("%d receive interrupts while paused", n-irqs)
	}
	e.n.Resume()
	deadline := time.Now().Add(10 * time.Second)
	for got := 0; got < 3; {
		if _, _, ok := e.rx.popUsed(); ok {
			got++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 frames received after Resume", got)
		}
		time.Sleep(time.Millisecond)
	}
}

// VQ_PAIRS_SET whose tap queue will not attach (the host deleted the tap)
// is answered VIRTIO_NET_ERR and leaves one pair in use, as the driver
// then assumes; it was answered OK, and the guest's frames on the pair
// counted as its own fault (an audit).
func TestNetPairsSetTapFailure(t *testing.T) {
	e := newMQEnv(t, newTestIRQ())
	e.devs[1].attachErr = unix.EBADFD
	_, a := e.d[4].add(rd([]byte{netCtrlMQ, netCtrlMQVQPairsSet, 2, 0}), wr(1))
	if err := e.n.Notify(4); err != nil {
		t.Fatal(err)
	}
	e.d[4].mustUsed()
	if ack := e.mem[a[1]]; ack != netCtrlErr {
		t.Errorf("ack %d, want VIRTIO_NET_ERR", ack)
	}
	if e.n.inUse != 1 || e.n.pairs[1].active {
		t.Errorf("%d pairs in use, pair 1 active %v; want 1, false", e.n.inUse, e.n.pairs[1].active)
	}
}
