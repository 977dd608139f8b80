package virtio

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// ctrlCommand makes one control command available on e's control queue
// in the buffers bufs, notifies it, and returns the used element's
// length and the buffers' guest addresses.
func ctrlCommand(t *testing.T, e *mqEnv, bufs ...testBuf) (uint32, []uint64) {
	t.Helper()
	_, a := e.d[4].add(bufs...)
	if err := e.n.Notify(4); err != nil {
		t.Fatal(err)
	}
	_, l := e.d[4].mustUsed()
	return l, a
}

// TestNetCtrlAckFirstWritableByte: the ack is the first byte of the
// writable part, which the used length (1) covers, as QEMU writes it
// (virtio_net_handle_ctrl_iov: iov_from_buf(in_sg, in_num, 0, &status,
// 1), used length 1) and as virtio 1.3 lays it out (ack, then the
// command-specific result). A driver with a 2-byte writable part found
// its ack byte untouched and the ack one byte further on, outside the
// used length.
func TestNetCtrlAckFirstWritableByte(t *testing.T) {
	e := newMQEnv(t, newTestIRQ())
	for _, w := range []uint32{2, 8} {
		_, a := e.d[4].chain(rd([]byte{netCtrlMQ, netCtrlMQVQPairsSet, 2, 0}), wr(w))
		for i := range w {
			e.mem[a[1]+uint64(i)] = 0xaa
		}
		e.d[4].publish(uint16(e.d[4].nextDesc - 2))
		if err := e.n.Notify(4); err != nil {
			t.Fatal(err)
		}
		_, l := e.d[4].mustUsed()
		if got := e.mem[a[1]]; l != 1 || got != netCtrlOK {
			t.Errorf("writable part of %d bytes: used length %d, byte 0 %#x (% x); want 1, VIRTIO_NET_OK (0) at offset 0",
				w, l, got, e.mem[a[1]:a[1]+uint64(w)])
		}
	}
}

// TestNetCtrlSplitHeader: class, command and data each in a descriptor
// of their own still make one command.
func TestNetCtrlSplitHeader(t *testing.T) {
	e := newMQEnv(t, newTestIRQ())
	l, a := ctrlCommand(t, e, rd([]byte{netCtrlMQ}), rd([]byte{netCtrlMQVQPairsSet}), rd([]byte{2}), rd([]byte{0}), wr(1))
	if ack := e.mem[a[4]]; l != 1 || ack != netCtrlOK {
		t.Errorf("split VQ_PAIRS_SET 2: used %d ack %d", l, ack)
	}
	if e.n.inUse != 2 {
		t.Errorf("%d pairs in use, want 2", e.n.inUse)
	}
}

