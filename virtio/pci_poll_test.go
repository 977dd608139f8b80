package virtio

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPollWindowAdapts(t *testing.T) {
	const us = time.Microsecond
	p := pollWindow{max: 64 * us}
	t0 := time.Unix(0, 0)
	wake := func(after time.Duration) time.Duration {
		p.started = t0
		p.woke(t0.Add(after), true)
		return p.window
	}
	// Wake-ups within max grow the window from pollStart, doubling, up
	// to max; one the window would have caught leaves it alone.
	for i, want := range []time.Duration{4 * us, 8 * us, 16 * us, 32 * us, 64 * us, 64 * us} {
		if got := wake(50 * us); got != want {
			t.Fatalf("grow step %d: window %v, want %v", i, got, want)
		}
	}
	if got := wake(10 * us); got != 64*us {
		t.Errorf("a caught wake-up changed the window to %v", got)
	}
	// Wake-ups later than max halve it.
	if got := wake(time.Millisecond); got != 32*us {
		t.Errorf("after a long idle: window %v, want 32us", got)
	}
	// A poll that found work (started zero) leaves it alone.
	p.started = time.Time{}
	p.woke(t0.Add(time.Hour), true)
	if p.window != 32*us {
		t.Errorf("window %v after a successful poll, want 32us", p.window)
	}
	// A preempted poll quarters it; wake-ups within max grow it again.
	p.preempted()
	if p.window != 8*us {
		t.Errorf("after a preempted poll: window %v, want 8us", p.window)
	}
	if got := wake(50 * us); got != 16*us {
		t.Errorf("a wake-up after a preempted poll: window %v, want 16us", got)
	}
	// A notification that finds nothing queued halves it, however soon
	// after the poll it came: a guest notifying with nothing queued kept
	// the window at max (an audit).
	for _, want := range []time.Duration{8 * us, 4 * us, 2 * us} {
		p.started = t0
		p.woke(t0.Add(50*us), false)
		if p.window != want {
			t.Errorf("after an empty notification: window %v, want %v", p.window, want)
		}
	}
}

// TestTransportPollServesEverything drives a disk through its ioeventfd
// the way an EVENT_IDX driver does (it notifies only when its index
// crosses avail_event) while the transport polls, with pauses longer
// than the poll window between some requests: every request completes,
// whether a poll or a notification finds it. Suppression that left the
// driver quiet with nobody polling would hang here.
func TestTransportPollServesEverything(t *testing.T) {
	testTransportPollServesEverything(t, false)
}

// TestTransportPollServesEverythingNoHeadroom: the same with a host that
// never has a CPU to spare, so every poll gives up at its first check
// (it may still find a request before it, or as it asks for
// notifications again, as a poll that ran out does).
func TestTransportPollServesEverythingNoHeadroom(t *testing.T) {
	if !headroom().open {
		t.Skip("/proc/loadavg not readable")
	}
	testTransportPollServesEverything(t, true)
}

func testTransportPollServesEverything(t *testing.T, noHeadroom bool) {
	path, _ := testImage(t, "disk.img", 64)
	b, err := NewBlock(path, false)
	if err != nil {
		t.Fatal(err)
	}
	// Guest RAM as the VMM has it, outside the Go heap: driver and
	// device share the rings without Go's synchronization, as a guest
	// and a VMM do, which the race detector would otherwise report.
	raw, err := unix.Mmap(-1, 0, testMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(raw) })
	mem := testMem(raw)
	r := newRigConfig(t, b, TransportConfig{Memory: mem, PollMax: 50 * time.Microsecond}, true)
	if noHeadroom {
		// Before DRIVER_OK starts the notifier that reads it.
		r.tr.headroom.cpus = 0
	}
	r.enableMSIX()
	r.negotiate(FeatureVersion1 | RingFeatures)
	const size = 16
	r.setupQueue(0, size, 1) // rings at 0x10000, as below
	r.write(ccDeviceStatus, 1, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	d := &testDriver{t: t, mem: mem, size: size, desc: 0x10000, avail: 0x11000, used: 0x12000, heap: 0x100000}
	efd, ok := r.ioev.fd(testBARBase + pciNotifyOff)
	if !ok {
		t.Fatal("no ioeventfd for the request queue")
	}
	kicks := 0
	for i := range 300 {
		old := d.availIdx
		d.add(rd(blkHeader(blkTIn, uint64(i%64))), wr(SectorSize+1))
		// vring_need_event(avail_event, new, old), after a full barrier.
		r.tr.queues[0].fence()
		if event := d.availEvent(); d.availIdx-event-1 < d.availIdx-old {
			kicks++
			unix.Write(efd, binary.LittleEndian.AppendUint64(nil, 1))
		}
		deadline := time.Now().Add(10 * time.Second)
		for d.usedIdx() == d.usedSeen {
			if time.Now().After(deadline) {
				t.Fatalf("request %d never completed (%d kicks, counters %+v)", i, kicks, r.tr.Counters()[0])
			}
			time.Sleep(10 * time.Microsecond)
		}
		if _, n := d.mustUsed(); n != SectorSize+1 {
			t.Fatalf("request %d: used length %d", i, n)
		}
		if i%10 == 0 {
			time.Sleep(time.Millisecond) // past any poll window
		}
	}
	c := r.tr.Counters()[0]
	if c.NotifyEventFD+c.Polled < 1 || c.NotifyEventFD > uint64(kicks) {
		t.Errorf("counters %+v with %d kicks", c, kicks)
	}
	t.Logf("%d requests: %d kicks, counters %+v", 300, kicks, c)
}
