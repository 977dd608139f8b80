package virtio

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// NetHdrLen is the size of struct virtio_net_hdr_v1, which precedes every
// frame on both queues once VIRTIO_F_VERSION_1 is negotiated, and on the
// tap (OpenTap sets its vnet header size to match).
const NetHdrLen = 12

// virtio-net feature bits and status (virtio 1.2, 5.1.3 and 5.1.4).
const (
	netFCsum      = 1 << 0 // the guest may send partial checksums
	netFGuestCsum = 1 << 1 // the guest takes partial checksums
	netFMAC       = 1 << 5
	netFGuestTSO4 = 1 << 7  // the guest takes TCP/IPv4 segments up to 64 KiB
	netFGuestTSO6 = 1 << 8  // ... and TCP/IPv6
	netFGuestECN  = 1 << 9  // ... with ECN
	netFHostTSO4  = 1 << 11 // the guest may send TCP/IPv4 segments up to 64 KiB
	netFHostTSO6  = 1 << 12
	netFHostECN   = 1 << 13
	netFMrgRxbuf  = 1 << 15 // a received frame may span several buffers
	netFStatus    = 1 << 16

	// netOffloads are the offload features offered when the tap takes
	// them: checksums and TCP segmentation both ways, and mergeable
	// receive buffers, without which a guest that takes 64 KiB segments
	// must post 64 KiB buffers. No UFO/USO: Linux guests no longer send
	// UFO, and USO needs a 6.2+ host kernel.
	netOffloads = netFCsum | netFGuestCsum | netFGuestTSO4 | netFGuestTSO6 | netFGuestECN |
		netFHostTSO4 | netFHostTSO6 | netFHostECN | netFMrgRxbuf

	netSLinkUp = 1
)

const (
	netQueueSize = 256
	// netMaxPacket is the largest header+frame we read from the tap or
	// accept from the guest: a TCP segment of up to 64 KiB (an IP
	// packet's limit) behind an Ethernet and a VLAN header.
	netMaxPacket = NetHdrLen + 18 + 65535
)

// NetTap is the host side of a Net: a tap carrying one frame per read
// and write, each behind a NetHdrLen-byte virtio_net_hdr_v1 (a Tap from
// OpenTap).
type NetTap interface {
	// SyscallConn gives the device the tap's non-blocking descriptor,
	// which it reads with readv straight into guest memory, waiting in
	// Go's poller when there is nothing to read.
	SyscallConn() (syscall.RawConn, error)
	// WriteFrame writes one frame gathered from bufs (guest memory,
	// behind a header of the device's).
	WriteFrame(bufs [][]byte) error
	// SetOffload tells the tap which offloads (TUN_F_* flags) the guest
	// accepted: what frames read from it may carry.
	SetOffload(flags uint) error
	io.Closer
}