// TestNetCtrlMalformed: malformed control chains are answered (or
// returned) without breaking the device, and change nothing.
func TestNetCtrlMalformed(t *testing.T) {
	e := newMQEnv(t, newTestIRQ())
	cases := []struct {
		name string
		bufs []testBuf
	}{
		{"header in a writable descriptor", []testBuf{wr(4), wr(1)}},
		{"ack in a readable descriptor", []testBuf{rd([]byte{netCtrlMQ, 0, 2, 0}), rd([]byte{0})}},
		{"zero-length ack", []testBuf{rd([]byte{netCtrlMQ, 0, 2, 0}), wr(0)}},
		{"one descriptor", []testBuf{rd([]byte{netCtrlMQ, 0, 2, 0})}},
		{"0x8000 pairs", []testBuf{rd([]byte{netCtrlMQ, 0, 0, 0x80}), wr(1)}},
		{"0xffff pairs", []testBuf{rd([]byte{netCtrlMQ, 0, 0xff, 0xff}), wr(1)}},
		{"only a class", []testBuf{rd([]byte{netCtrlMQ}), wr(1)}},
		{"RX promisc", []testBuf{rd([]byte{0, 0, 1}), wr(1)}},
		{"MAC table huge counts", []testBuf{rd([]byte{1, 0, 0xff, 0xff, 0xff, 0xff}), wr(1)}},
		{"MAC_ADDR_SET", []testBuf{rd([]byte{1, 1, 2, 0, 0, 0, 0, 9}), wr(1)}},
		{"VLAN add", []testBuf{rd([]byte{2, 0, 1, 0}), wr(1)}},
		{"ANNOUNCE ack", []testBuf{rd([]byte{3, 0}), wr(1)}},
		{"GUEST_OFFLOADS_SET", []testBuf{rd([]byte{5, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), wr(1)}},
	}
	for _, c := range cases {
		l, a := ctrlCommand(t, e, c.bufs...)
		ackAt := -1 // the first writable byte, if any
		for i, b := range c.bufs {
			if b.write && b.n > 0 {
				ackAt = i
				break
			}
		}
		if ackAt >= 0 && (l != 1 || e.mem[a[ackAt]] != netCtrlErr) {
			t.Errorf("%s: used %d ack %d, want 1, VIRTIO_NET_ERR", c.name, l, e.mem[a[ackAt]])
		}
		if e.n.inUse != 1 || e.n.ctrlErr != nil {
			t.Errorf("%s: %d pairs in use, control error %v", c.name, e.n.inUse, e.n.ctrlErr)
		}
	}
	// The device still works.
	l, a := ctrlCommand(t, e, rd([]byte{netCtrlMQ, 0, 2, 0}), wr(1))
	if l != 1 || e.mem[a[1]] != netCtrlOK {
		t.Errorf("VQ_PAIRS_SET 2 after malformed commands: used %d ack %d", l, e.mem[a[1]])
	}
}

// TestNetCtrlPairsFlapWhileReceiving: once VQ_PAIRS_SET 1 is acked, no
// frame lands on receiveq2 (5.1.6.5.5), and pair 1 receives again after
// VQ_PAIRS_SET 2.
func TestNetCtrlPairsFlapWhileReceiving(t *testing.T) {
	irq := newTestIRQ()
	e := newMQEnv(t, irq)
	rx1 := e.d[2]
	for range 64 {
		rx1.add(wr(1526))
	}
	e.n.Notify(2)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f := frame(NetHdrLen+60, 1)
		for {
			select {
			case <-stop:
				return
			default:
			}
			e.hosts[1].Write(f)
			time.Sleep(50 * time.Microsecond)
		}
	}()
	defer func() { close(stop); <-done }()
	for i := range 20 {
		l, a := ctrlCommand(t, e, rd([]byte{netCtrlMQ, 0, 1, 0}), wr(1))
		if l != 1 || e.mem[a[1]] != netCtrlOK {
			t.Fatalf("round %d: VQ_PAIRS_SET 1: used %d ack %d", i, l, e.mem[a[1]])
		}
		before := rx1.usedIdx()
		time.Sleep(5 * time.Millisecond)
		if after := rx1.usedIdx(); after != before {
			t.Fatalf("round %d: %d frames delivered on receiveq2 after VQ_PAIRS_SET 1 was acked", i, after-before)
		}
		l, a = ctrlCommand(t, e, rd([]byte{netCtrlMQ, 0, 2, 0}), wr(1))
		if l != 1 || e.mem[a[1]] != netCtrlOK {
			t.Fatalf("round %d: VQ_PAIRS_SET 2: used %d ack %d", i, l, e.mem[a[1]])
		}
		// Recycle what pair 1 used.
		for {
			id, _, ok := rx1.popUsed()
			if !ok {
				break
			}
			rx1.publish(uint16(id))
		}
		e.n.Notify(2)
	}
	deadline := time.Now().Add(5 * time.Second)
	before := rx1.usedIdx()
	for rx1.usedIdx() == before {
		if time.Now().After(deadline) {
			t.Fatal("pair 1 receives nothing after VQ_PAIRS_SET 2")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestNetRenegotiateOffloads: the tap's offloads follow each
// negotiation, also to fewer features and to TSO without GUEST_CSUM.
func TestNetRenegotiateOffloads(t *testing.T) {
	e := newNetEnv(t, true)
	if got := e.tap.offloads.Load(); got == 0 || got == 1 {
		t.Fatalf("tap offloads %d after a full negotiation", got-1)
	}
	for _, f := range []uint64{
		FeatureVersion1,
		FeatureVersion1 | netFGuestTSO4 | netFGuestTSO6 | netFGuestECN, // TSO without GUEST_CSUM
		FeatureVersion1 | netFGuestCsum,
	} {
		e.n.Reset()
		e.rx.q.Reset()
		e.rx = newTestDriverIn(t, e.rx.mem, e.rx.q, netQueueSize, e.rx.desc, 0)
		if err := e.n.Activate(e.rx.mem, f, []*Queue{e.rx.q, e.tx.q}, e.irq); err != nil {
			t.Fatal(err)
		}
		if got, want := e.tap.offloads.Load()-1, uint64(tapOffloads(f)); got != want {
			t.Errorf("features %#x: tap offloads %#x, want %#x", f, got, want)
		}
	}
}

// FuzzNetCtrl drives the control queue of a two-pair device with
// arbitrary chains and features: no panic, the queue never breaks on a
// well-formed ring, every chain with a writable byte gets OK or ERR in
// its first writable byte with used length 1, and the pairs in use stay
// between 1 and 2.
func FuzzNetCtrl(f *testing.F) {
	f.Add(uint8(0xff), seedChain(false, sRd([]byte{netCtrlMQ, 0, 2, 0}), sWr(1)))
	f.Add(uint8(0xff), seedChain(true, sRd([]byte{netCtrlMQ}), sRd([]byte{0, 2}), sRd([]byte{0}), sWr(3)))
	f.Add(uint8(0), seedChain(false, sWr(4), sRd([]byte{netCtrlMQ, 0, 1, 0})))
	f.Fuzz(func(t *testing.T, feat uint8, in []byte) {
		e := newMQEnv(t, newTestIRQ())
		features := testNetFeatures(e.n)
		if feat&1 == 0 {
			features &^= netFMQ
		}
		if feat&2 == 0 {
			features &^= netFCtrlVQ
		}
		e.n.Reset()
		for i := range e.d {
			e.d[i] = newTestDriverIn(t, e.mem, e.d[i].q, e.d[i].size, 0x10000*uint64(i+1), 0)
			e.d[i].heap = 0x100000 + 0x80000*uint64(i)
		}
		var qs []*Queue
		for i := range e.d {
			qs = append(qs, e.d[i].q)
		}
		if err := e.n.Activate(e.mem, features, qs, newTestIRQ()); err != nil {
			t.Fatal(err)
		}
		d := e.d[4]
		chains, _ := fuzzChains(d, in, d.heap+0x80000, int(netCtrlQueueSize))
		for _, c := range chains {
			for _, b := range c.bufs {
				if b.write {
					for i := range b.n {
						e.mem[b.addr+uint64(i)] = 0xaa
					}
				}
			}
		}
		if err := e.n.Notify(4); err != nil {
			t.Fatalf("Notify: %v", err)
		}
		if features&netFCtrlVQ == 0 {
			if d.usedIdx() != 0 {
				t.Fatalf("control queue served without VIRTIO_NET_F_CTRL_VQ")
			}
			return
		}
		for _, c := range chains {
			id, l, ok := d.popUsed()
			if !ok {
				t.Fatalf("chain %d not used", c.head)
			}
			if uint16(id) != c.head {
				t.Fatalf("used %d, want %d", id, c.head)
			}
			wp := c.part(e.mem, true)
			if len(wp) == 0 {
				if l != 0 {
					t.Fatalf("chain without writable part: used %d", l)
				}
				continue
			}
			if l != 1 || (wp[0] != netCtrlOK && wp[0] != netCtrlErr) {
				t.Fatalf("used %d, ack %#x", l, wp[0])
			}
			for _, b := range wp[1:] {
				if b != 0xaa {
					t.Fatalf("device wrote past the ack: % x", wp)
				}
			}
		}
		if e.n.inUse < 1 || e.n.inUse > 2 {
			t.Fatalf("%d pairs in use", e.n.inUse)
		}
	})
}

// netRig is a two-pair Net on a transport, its control queue of
// ctrlSize entries (0: never set up), driven through the BAR.
func netRig(t *testing.T, ctrlSize uint16) (*rig, *Net, *testDriver, [2]*sockTap) {
	t.Helper()
	var devs [2]*sockTap
	devs[0], _ = fakeTap(t)
	devs[1], _ = fakeTap(t)
	n := mustNewNet(t, devs[0], nil, false, devs[1])
	mem := make(testMem, testMemSize)
	r := newRigWith(t, n, mem, false)
	r.negotiate(FeatureVersion1 | FeatureRingIndirect | netFMAC | netFStatus | netFCtrlVQ | netFMQ)
	for q := range 4 {
		r.setupQueue(q, netQueueSize, 0)
	}
	var ctrl *testDriver
	if ctrlSize > 0 {
		r.setupQueue(4, ctrlSize, 0)
		ctrl = &testDriver{t: t, mem: mem, size: ctrlSize, desc: 0x50000, avail: 0x51000, used: 0x52000, heap: 0x200000}
	}
	return r, n, ctrl, devs
}

func (r *rig) notifyQueue(q int) { r.write(pciNotifyOff+uint64(q)*pciNotifyMultiplier, 2, uint64(q)) }

// addIndirect publishes a command in one indirect descriptor (what a
// queue of one entry takes): readable cmd, then a 1-byte ack, whose
// guest address it returns.
func (d *testDriver) addIndirect(cmd []byte) uint64 {
	table, buf, ack := d.alloc(32), d.alloc(uint32(len(cmd))), d.alloc(1)
	copy(d.mem[buf:], cmd)
	d.writeDesc(table, 0, buf, uint32(len(cmd)), descFlagNext, 1)
	d.writeDesc(table, 1, ack, 1, descFlagWrite, 0)
	head := d.nextDesc % d.size
	d.nextDesc++
	d.writeDesc(d.desc, head, table, 32, descFlagIndirect, 0)
	d.publish(head)
	return ack
}

// TestNetCtrlThroughTransport: a control queue of one entry, notified
// before DRIVER_OK, while paused, after a reset; and a control queue
// never set up.
func TestNetCtrlThroughTransport(t *testing.T) {
	r, n, ctrl, devs := netRig(t, 1)
	a := []uint64{0, ctrl.addIndirect([]byte{netCtrlMQ, netCtrlMQVQPairsSet, 2, 0})}
	r.notifyQueue(4) // before DRIVER_OK: ignored
	if ctrl.usedIdx() != 0 {
		t.Fatal("control command served before DRIVER_OK")
	}
	r.write(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	if r.status()&StatusDriverOK == 0 {
		t.Fatalf("status %#x", r.status())
	}
	waitFor(t, "the command queued before DRIVER_OK", func() bool { return ctrl.usedIdx() == 1 })
	if ctrl.mustUsed(); r.tr.mem.(testMem)[a[1]] != netCtrlOK || devs[1].queue.Load() != tapAttached {
		t.Fatalf("VQ_PAIRS_SET 2 before DRIVER_OK: ack %d, tap queue %d", r.tr.mem.(testMem)[a[1]], devs[1].queue.Load())
	}

	// Paused: the command waits for the resume.
	r.tr.PauseQueues()
	r.tr.WaitNotifies()
	a[1] = ctrl.addIndirect([]byte{netCtrlMQ, netCtrlMQVQPairsSet, 1, 0})
	r.notifyQueue(4)
	if ctrl.usedIdx() != 1 || devs[1].queue.Load() != tapAttached {
		t.Fatal("control command served while paused")
	}
	r.tr.ResumeQueues()
	waitFor(t, "the command queued while paused", func() bool { return ctrl.usedIdx() == 2 })
	if ctrl.mustUsed(); r.tr.mem.(testMem)[a[1]] != netCtrlOK || devs[1].queue.Load() != tapDetached {
		t.Fatalf("VQ_PAIRS_SET 1 after resume: ack %d, tap queue %d", r.tr.mem.(testMem)[a[1]], devs[1].queue.Load())
	}
	if r.status()&StatusDeviceNeedsReset != 0 {
		t.Fatal("device needs reset")
	}

	// Reset, then a notification: nothing.
	r.write(ccDeviceStatus, 1, 0)
	ctrl.addIndirect([]byte{netCtrlMQ, netCtrlMQVQPairsSet, 2, 0})
	r.notifyQueue(4)
	if n.inUse != 1 || devs[1].queue.Load() != tapDetached {
		t.Fatalf("after reset: %d pairs, tap queue %d", n.inUse, devs[1].queue.Load())
	}

	// No control queue at all, MQ negotiated: notifications for it are
	// ignored, and pair 0 works.
	r2, n2, _, _ := netRig(t, 0)
	r2.write(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	r2.notifyQueue(4)
	if r2.status()&StatusDeviceNeedsReset != 0 || n2.inUse != 1 {
		t.Fatalf("no control queue: status %#x, %d pairs", r2.status(), n2.inUse)
	}
}

// TestNetBigPacketsWithoutMrgRxbuf: GUEST_TSO4 without MRG_RXBUF, as
// Linux's big_packets mode: a 64 KiB segment lands whole in one
// receive chain of a header descriptor and page-sized ones, num_buffers
// 1; a small frame after it takes the next chain.
func TestNetBigPacketsWithoutMrgRxbuf(t *testing.T) {
	e := newInactiveNetEnv(t, true)
	features := uint64(FeatureVersion1 | netFCsum | netFGuestCsum | netFGuestTSO4 | netFHostTSO4)
	if err := e.n.Activate(e.rx.mem, features, []*Queue{e.rx.q, e.tx.q}, e.irq); err != nil {
		t.Fatal(err)
	}
	if got := e.tap.offloads.Load() - 1; got != uint64(tapOffloads(features)) {
		t.Fatalf("tap offloads %#x", got)
	}
	big := func() (uint16, []uint64) {
		bufs := []testBuf{wr(NetHdrLen)}
		for range 17 {
			bufs = append(bufs, wr(4096))
		}
		return e.rx.add(bufs...)
	}
	h1, a1 := big()
	h2, _ := big()
	e.n.Notify(0)
	tso := netHdr{flags: netHdrFNeedsCsum, gsoType: netGSOTCPv4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	f := tcpFrame(tso, 65000, 3)
	e.receiveWhole(t, f, h1)
	var got []byte
	got = append(got, e.rx.mem[a1[0]:a1[0]+NetHdrLen]...)
	left := len(f) - NetHdrLen
	for _, a := range a1[1:] {
		k := min(left, 4096)
		got = append(got, e.rx.mem[a:a+uint64(k)]...)
		left -= k
	}
	if nb := binary.LittleEndian.Uint16(got[netNumBuffersOff:]); nb != 1 || parseNetHdr(got) != tso || !bytes.Equal(got[NetHdrLen:], f[NetHdrLen:]) {
		t.Errorf("num_buffers %d, header %+v, payload equal %v", nb, parseNetHdr(got), bytes.Equal(got[NetHdrLen:], f[NetHdrLen:]))
	}
	e.receiveWhole(t, frame(NetHdrLen+60, 4), h2)
	if s := e.n.Stats(); s.RxDropped != 0 || s.RxPackets != 2 {
		t.Errorf("stats %+v", s)
	}
}
