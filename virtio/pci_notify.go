package virtio

import (
	"encoding/binary"
	"log"
	"os"

	"golang.org/x/sys/unix"
)

// pciNotifier serves one queue's ioeventfd: KVM signals the eventfd when the
// guest writes the queue's notify address, without leaving the kernel,
// and a goroutine here reads it and runs the device's Notify.
type pciNotifier struct {
	efd  int // kept apart from file: File.Fd would make it blocking
	file *os.File
	addr uint64
	done chan struct{}
}

// pciIOEventFDLen is the width of the write KVM matches: Linux's vp_notify
// writes the queue index with iowrite16. Another width exits to user
// space and is served by pciNotifyDevice like any MMIO write.
const pciIOEventFDLen = 2

// startNotifiers registers an ioeventfd for every enabled queue; mu must
// be held. Without IOEventFDs, with BAR 0 not decoding, or after a failed
// registration, notifications stay MMIO exits.
func (t *Transport) startNotifiers() {
	if t.ioev == nil || !t.barMapped || t.ioeventfdBroken || t.notifiers != nil {
		return
	}
	t.notifiers = make([]*pciNotifier, t.nq)
	for q, qu := range t.queues {
		if !qu.Ready() {
			continue
		}
		n, err := t.newNotifier(q)
		if err != nil {
			// Keep the queues already registered; this one (and any
			// later registration) falls back to MMIO exits.
			t.ioeventfdBroken = true
			pciLogf("%s: queue %d: ioeventfd unavailable, notifications exit to user space: %v", t.name, q, err)
			return
		}
		t.notifiers[q] = n
	}
}

func (t *Transport) newNotifier(q int) (*pciNotifier, error) {
	// Non-blocking, so os.NewFile puts it in the runtime poller: a
	// blocked Read parks a goroutine, not an OS thread.
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	addr := t.barBase + pciNotifyOff + uint64(q)*pciNotifyMultiplier
	if err := t.ioev.IOEventFD(efd, addr, pciIOEventFDLen, false, nil); err != nil {
		unix.Close(efd)
		return nil, err
	}
	n := &pciNotifier{efd: efd, file: os.NewFile(uintptr(efd), t.name+"-notify"), addr: addr, done: make(chan struct{})}
	go t.serveNotifier(n, q)
	return n, nil
}

func (t *Transport) serveNotifier(n *pciNotifier, q int) {
	defer close(n.done)
	var buf [8]byte
	for {
		if _, err := n.file.Read(buf[:]); err != nil {
			return // closed by stopNotifiers
		}
		// The counter sums the guest's writes since the last read (and
		// the transport's kicks, which are not the guest's): one Notify
		// serves them all.
		n := binary.LittleEndian.Uint64(buf[:])
		t.counters[q].eventfd.Add(n - min(n, t.counters[q].kicks.Swap(0)))
		t.notify(q)
	}
}

// stopNotifiers deregisters the ioeventfds and waits for their goroutines
// to finish; mu must be held.
func (t *Transport) stopNotifiers() {
	for _, n := range t.notifiers {
		if n == nil {
			continue
		}
		// Deassign before close: KVM finds the registration by fd.
		if err := t.ioev.IOEventFDDeassign(n.efd, n.addr, pciIOEventFDLen, false, nil); err != nil {
			pciLogf("%s: %v", t.name, err)
		}
		n.file.Close()
		<-n.done
	}
	t.notifiers = nil
}

func pciLogf(format string, args ...any) { log.Printf("virtio-pci: "+format, args...) }