// Net is a virtio network device bridged to a tap. Transmit runs in
// Notify; receive runs in a goroutine that reads the tap and waits,
// without spinning, for the guest to post receive buffers.
//
// Frames cross without a copy where they can: the receive goroutine
// reads each frame from the tap straight into the receive buffers it
// holds (a bounce buffer takes what they cannot), and transmit writes
// each frame to the tap straight from the guest's buffers, behind a
// checked copy of its header. The receive goroutine reads up to
// netRxBatch frames per wake-up.
//
// With offloads on, the virtio-net header passes between the guest and
// the tap in both directions, checked field by field against the
// features the guest accepted (checkTx, checkRx): a malformed header
// drops its frame, it never reaches the kernel's GSO code. With them
// off, no offload is offered, the only valid header is all zero, and the
// device writes that header itself.
type Net struct {
	guestLog
	tap     NetTap
	mac     net.HardwareAddr
	offload bool     // offer netOffloads
	config  [12]byte // mac, status, max_virtqueue_pairs, mtu

	// mu guards the receive side and wakes the receive goroutine; txMu
	// guards the transmit side. Activation state is written with both
	// held (mu first), so either is enough to read it.
	mu      sync.Mutex
	cond    *sync.Cond // on mu: buffers posted, activated, reset, closed
	txMu    sync.Mutex
	active  bool
	closed  bool
	gen     uint64        // activations so far, to drop frames read before a reset
	started bool          // the receive goroutine runs
	done    chan struct{} // closed when the receive goroutine returns

	// Set by Activate, cleared by Reset.
	mem      Memory
	features uint64
	irq      Interrupt
	rxq      *Queue
	txq      *Queue
	rxErr    error // the queue error that broke receiveq, until Reset
	txErr    error // likewise for transmitq

	// The receive side, mu guards it. rxHeld are receive buffers popped
	// and not yet used, in ring order: the next frame is read into them.
	rxHeld    []*Chain
	rxBounce  []byte   // what the held buffers cannot take of a frame
	rxIovs    [][]byte // the read's buffers, reused
	txIovs    [][]byte // the write's buffers, reused; txMu guards it
	txHdr     [NetHdrLen]byte
	rxDropped atomic.Uint64
	txDropped atomic.Uint64
}

// netRxBatch bounds the frames read per hold of mu while the tap keeps
// delivering, so that Notify and Reset get their turn.
const netRxBatch = 64

// NewNet returns a network device on tap. offload offers checksum and
// TCP segmentation offloads and mergeable receive buffers (netOffloads);
// without it frames stay at the MTU and checksums are the guest's. A
// mac that is not 6 bytes long is replaced by a random locally
// administered address.
func NewNet(tap NetTap, mac net.HardwareAddr, offload bool) *Net {
	if len(mac) != 6 {
		mac = make(net.HardwareAddr, 6)
		rand.Read(mac)
		mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	}
	n := &Net{
		guestLog: newGuestLog("virtio-net"),
		tap:      tap,
		mac:      append(net.HardwareAddr(nil), mac...),
		offload:  offload,
		done:     make(chan struct{}),
	}
	n.cond = sync.NewCond(&n.mu)
	copy(n.config[0:6], n.mac)
	n.config[6] = netSLinkUp
	n.config[8] = 1 // max_virtqueue_pairs, meaningful only with MQ
	return n
}

// MAC is the device's Ethernet address.
func (n *Net) MAC() net.HardwareAddr { return n.mac }

// Dropped returns how many frames were dropped on receive (no room in
// the guest's buffers, device down, a header the guest did not
// negotiate) and on transmit (malformed header or length, tap error).
func (n *Net) Dropped() (rx, tx uint64) { return n.rxDropped.Load(), n.txDropped.Load() }

// Name implements Device.
func (n *Net) Name() string { return "virtio-net" }

// Type implements Device.
func (n *Net) Type() uint16 { return IDNet }

// Features implements Device: a fixed MAC, a link status and, with
// offloads on, netOffloads.
func (n *Net) Features() uint64 {
	f := uint64(RingFeatures | netFMAC | netFStatus)
	if n.offload {
		f |= netOffloads
	}
	return f
}

// QueueSizes implements Device: receiveq1 and transmitq1.
func (n *Net) QueueSizes() []uint16 { return []uint16{netQueueSize, netQueueSize} }

// ReadConfig implements Device: struct virtio_net_config (5.1.4).
func (n *Net) ReadConfig(offset uint64, data []byte) { readConfig(n.config[:], offset, data) }

// WriteConfig implements Device. The config is read-only for a 1.x
// driver (only legacy drivers wrote the MAC).
func (n *Net) WriteConfig(offset uint64, data []byte) {}

// Activate implements Device: it tells the tap which offloads the guest
// accepted, and the first activation starts the receive goroutine,
// which lives until Close.
func (n *Net) Activate(mem Memory, features uint64, queues []*Queue, irq Interrupt) error {
	if len(queues) < 2 || queues[0] == nil || queues[1] == nil {
		return errors.New("virtio-net: receiveq or transmitq not enabled")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.txMu.Lock()
	defer n.txMu.Unlock()
	if n.closed {
		return errors.New("virtio-net: device closed")
	}
	// Only what we offered counts: a driver that accepts more gets
	// what it was offered.
	features &= n.Features() | FeatureVersion1
	if err := n.tap.SetOffload(tapOffloads(features)); err != nil {
		return fmt.Errorf("virtio-net: tap offloads: %w", err)
	}
	n.mem, n.features, n.irq = mem, features, irq
	n.rxq, n.txq, n.rxErr, n.txErr = queues[0], queues[1], nil, nil
	n.rxHeld = n.rxHeld[:0] // buffers of the queues before
	n.active = true
	n.gen++
	if !n.started {
		n.started = true
		go n.receiveLoop()
	}
	n.cond.Broadcast()
	return nil
}

// Reset implements Device. The receive goroutine stops using the queue
// before Reset returns, and stops reading the tap after the frame it
// may be waiting for (frames stay queued in the tap while the device is
// down).
func (n *Net) Reset() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.txMu.Lock()
	defer n.txMu.Unlock()
	n.resetLocked()
	n.cond.Broadcast()
}

func (n *Net) resetLocked() {
	if n.features&netFGuestCsum != 0 && !n.closed {
		// Frames queued while the device is down then come plain; any
		// that came before are checked against the next driver's
		// features on receive, so a failure here loses nothing.
		if err := n.tap.SetOffload(0); err != nil {
			n.warn.Printf("host_io", "reset: tap offloads: %v", err)
		}
	}
	n.active = false
	n.mem, n.features, n.irq = nil, 0, nil
	n.rxq, n.txq, n.rxErr, n.txErr = nil, nil, nil, nil
	n.rxHeld = n.rxHeld[:0]
}

// Close stops the device, closes the tap and waits for the receive
// goroutine to return.
func (n *Net) Close() error {
	n.mu.Lock()
	n.txMu.Lock()
	if n.closed {
		n.txMu.Unlock()
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.resetLocked()
	started := n.started
	n.cond.Broadcast()
	n.txMu.Unlock()
	n.mu.Unlock()

	// Closing the tap ends a Read in progress.
	err := n.tap.Close()
	if started {
		<-n.done
	}
	if err != nil {
		return fmt.Errorf("virtio-net: close tap: %w", err)
	}
	return nil
}

// Notify implements Device. On receiveq it only wakes the receive
// goroutine, which may be waiting for buffers.
func (n *Net) Notify(queue int) error {
	switch queue {
	case 0:
		n.mu.Lock()
		defer n.mu.Unlock()
		n.cond.Broadcast()
		return n.rxErr
	case 1:
		n.txMu.Lock()
		defer n.txMu.Unlock()
		return n.transmitLocked()
	}
	return fmt.Errorf("virtio-net: notify for queue %d, device has two", queue)
}

// transmitLocked sends every available frame to the tap; txMu must be
// held.
func (n *Net) transmitLocked() error {
	if n.txq == nil || n.txErr != nil {
		return n.txErr
	}
	if err := serve(n.mem, n.txq, n.features, n.irq, 1, func(c *Chain) served {
		return n.transmit(c)
	}); err != nil {
		n.txErr = fmt.Errorf("virtio-net: transmitq: %w", err)
	}
	return n.txErr
}

// Kinds of request, for telemetry (RequestOps).
const (
	netOpRx Op = 0 // on receiveq

	netOpTx        Op = 0 // on transmitq
	netOpTxDropped Op = 1
)

// RequestOps implements requestOps: frames received; frames sent, and
// those dropped (malformed, or the tap refused them).
func (n *Net) RequestOps(queue int) []string {
	if queue == 0 {
		return []string{"rx"}
	}
	return []string{"tx", "tx_dropped"}
}

// transmit writes the frame in c to the tap, or drops it. The header
// is copied out of guest memory before it is checked, and the checked
// copy is what the tap gets, so the guest cannot change what was
// checked; the frame itself goes from guest memory (the tap copies it
// before the kernel parses it, and its length, which the checks use,
// is the descriptors').
func (n *Net) transmit(c *Chain) served {
	l := c.ReadableLen()
	if l < NetHdrLen || l > netMaxPacket {
		n.txDropped.Add(1)
		n.warn.Printf("bad_packet", "transmit: dropped a %d-byte packet (header %d, limit %d)", l, NetHdrLen, netMaxPacket)
		return served{op: netOpTxDropped}
	}
	c.Gather(n.txHdr[:], 0)
	hdr, err := parseNetHdr(n.txHdr[:]).checkTx(n.features, int(l)-NetHdrLen)
	if err != nil {
		n.txDropped.Add(1)
		n.warn.Printf("bad_header", "transmit: dropped a %d-byte packet: %v", l, err)
		return served{op: netOpTxDropped}
	}
	hdr.put(n.txHdr[:], 0)
	n.txIovs = c.AppendBuffers(append(n.txIovs[:0], n.txHdr[:]), false, NetHdrLen, l-NetHdrLen)
	if err := n.tap.WriteFrame(n.txIovs); err != nil {
		n.txDropped.Add(1)
		n.warn.Printf("host_io", "transmit: write tap: %v", err)
		return served{op: netOpTxDropped}
	}
	return served{op: netOpTx, bytes: l - NetHdrLen}
}

// receiveLoop reads frames from the tap into the guest's receive
// buffers, until Close. Each frame is read and delivered with mu held,
// so a Reset never finds the device writing into buffers the driver is
// about to take back; mu is free while the goroutine waits for the tap
// or for buffers.
func (n *Net) receiveLoop() {
	defer close(n.done)
	rc, err := n.tap.SyscallConn()
	if err != nil {
		n.warn.Printf("host_io", "receive: %v; receive stopped", err)
		return
	}
	n.rxBounce = make([]byte, netMaxPacket)
	for {
		// Read only while active: while the device is down frames wait
		// in the tap's queue (which drops when full, like a wire).
		n.mu.Lock()
		for !n.active && !n.closed {
			n.cond.Wait()
		}
		closed := n.closed
		n.mu.Unlock()
		if closed {
			return
		}
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n.mu.Lock()
			defer n.mu.Unlock()
			for range netRxBatch {
				if !n.active || n.closed {
					return true
				}
				if rerr = n.receive(int(fd)); rerr != nil {
					if rerr == unix.EAGAIN {
						// The tap ran dry: wait in the poller.
						rerr = nil
						return false
					}
					return true
				}
			}
			return true
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			n.mu.Lock()
			closed := n.closed
			n.mu.Unlock()
			if !closed {
				// A tap that fails a read (its interface deleted) will
				// not recover: stop rather than spin.
				n.warn.Printf("host_io", "receive: read tap: %v; receive stopped", err)
			}
			return
		}
	}
}

// interruptRx raises receiveq's interrupt after a frame if the driver
// wants to hear of it: with EVENT_IDX a driver busy polling the ring
// (NAPI) does not. mu must be held.
func (n *Net) interruptRx() {
	tel := n.rxq.tel
	if n.rxq.NeedsInterrupt(n.mem, n.features) {
		if err := n.irq.Queue(0); err != nil {
			n.warn.Printf("host_io", "receive: interrupt: %v", err)
		}
	}
	tel.interrupted(tel.now())
}

// holdRx pops receive buffers until those held can take a frame of
// netMaxPacket bytes (with MRG_RXBUF) or one buffer is held (without,
// a frame takes exactly one), or the ring is empty. It reports false if
// receiveq broke. mu must be held.
func (n *Net) holdRx(mergeable bool) bool {
	var room uint64
	for _, c := range n.rxHeld {
		room += c.WritableLen()
	}
	for (mergeable && room < netMaxPacket) || len(n.rxHeld) == 0 {
		c, err := n.rxq.Pop(n.mem)
		if err != nil {
			n.failReceive(err)
			return false
		}
		if c == nil {
			return true
		}
		w := c.WritableLen()
		if mergeable && w < NetHdrLen {
			// Every mergeable buffer holds at least a header (5.1.6.3.1).
			n.failReceive(fmt.Errorf("receive buffer %d of %d bytes, smaller than the %d-byte header", c.Head, w, NetHdrLen))
			return false
		}
		n.rxHeld = append(n.rxHeld, c)
		room += w
	}
	return true
}

// receive reads one frame from the tap into the held receive buffers
// (and the bounce buffer for what they cannot take), checks its header,
// and hands it to the guest: with MRG_RXBUF in as many buffers as it
// takes, waiting for the guest to post more if the frame went on into
// the bounce buffer; without, in one buffer that holds it whole. It
// returns unix.EAGAIN when the tap has no frame, another error when the
// tap failed; a frame it cannot deliver is dropped and counted. mu must
// be held; it is released only while waiting for buffers.
func (n *Net) receive(fd int) error {
	if n.rxErr != nil {
		// A broken receiveq drops what arrives until Reset.
		m, err := unix.Read(fd, n.rxBounce)
		if err == nil && m > 0 {
			n.rxDropped.Add(1)
		}
		return err
	}
	mergeable := n.features&netFMrgRxbuf != 0
	if !n.holdRx(mergeable) {
		return nil
	}
	// The held buffers first, in order, up to the largest frame; a
	// frame without MRG_RXBUF may use only the first.
	iovs := n.rxIovs[:0]
	var room uint64
	for i, c := range n.rxHeld {
		if !mergeable && i > 0 {
			break
		}
		iovs = c.AppendBuffers(iovs, true, 0, netMaxPacket-room)
		room += min(c.WritableLen(), netMaxPacket-room)
		if room == netMaxPacket {
			break
		}
	}
	if room < netMaxPacket {
		iovs = append(iovs, n.rxBounce[:netMaxPacket-room])
	}
	n.rxIovs = iovs
	m, err := unix.Readv(fd, iovs)
	if err != nil {
		return err
	}
	tel := n.rxq.tel
	start := tel.now()
	if m < NetHdrLen {
		n.rxDropped.Add(1)
		return nil
	}
	var hb [NetHdrLen]byte
	gatherIovs(hb[:], iovs)
	hdr, err := parseNetHdr(hb[:]).checkRx(n.features, m-NetHdrLen)
	if err != nil {
		n.rxDropped.Add(1)
		n.warn.Printf("rx_header", "receive: dropped a %d-byte packet: %v", m, err)
		return nil
	}
	used := 0
	if !mergeable {
		// A frame takes exactly one buffer, which must hold it whole: a
		// buffer too small stays for a smaller frame rather than hand
		// back a truncated one.
		inPlace := len(n.rxHeld) > 0
		if !inPlace && !n.waitRx(uint64(m), false) {
			n.rxDropped.Add(1)
			return nil
		}
		if w := n.rxHeld[0].WritableLen(); w < uint64(m) {
			n.rxDropped.Add(1)
			n.warn.Printf("rx_buffer", "receive: dropped a %d-byte packet: receive buffer of %d bytes", m, w)
			return nil
		}
		if !inPlace {
			n.rxHeld[0].Scatter(n.rxBounce[:m], 0)
		}
		used = 1
	} else {
		// The buffers the frame fills, in order, the last one partly.
		left := uint64(m)
		for used < len(n.rxHeld) && left > 0 {
			w := n.rxHeld[used].WritableLen()
			if w < NetHdrLen {
				// Every mergeable buffer holds at least a header
				// (5.1.6.3.1).
				n.failReceive(fmt.Errorf("receive buffer %d of %d bytes, smaller than the %d-byte header", n.rxHeld[used].Head, w, NetHdrLen))
				n.rxDropped.Add(1)
				return nil
			}
			left -= min(left, w)
			used++
		}
		if left > 0 {
			// The rest is in the bounce buffer, from its start: more
			// buffers take it.
			if !n.waitRx(uint64(m), true) {
				n.rxDropped.Add(1)
				return nil
			}
			bounce := n.rxBounce[:left]
			for len(bounce) > 0 {
				bounce = bounce[n.rxHeld[used].Scatter(bounce, 0):]
				used++
			}
		}
	}
	popped := tel.now()

	// num_buffers in the first header says how many buffers the frame
	// took. They are published together: a driver polling the used ring
	// (NAPI on another vCPU) that found the first buffer but not the
	// rest would drop the frame as truncated.
	hdr.put(hb[:], uint16(used))
	n.rxHeld[0].Scatter(hb[:], 0)
	left := uint64(m)
	for _, c := range n.rxHeld[:used] {
		k := min(left, c.WritableLen())
		if err := n.rxq.Put(n.mem, c.Head, uint32(k)); err != nil {
			n.failReceive(err)
			return nil
		}
		left -= k
	}
	n.rxq.Publish()
	n.rxHeld = n.rxHeld[:copy(n.rxHeld, n.rxHeld[used:])]
	tel.pushed(netOpRx, uint64(m-NetHdrLen), start, popped, tel.now())
	n.interruptRx()
	return nil
}

// waitRx waits until the held buffers take a frame of size bytes (with
// MRG_RXBUF) or one buffer is held (without), and reports whether that
// happened before the device went down or receiveq broke; a frame that
// every buffer the ring can hold cannot take is dropped. A device reset
// and activated meanwhile has new buffers, which do not hold the part of
// the frame already read: it reports false. mu must be held.
func (n *Net) waitRx(size uint64, mergeable bool) bool {
	gen := n.gen
	for {
		if !n.active || n.rxErr != nil || n.gen != gen {
			return false
		}
		var room uint64
		for _, c := range n.rxHeld {
			room += c.WritableLen()
		}
		if (mergeable && room >= size) || (!mergeable && len(n.rxHeld) > 0) {
			return true
		}
		c, err := n.rxq.Pop(n.mem)
		switch {
		case err != nil:
			n.failReceive(err)
			return false
		case c != nil && mergeable && c.WritableLen() < NetHdrLen:
			n.failReceive(fmt.Errorf("receive buffer %d of %d bytes, smaller than the %d-byte header", c.Head, c.WritableLen(), NetHdrLen))
			return false
		case c != nil:
			n.rxHeld = append(n.rxHeld, c)
		case len(n.rxHeld) >= int(n.rxq.Size()):
			// Every buffer the ring can hold and still short: this
			// frame can never fit. Keep them for smaller frames.
			n.warn.Printf("rx_buffer", "receive: dropped a %d-byte packet: %d receive buffers hold %d bytes", size, len(n.rxHeld), room)
			return false
		default:
			// Pop found the ring empty after asking for a notification,
			// so the driver's next buffer comes with a Notify(0).
			n.cond.Wait()
		}
	}
}

// gatherIovs copies the start of iovs into p.
func gatherIovs(p []byte, iovs [][]byte) {
	n := 0
	for _, b := range iovs {
		if n == len(p) {
			return
		}
		n += copy(p[n:], b)
	}
}

// failReceive breaks receiveq until Reset and tells the transport now:
// the driver may not notify receiveq again for a long time (it posted
// its buffers), and should not have to for the device to be marked
// broken. mu must be held.
func (n *Net) failReceive(err error) {
	n.rxErr = fmt.Errorf("virtio-net: receiveq: %w", err)
	n.irq.Fail(n.rxErr)
}
