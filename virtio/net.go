package virtio

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/govmm/govmm/internal/nbsys"
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
	netFCtrlVQ    = 1 << 17 // a control queue
	netFMQ        = 1 << 22 // several queue pairs, chosen on the control queue

	// netOffloads are the offload features offered when the tap takes
	// them: checksums and TCP segmentation both ways, and mergeable
	// receive buffers, without which a guest that takes 64 KiB segments
	// must post 64 KiB buffers. No UFO/USO: Linux guests no longer send
	// UFO, and USO needs a 6.2+ host kernel.
	netOffloads = netFCsum | netFGuestCsum | netFGuestTSO4 | netFGuestTSO6 | netFGuestECN |
		netFHostTSO4 | netFHostTSO6 | netFHostECN | netFMrgRxbuf

	netSLinkUp = 1
)

// NetMaxQueuePairs bounds the queue pairs of a device: far above any
// vCPU count govmm runs, and within the transport's MSI-X vectors.
const NetMaxQueuePairs = 16

// Control queue commands (5.1.6.5): only the multiqueue class, since no
// other control feature is offered.
const (
	netCtrlMQ             = 4 // class VIRTIO_NET_CTRL_MQ
	netCtrlMQVQPairsSet   = 0 // its command VQ_PAIRS_SET, a le16 pair count
	netCtrlOK, netCtrlErr = 0, 1
)

const (
	netQueueSize     = 256
	netCtrlQueueSize = 64
	// netMaxIovs is the kernel's IOV_MAX, the most buffers one readv
	// takes.
	netMaxIovs = 1024
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
	// accepted: what frames read from it may carry. It applies to every
	// queue of a multiqueue tap.
	SetOffload(flags uint) error
	// EnableQueue attaches or detaches this queue of a multiqueue tap:
	// the kernel steers frames only to attached queues. Only a device
	// with several queue pairs calls it.
	EnableQueue(on bool) error
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
	mac     net.HardwareAddr
	offload bool      // offer netOffloads
	txWait  NetTxWait // which transmit streams NotifyDelay waits for
	config  [12]byte  // mac, status, max_virtqueue_pairs, mtu
	pairs   []*netPair

	// closed is set first thing in Close, with no lock: Close must not
	// wait for a lock a transmit stuck in a tap write holds.
	closed atomic.Bool
	// ctrlMu serializes Activate, Reset, Close and the control queue;
	// the pairs' own locks guard what the pairs use.
	ctrlMu    sync.Mutex
	active    bool
	mem       Memory
	features  uint64
	irq       Interrupt
	ctrlq     *Queue
	ctrlErr   error
	inUse     int // the queue pairs in use: 1, or what VQ_PAIRS_SET set
	rxDropped atomic.Uint64
	txDropped atomic.Uint64
	// Frames and bytes (without the virtio header) that crossed, and
	// transmitted frames dropped as the guest's fault (a subset of
	// txDropped).
	rxPackets, rxBytes atomic.Uint64
	txPackets, txBytes atomic.Uint64
	txInvalid          atomic.Uint64
}

// netPair is one receiveq/transmitq pair and the tap queue it serves,
// with a receive goroutine of its own. Its methods reach the device's
// MAC, counters and log through the embedded Net.
type netPair struct {
	*Net
	index int // pair index: receiveq 2*index, transmitq 2*index+1
	// txStreaming: the last transmit notification found a stream the
	// next one should wait for (txWait), so it waits netTxDefer
	// (NotifyDelay). txFrames and txFrameBytes count the frames
	// transmit took, sent or dropped, and their descriptors' bytes.
	txStreaming  atomic.Bool
	txFrames     atomic.Uint64
	txFrameBytes atomic.Uint64
	tap          NetTap
	// tapDetached: usePairs detached the tap queue (a tap opens with
	// its queues attached); ctrlMu guards it.
	tapDetached bool

	// mu guards the receive side and wakes the receive goroutine; txMu
	// guards the transmit side. Activation state is written with both
	// held (mu first), so either is enough to read it; closed, which
	// only the receive side reads, is mu's alone.
	mu      sync.Mutex
	cond    *sync.Cond // on mu: buffers posted, activated, reset, closed
	txMu    sync.Mutex
	active  bool          // the device is active and the driver uses this pair
	closed  bool          // Close began: the receive goroutine returns
	paused  bool          // the VM is paused (Pause, Resume): receive stands still
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
	rxHeld   []*Chain
	rxBounce []byte // what the held buffers cannot take of a frame
	// rxUnsignalled: frames were pushed since the last interrupt
	// decision (signalRx).
	rxUnsignalled bool
	rxIovs        [][]byte     // the read's buffers, reused
	rxRaw         []unix.Iovec // and their iovec array
	txIovs        [][]byte     // the write's buffers, reused; txMu guards it
	txHdr         [NetHdrLen]byte
}

// netBatch bounds the frames read per hold of mu while the tap keeps
// delivering, and the chains served per hold of txMu or ctrlMu while
// the driver keeps its ring full, so that Notify, usePairs and Reset get
// their turn.
const netBatch = 64

// NewNet returns a network device on taps, one queue pair per tap (the
// queues of one multiqueue tap; at most NetMaxQueuePairs). offload
// offers checksum and TCP segmentation offloads and mergeable receive
// buffers (netOffloads); without it frames stay at the MTU and checksums
// are the guest's. A mac that is not 6 bytes long is replaced by a
// random locally administered address.
func NewNet(taps []NetTap, mac net.HardwareAddr, offload bool) (*Net, error) {
	if len(taps) < 1 || len(taps) > NetMaxQueuePairs {
		return nil, fmt.Errorf("virtio-net: %d queue pairs, want 1 to %d", len(taps), NetMaxQueuePairs)
	}
	if len(mac) != 6 {
		mac = make(net.HardwareAddr, 6)
		rand.Read(mac)
		mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	}
	n := &Net{
		guestLog: newGuestLog("virtio-net"),
		mac:      append(net.HardwareAddr(nil), mac...),
		offload:  offload,
	}
	for i, tap := range taps {
		p := &netPair{Net: n, index: i, tap: tap, done: make(chan struct{})}
		p.cond = sync.NewCond(&p.mu)
		n.pairs = append(n.pairs, p)
	}
	copy(n.config[0:6], n.mac)
	n.config[6] = netSLinkUp
	binary.LittleEndian.PutUint16(n.config[8:], uint16(len(taps))) // max_virtqueue_pairs
	return n, nil
}

// MAC is the device's Ethernet address.
func (n *Net) MAC() net.HardwareAddr { return n.mac }

// NetStats are a network device's counters since it was made, as an
// interface's statistics: bytes are the frames' own, without the virtio
// header. Frames are dropped on receive for want of room in the guest's
// buffers, the device down, or a header the guest did not negotiate; on
// transmit for a malformed header or length, or a tap error.
type NetStats struct {
	RxPackets, RxBytes, RxDropped uint64
	TxPackets, TxBytes, TxDropped uint64
	// TxInvalid counts the transmitted frames dropped as the guest's
	// fault: malformed (length, header, more buffers than IOV_MAX) or
	// on a queue pair it has not enabled; TxDropped includes them.
	TxInvalid uint64
}

// Stats returns the device's counters; it never waits for the device.
func (n *Net) Stats() NetStats {
	// TxInvalid first: a drop counts in txDropped before txInvalid, so
	// read in this order TxInvalid never exceeds TxDropped.
	invalid := n.txInvalid.Load()
	return NetStats{
		RxPackets: n.rxPackets.Load(), RxBytes: n.rxBytes.Load(), RxDropped: n.rxDropped.Load(),
		TxPackets: n.txPackets.Load(), TxBytes: n.txBytes.Load(), TxDropped: n.txDropped.Load(),
		TxInvalid: invalid,
	}
}

// Name implements Device.
func (n *Net) Name() string { return "virtio-net" }

// Type implements Device.
func (n *Net) Type() uint16 { return IDNet }

// Features implements Device: a fixed MAC, a link status, with offloads
// on netOffloads, and with several queue pairs the control queue and
// multiqueue.
func (n *Net) Features() uint64 {
	f := uint64(RingFeatures | netFMAC | netFStatus)
	if n.offload {
		f |= netOffloads
	}
	if len(n.pairs) > 1 {
		f |= netFCtrlVQ | netFMQ
	}
	return f
}

// QueuePairs is the number of queue pairs the device offers.
func (n *Net) QueuePairs() int { return len(n.pairs) }

// QueueSizes implements Device: receiveq and transmitq of each pair,
// then with several pairs the control queue.
func (n *Net) QueueSizes() []uint16 {
	sizes := make([]uint16, 2*len(n.pairs))
	for i := range sizes {
		sizes[i] = netQueueSize
	}
	if len(n.pairs) > 1 {
		sizes = append(sizes, netCtrlQueueSize)
	}
	return sizes
}

// ctrlIndex is the control queue's index, or -1 without one.
func (n *Net) ctrlIndex() int {
	if len(n.pairs) == 1 {
		return -1
	}
	return 2 * len(n.pairs)
}

// ReadConfig implements Device: struct virtio_net_config (5.1.4).
func (n *Net) ReadConfig(offset uint64, data []byte) { readConfig(n.config[:], offset, data) }

// WriteConfig implements Device. The config is read-only for a 1.x
// driver (only legacy drivers wrote the MAC).
func (n *Net) WriteConfig(offset uint64, data []byte) {}

// Activate implements Device: it tells the tap which offloads the guest
// accepted and starts with one queue pair (the driver asks for more on
// the control queue); the first activation starts the receive
// goroutines, which live until Close.
func (n *Net) Activate(mem Memory, features uint64, queues []*Queue, irq Interrupt) error {
	if len(queues) < 2 || queues[0] == nil || queues[1] == nil {
		return errors.New("virtio-net: receiveq or transmitq not enabled")
	}
	n.ctrlMu.Lock()
	defer n.ctrlMu.Unlock()
	if n.closed.Load() {
		return errors.New("virtio-net: device closed")
	}
	// Only what we offered counts: a driver that accepts more gets
	// what it was offered.
	features &= n.Features() | FeatureVersion1
	// A tap that refuses is the host's failure, not the guest's: the
	// device still comes up, and what the tap hands over is checked
	// against what the guest accepted anyway (a header it did not accept
	// is dropped and counted). Failing the activation left the device
	// needing a reset with its control queue unserved, and Linux's probe
	// spins for ever on VQ_PAIRS_SET: a multiqueue tap deleted by the
	// host hung the guest's next boot with a vCPU at 100% (an audit).
	if err := n.pairs[0].tap.SetOffload(tapOffloads(features)); err != nil {
		n.warn.Printf("host_io", "activate: tap offloads: %v", err)
	}
	n.mem, n.features, n.irq, n.active = mem, features, irq, true
	n.ctrlq, n.ctrlErr = nil, nil
	if c := n.ctrlIndex(); c >= 0 && c < len(queues) && features&netFCtrlVQ != 0 {
		n.ctrlq = queues[c]
	}
	for i, p := range n.pairs {
		var rxq, txq *Queue
		if 2*i+1 < len(queues) {
			rxq, txq = queues[2*i], queues[2*i+1]
		}
		p.activate(mem, features, rxq, txq, irq)
	}
	n.usePairs(1)
	return nil
}

// activate gives the pair its queues (nil if the driver left them
// disabled); it is used once usePairs includes it.
func (p *netPair) activate(mem Memory, features uint64, rxq, txq *Queue, irq Interrupt) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.txMu.Lock()
	defer p.txMu.Unlock()
	p.mem, p.features, p.irq = mem, features, irq
	p.rxq, p.txq, p.rxErr, p.txErr = rxq, txq, nil, nil
	p.rxHeld = p.rxHeld[:0] // buffers of the queues before
	p.rxUnsignalled = false
	p.gen++
	if !p.started {
		p.started = true
		go p.receiveLoop()
	}
}

// usePairs makes the first k pairs (those with both queues enabled)
// serve their queues and the rest stand still, and attaches the tap
// queues of the first k, so that the kernel steers frames to those
// alone. ctrlMu must be held.
func (n *Net) usePairs(k int) (ok bool) {
	ok = true
	for i, p := range n.pairs {
		// A pair's tap queue is attached before its receive goroutine
		// is woken, and detached after it stopped: reading a detached
		// queue fails (EBADFD), which would end that goroutine for good.
		use := n.active && i < k && n.attachTap(i, true)
		if i < k && !use {
			ok = false
		}
		p.mu.Lock()
		p.txMu.Lock()
		p.active = use && p.rxq != nil && p.txq != nil
		p.txMu.Unlock()
		p.cond.Broadcast()
		p.mu.Unlock()
		if !use {
			n.attachTap(i, false)
		}
	}
	n.inUse = k
	return ok
}

// attachTap attaches (on) or detaches pair i's tap queue, and reports
// whether it is now as asked. Only on a change: a detach waits for an
// RCU grace period (synchronize_net), tens of milliseconds of the
// caller's time. Pair 0's queue stays attached. ctrlMu must be held.
func (n *Net) attachTap(i int, on bool) bool {
	p := n.pairs[i]
	if i == 0 || n.closed.Load() || p.tapDetached != on {
		return true
	}
	if err := p.tap.EnableQueue(on); err != nil {
		n.warn.Printf("host_io", "queue pair %d: tap queue: %v", i, err)
		return false
	}
	p.tapDetached = !on
	return true
}

// Pause stops the receive goroutines at their next frame and returns
// once none is delivering one: while the VM is paused nothing may touch
// guest memory. Before, they went on filling the receive buffers they
// held into guest memory, publishing them and raising interrupts, 43
// frames into a stopped VM (found by an audit); QEMU reads no tap while
// the VM is stopped either. The transport calls it after pausing the
// queues.
func (n *Net) Pause() {
	for _, p := range n.pairs {
		p.mu.Lock() // waits out the batch in progress
		p.paused = true
		p.mu.Unlock()
	}
}

// Resume undoes Pause.
func (n *Net) Resume() {
	for _, p := range n.pairs {
		p.mu.Lock()
		p.paused = false
		p.cond.Broadcast()
		p.mu.Unlock()
	}
}

// Reset implements Device. The receive goroutines stop using their
// queues before Reset returns, and stop reading the tap after the frame
// they may be waiting for (frames stay queued in the tap while the
// device is down).
func (n *Net) Reset() {
	n.ctrlMu.Lock()
	defer n.ctrlMu.Unlock()
	n.resetLocked()
}

// resetLocked stops the device; ctrlMu must be held.
func (n *Net) resetLocked() {
	if n.features&netFGuestCsum != 0 && !n.closed.Load() {
		// Frames queued while the device is down then come plain; any
		// that came before are checked against the next driver's
		// features on receive, so a failure here loses nothing.
		if err := n.pairs[0].tap.SetOffload(0); err != nil {
			n.warn.Printf("host_io", "reset: tap offloads: %v", err)
		}
	}
	n.active = false
	n.mem, n.features, n.irq, n.ctrlq, n.ctrlErr = nil, 0, nil, nil, nil
	for _, p := range n.pairs {
		p.mu.Lock()
		p.txMu.Lock()
		p.active = false
		p.closed = n.closed.Load()
		p.mem, p.features, p.irq = nil, 0, nil
		p.rxq, p.txq, p.rxErr, p.txErr = nil, nil, nil, nil
		p.rxHeld = p.rxHeld[:0]
		p.rxUnsignalled = false
		p.txStreaming.Store(false) // the next driver has not streamed yet
		p.txMu.Unlock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}
	n.usePairs(1)
}

// Close stops the device, closes the taps and waits for the receive
// goroutines to return. It is bounded whatever the datapath is doing:
// the taps close before it takes ctrlMu or txMu, which ends a tap read
// or write in progress (a transmit waiting for room in the tap holds
// txMu, and a control command may wait for that).
func (n *Net) Close() error {
	if !n.closed.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	for _, p := range n.pairs {
		// The receive goroutine learns it is closing before its read
		// fails, so it does not report the failure. mu is never held
		// across a wait.
		p.mu.Lock()
		p.closed = true
		p.cond.Broadcast()
		p.mu.Unlock()
		if err := p.tap.Close(); err != nil {
			errs = append(errs, fmt.Errorf("virtio-net: close tap queue %d: %w", p.index, err))
		}
	}
	n.ctrlMu.Lock()
	n.resetLocked()
	n.ctrlMu.Unlock()
	for _, p := range n.pairs {
		p.mu.Lock()
		started := p.started
		p.mu.Unlock()
		if started {
			<-p.done
		}
	}
	return errors.Join(errs...)
}

// Notify implements Device. On a receiveq it only wakes the pair's
// receive goroutine, which may be waiting for buffers.
func (n *Net) Notify(queue int) error {
	if queue == n.ctrlIndex() {
		return n.control()
	}
	if queue < 0 || queue >= 2*len(n.pairs) {
		return fmt.Errorf("virtio-net: notify for queue %d, device has %d", queue, len(n.QueueSizes()))
	}
	p := n.pairs[queue/2]
	if queue%2 == 0 {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.cond.Broadcast()
		return p.rxErr
	}
	frames, bytes := p.txFrames.Load(), p.txFrameBytes.Load()
	err := inBatches(&p.txMu, p.transmitLocked)
	frames, bytes = p.txFrames.Load()-frames, p.txFrameBytes.Load()-bytes
	p.txStreaming.Store(n.txWait.waitsAfter(frames, bytes))
	return err
}

// NetTxWait says which transmit notifications wait netTxDefer before
// they are served (NotifyDelay).
type NetTxWait int

const (
	// NetTxWaitSmall, the default, waits after a notification that
	// found two frames or more averaging under netTxWaitFrame bytes: a
	// guest streaming small frames (UDP, the acknowledgements of a
	// download). One that sends TSO segments is served at once: on
	// the EPYC host measured it queued 10-16 of them per notification
	// unasked, so waiting saved no notifications and held back
	// segments that the guest's TCP small-queue limit was waiting for
	// (README, Network datapath).
	NetTxWaitSmall NetTxWait = iota
	// NetTxWaitAll waits after any notification that found two frames
	// or more, whatever their size.
	NetTxWaitAll
	// NetTxWaitOff serves every notification at once.
	NetTxWaitOff
)

// netTxWaitNames are the modes' names, as --net's txwait= takes them.
var netTxWaitNames = []string{NetTxWaitSmall: "small", NetTxWaitAll: "all", NetTxWaitOff: "off"}

// Valid reports whether w is one of the modes above.
func (w NetTxWait) Valid() bool { return w >= 0 && int(w) < len(netTxWaitNames) }

// String returns the mode's name ("small", "all", "off").
func (w NetTxWait) String() string {
	if !w.Valid() {
		return fmt.Sprintf("NetTxWait(%d)", int(w))
	}
	return netTxWaitNames[w]
}

// ParseNetTxWait returns the mode named s.
func ParseNetTxWait(s string) (NetTxWait, error) {
	i := slices.Index(netTxWaitNames, s)
	if i < 0 {
		return 0, fmt.Errorf("txwait=%s: want %s", s, strings.Join(netTxWaitNames, ", "))
	}
	return NetTxWait(i), nil
}

// netTxWaitFrame is the average frame size, header included, from which
// NetTxWaitSmall serves a stream at once: a TCP stream's segments are
// tens of KiB with TSO, a datagram or an acknowledgement under the MTU.
const netTxWaitFrame = 4096

// waitsAfter reports whether, after a notification that found frames
// frames of bytes bytes, the next one should wait.
func (w NetTxWait) waitsAfter(frames, bytes uint64) bool {
	switch {
	case w == NetTxWaitOff || frames < 2:
		return false
	case w == NetTxWaitAll:
		return true
	}
	return bytes/frames < netTxWaitFrame
}

// SetTxWait sets which transmit notifications wait (NetTxWaitSmall by
// default). Call it before the device is attached to a transport.
func (n *Net) SetTxWait(w NetTxWait) { n.txWait = w }

// NotifyDelay implements notifyDeferrer: a transmitq notification that
// follows one which found a stream (NetTxWait) waits netTxDefer before
// it is served.
func (n *Net) NotifyDelay(queue int) time.Duration {
	if queue < 0 || queue >= 2*len(n.pairs) || queue%2 == 0 || !n.pairs[queue/2].txStreaming.Load() {
		return 0
	}
	return netTxDefer
}

// netTxDefer is how long a streaming guest's transmit notification
// waits. Served at once, the device empties the ring and asks to be
// notified again, so the guest's next frame costs it another
// notification (an emulated page fault on PVM hosts) and the notifier's
// thread a wake-up that preempts a vCPU; after the wait it finds several
// frames queued with the guest's notifications off. A lone frame (request
// and response) is served at once, and by default so is a stream of TSO
// segments (NetTxWaitSmall). The sleep comes with the kernel's
// timer slack (50 us for a normal thread).
const netTxDefer = 20 * time.Microsecond

// inBatches runs batch with mu held until it reports no more work or an
// error, and frees mu between batches: however long a driver keeps a
// ring full, those waiting for mu (usePairs, Reset) get their turn, and
// the next batch then finds what they changed. A stop or reset of the
// transport also ends it, through Pop (Queue.abort).
func inBatches(mu *sync.Mutex, batch func() (more bool, err error)) error {
	for {
		mu.Lock()
		more, err := batch()
		mu.Unlock()
		if err != nil || !more {
			return err
		}
	}
}

// control serves the control queue: VQ_PAIRS_SET, the one command of
// the one class offered; anything else is answered VIRTIO_NET_ERR.
func (n *Net) control() error {
	return inBatches(&n.ctrlMu, n.controlLocked)
}

// controlLocked serves up to netBatch control commands and reports
// whether there may be more; ctrlMu must be held.
func (n *Net) controlLocked() (more bool, err error) {
	if n.ctrlq == nil || n.ctrlErr != nil {
		return false, n.ctrlErr
	}
	more, err = serveBatch(n.mem, n.ctrlq, n.features, n.irq, n.ctrlIndex(), netBatch, n.command)
	if err != nil {
		n.ctrlErr = fmt.Errorf("virtio-net: controlq: %w", err)
	}
	return more, n.ctrlErr
}

// readyPairs counts the leading pairs whose queues the driver enabled:
// the pairs VQ_PAIRS_SET may ask for. A pair without queues would have
// its tap queue attached and nobody reading it. ctrlMu must be held
// (the pairs' queues change only under it).
func (n *Net) readyPairs() int {
	k := 0
	for k < len(n.pairs) && n.pairs[k].rxq != nil && n.pairs[k].txq != nil {
		k++
	}
	return k
}

// command runs one control command: class, command and data readable,
// then the writable ack byte (5.1.6.5). The ack goes in the first
// writable byte, which the used length (1) covers: where QEMU writes it
// (virtio_net_handle_ctrl_iov), and where virtio 1.3 has it, before a
// command's result. Written in the last writable byte, a driver whose
// writable part was longer found its ack byte untouched (an audit).
// ctrlMu must be held.
func (n *Net) command(c *Chain) served {
	var cmd [4]byte // class, command, le16 virtqueue_pairs
	got := c.Gather(cmd[:], 0)
	w := c.WritableLen()
	if w < 1 {
		n.warn.Printf("bad_ctrl", "control: command without an ack byte")
		return served{op: netOpCtrlBad}
	}
	ack, op := byte(netCtrlErr), netOpCtrlBad
	if got >= 2 && cmd[0] == netCtrlMQ && cmd[1] == netCtrlMQVQPairsSet && n.features&netFMQ != 0 {
		k := int(binary.LittleEndian.Uint16(cmd[2:]))
		if got == 4 && c.ReadableLen() == 4 && k >= 1 && k <= n.readyPairs() {
			// A tap queue that will not attach (the host deleted the
			// tap) is answered VIRTIO_NET_ERR, the pairs in use
			// unchanged, as the driver then assumes: answered OK, the
			// guest used a pair whose frames then counted as its own
			// fault (found by an audit).
			if prev := n.inUse; n.usePairs(k) {
				ack, op = netCtrlOK, netOpCtrl
			} else {
				n.warn.Printf("host_io", "control: VQ_PAIRS_SET to %d: a tap queue would not attach; %d pairs stay in use", k, prev)
				n.usePairs(prev)
			}
		} else {
			n.warn.Printf("bad_ctrl", "control: VQ_PAIRS_SET to %d of %d pairs (%d bytes)", k, len(n.pairs), c.ReadableLen())
		}
	} else {
		n.warn.Printf("bad_ctrl", "control: class %d command %d not offered", cmd[0], cmd[1])
	}
	c.Scatter([]byte{ack}, 0)
	return served{written: 1, op: op} // the ack: what the device wrote
}

// transmitLocked sends up to netBatch available frames to the tap and
// reports whether there may be more; txMu must be held.
func (p *netPair) transmitLocked() (more bool, err error) {
	if p.txq == nil || p.txErr != nil {
		return false, p.txErr
	}
	more, err = serveBatch(p.mem, p.txq, p.features, p.irq, 2*p.index+1, netBatch, p.transmit)
	if err != nil {
		p.txErr = fmt.Errorf("virtio-net: transmitq: %w", err)
	}
	return more, p.txErr
}

// Kinds of request, for telemetry (RequestOps).
const (
	netOpRx Op = 0 // on receiveq

	netOpTx        Op = 0 // on transmitq
	netOpTxDropped Op = 1

	netOpCtrl    Op = 0 // on the control queue
	netOpCtrlBad Op = 1
)

// RequestOps implements requestOps: frames received; frames sent, and
// those dropped (malformed, or the tap refused them); control commands
// done, and those refused.
func (n *Net) RequestOps(queue int) []string {
	switch {
	case queue == n.ctrlIndex():
		return []string{"ctrl", "ctrl_bad"}
	case queue%2 == 0:
		return []string{"rx"}
	}
	return []string{"tx", "tx_dropped"}
}

// transmit writes the frame in c to the tap, or drops it. The header
// is copied out of guest memory before it is checked, and the checked
// copy is what the tap gets, so the guest cannot change what was
// checked; the frame itself goes from guest memory (the tap copies it
// before the kernel parses it, and its length, which the checks use,
// is the descriptors'). txMu must be held.
func (p *netPair) transmit(c *Chain) served {
	l := c.ReadableLen()
	p.txFrames.Add(1)
	p.txFrameBytes.Add(l)
	if !p.active {
		// A driver must not transmit on a pair beyond the count it
		// set with VQ_PAIRS_SET, nor before it set one on any pair but
		// the first (virtio 1.2, 5.1.6.5.5); its tap queue may be
		// detached. The frame is dropped as the guest's fault, and the
		// chain goes back, so the driver does not wait for it.
		return p.dropInvalid("bad_queue", "transmit: dropped a %d-byte packet on queue pair %d, which the driver has not enabled", l, p.index)
	}
	if l < NetHdrLen || l > netMaxPacket {
		return p.dropInvalid("bad_packet", "transmit: dropped a %d-byte packet (header %d, limit %d)", l, NetHdrLen, netMaxPacket)
	}
	c.Gather(p.txHdr[:], 0)
	hdr, err := parseNetHdr(p.txHdr[:]).checkTx(p.features, int(l)-NetHdrLen)
	if err != nil {
		return p.dropInvalid("bad_header", "transmit: dropped a %d-byte packet: %v", l, err)
	}
	hdr.put(p.txHdr[:], 0)
	p.txIovs = c.AppendBuffers(append(p.txIovs[:0], p.txHdr[:]), false, NetHdrLen, l-NetHdrLen)
	if len(p.txIovs) > netMaxIovs {
		// One writev takes at most IOV_MAX buffers, and Linux sends at
		// most MAX_SKB_FRAGS+2: a longer chain is the guest's doing.
		return p.dropInvalid("bad_packet", "transmit: dropped a %d-byte packet in %d buffers, more than %d", l, len(p.txIovs)-1, netMaxIovs-1)
	}
	if err := p.tap.WriteFrame(p.txIovs); err != nil {
		if errors.Is(err, unix.EINVAL) {
			// The tap's own checks refuse the frame (shorter than an
			// Ethernet header, a GSO header the kernel's
			// virtio_net_hdr_to_skb rejects): the guest's doing, so
			// its warnings do not read as the host's failures.
			return p.dropInvalid("bad_packet", "transmit: the tap refused a %d-byte packet: %v", l, err)
		}
		p.txDropped.Add(1)
		if !p.Net.closed.Load() {
			p.warn.Printf("host_io", "transmit: write tap: %v", err)
		}
		return served{op: netOpTxDropped}
	}
	p.txPackets.Add(1)
	p.txBytes.Add(uint64(l - NetHdrLen))
	return served{op: netOpTx, bytes: l - NetHdrLen}
}

// dropInvalid drops a frame the guest should not have sent, counting it
// as its fault, and logs why (format and args, under the rate-limited
// kind).
func (p *netPair) dropInvalid(kind, format string, args ...any) served {
	p.txDropped.Add(1)
	p.txInvalid.Add(1)
	p.warn.Printf(kind, format, args...)
	return served{op: netOpTxDropped}
}

// receiveLoop reads frames from the tap into the guest's receive
// buffers, until Close. Each frame is read and delivered with mu held,
// so a Reset never finds the device writing into buffers the driver is
// about to take back; mu is free while the goroutine waits for the tap
// or for buffers.
func (p *netPair) receiveLoop() {
	defer close(p.done)
	rc, err := p.tap.SyscallConn()
	if err != nil {
		p.warn.Printf("host_io", "receive: %v; receive stopped", err)
		return
	}
	p.rxBounce = make([]byte, netMaxPacket)
	for {
		// Read only while active: while the device is down frames wait
		// in the tap's queue (which drops when full, like a wire).
		p.mu.Lock()
		for (!p.active || p.paused) && !p.closed {
			p.cond.Wait()
		}
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			defer p.signalRx() // one interrupt for the batch
			for range netBatch {
				if !p.active || p.paused || p.closed {
					return true
				}
				if rerr = p.receive(int(fd)); rerr != nil {
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
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if !closed {
				// A tap that fails a read (its interface deleted) will
				// not recover: stop rather than spin.
				p.warn.Printf("host_io", "receive: read tap: %v; receive stopped", err)
			}
			return
		}
	}
}

// signalRx raises receiveq's interrupt for the frames pushed since the
// last call, if the driver wants to hear of them: with EVENT_IDX a
// driver busy polling the ring (NAPI) does not. The receive goroutine
// calls it once per batch it reads, and before it waits for buffers,
// not after every frame: a guest flooded with small packets then takes
// an interrupt per ~17 of them, not per ~1.6 (README, Network datapath).
// mu must be held.
func (p *netPair) signalRx() {
	if !p.rxUnsignalled || p.rxq == nil {
		return
	}
	p.rxUnsignalled = false
	tel := p.rxq.tel
	if p.rxq.NeedsInterrupt(p.mem, p.features) {
		if err := p.irq.Queue(2 * p.index); err != nil {
			p.warn.Printf("host_io", "receive: interrupt: %v", err)
		}
	}
	tel.interrupted(tel.now())
}

// holdRx pops receive buffers until those held take a frame of size
// bytes (with MRG_RXBUF) or one buffer is held (without: a frame takes
// exactly one buffer), and reports whether they do. When the ring runs
// empty first it returns false, or with wait waits for the driver to
// post more, and gives up (false) if the device went down, was reset and
// activated meanwhile (the new buffers do not hold the part of a frame
// already read), or receiveq broke; or if every buffer the ring can hold
// is held and still short: that frame can never fit. mu must be held;
// it is released only while waiting.
func (p *netPair) holdRx(size uint64, mergeable, wait bool) bool {
	gen := p.gen
	var room uint64
	for _, c := range p.rxHeld {
		room += c.WritableLen()
	}
	for {
		if !p.active || p.closed || p.rxErr != nil || p.gen != gen {
			return false
		}
		if p.paused {
			// Nothing moves while the VM is paused, not even an
			// interrupt: the frame in hand waits for Resume.
			if !wait {
				return false
			}
			p.cond.Wait()
			continue
		}
		if (mergeable && room >= size) || (!mergeable && len(p.rxHeld) > 0) {
			return true
		}
		c, err := p.rxq.Pop(p.mem)
		switch {
		case err != nil:
			p.failReceive(err)
			return false
		case c != nil && mergeable && c.WritableLen() < NetHdrLen:
			// Every mergeable buffer holds at least a header (5.1.6.3.1).
			p.failReceive(fmt.Errorf("receive buffer %d of %d bytes, smaller than the %d-byte header", c.Head, c.WritableLen(), NetHdrLen))
			return false
		case c != nil:
			p.rxHeld = append(p.rxHeld, c)
			room += c.WritableLen()
		case !wait:
			return false
		case len(p.rxHeld) >= int(p.rxq.Size()):
			// Keep them for smaller frames.
			p.warn.Printf("rx_buffer", "receive: dropped a %d-byte packet: %d receive buffers hold %d bytes", size, len(p.rxHeld), room)
			return false
		default:
			// Pop found the ring empty after asking for a notification,
			// so the driver's next buffer comes with a Notify(0); it
			// must first hear of the frames already pushed.
			p.signalRx()
			p.cond.Wait()
		}
	}
}

// receive reads one frame from the tap into the held receive buffers
// (and the bounce buffer for what they cannot take), checks its header,
// and hands it to the guest: with MRG_RXBUF in as many buffers as it
// takes, waiting for the guest to post more if the frame went on into
// the bounce buffer; without, in one buffer that holds it whole. It
// returns unix.EAGAIN when the tap has no frame, another error when the
// tap failed; a frame it cannot deliver is dropped and counted. The
// interrupt for a frame is signalRx's. mu must be held; it is released
// only while waiting for buffers.
func (p *netPair) receive(fd int) error {
	if p.rxErr != nil {
		// A broken receiveq drops what arrives until Reset.
		m, err := nbsys.Read(fd, p.rxBounce)
		if err == nil && m > 0 {
			p.rxDropped.Add(1)
		}
		return err
	}
	mergeable := p.features&netFMrgRxbuf != 0
	// As many buffers as the largest frame takes, or as the ring has:
	// the frame is read into them.
	if !p.holdRx(netMaxPacket, mergeable, false) && p.rxErr != nil {
		return nil
	}
	// The held buffers first, whole and in order, up to the largest
	// frame and to what one readv takes (a chain can have thousands of
	// descriptors); a frame without MRG_RXBUF may use only the first.
	// The bounce buffer takes the rest.
	iovs := p.rxIovs[:0]
	var room uint64
	inIovs := 0 // held chains in iovs
	for _, c := range p.rxHeld {
		if (!mergeable && inIovs > 0) || room == netMaxPacket {
			break
		}
		more := c.AppendBuffers(iovs, true, 0, netMaxPacket-room)
		if len(more) >= netMaxIovs {
			break
		}
		iovs = more
		room += min(c.WritableLen(), netMaxPacket-room)
		inIovs++
	}
	if room < netMaxPacket {
		iovs = append(iovs, p.rxBounce[:netMaxPacket-room])
	}
	p.rxIovs = iovs
	m, err := nbsys.Readv(fd, iovs, &p.rxRaw)
	if err != nil {
		return err
	}
	tel := p.rxq.tel
	start := tel.now()
	if m < NetHdrLen {
		p.rxDropped.Add(1)
		return nil
	}
	var hb [NetHdrLen]byte
	gatherIovs(hb[:], iovs)
	hdr, err := parseNetHdr(hb[:]).checkRx(p.features, m-NetHdrLen)
	if err != nil {
		p.rxDropped.Add(1)
		p.warn.Printf("rx_header", "receive: dropped a %d-byte packet: %v", m, err)
		return nil
	}
	used := 0
	if !mergeable {
		// A frame takes exactly one buffer, which must hold it whole: a
		// buffer too small stays for a smaller frame rather than hand
		// back a truncated one.
		inPlace := inIovs > 0
		if !inPlace && !p.holdRx(uint64(m), false, true) {
			p.rxDropped.Add(1)
			return nil
		}
		if w := p.rxHeld[0].WritableLen(); w < uint64(m) {
			p.rxDropped.Add(1)
			p.warn.Printf("rx_buffer", "receive: dropped a %d-byte packet: receive buffer of %d bytes", m, w)
			return nil
		}
		if !inPlace {
			p.rxHeld[0].Scatter(p.rxBounce[:m], 0)
		}
		used = 1
	} else {
		// The buffers the frame fills, in order, the last one partly;
		// each holds at least a header (holdRx let no smaller one in).
		left := uint64(m)
		for used < inIovs && left > 0 {
			left -= min(left, p.rxHeld[used].WritableLen())
			used++
		}
		if left > 0 {
			// The rest is in the bounce buffer, from its start: more
			// buffers take it.
			if !p.holdRx(uint64(m), true, true) {
				p.rxDropped.Add(1)
				return nil
			}
			bounce := p.rxBounce[:left]
			for len(bounce) > 0 {
				bounce = bounce[p.rxHeld[used].Scatter(bounce, 0):]
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
	p.rxHeld[0].Scatter(hb[:], 0)
	left := uint64(m)
	for _, c := range p.rxHeld[:used] {
		k := min(left, c.WritableLen())
		if err := p.rxq.Put(p.mem, c.Head, uint32(k)); err != nil {
			p.failReceive(err)
			return nil
		}
		left -= k
	}
	p.rxq.Publish()
	for _, c := range p.rxHeld[:used] {
		p.rxq.Recycle(c) // a buffer per ~1.5-4 KiB: Pop reuses them
	}
	p.rxHeld = p.rxHeld[:copy(p.rxHeld, p.rxHeld[used:])]
	p.rxPackets.Add(1)
	p.rxBytes.Add(uint64(m - NetHdrLen))
	tel.pushed(netOpRx, uint64(m-NetHdrLen), start, popped, tel.now())
	p.rxUnsignalled = true
	return nil
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
func (p *netPair) failReceive(err error) {
	p.rxErr = fmt.Errorf("virtio-net: receiveq: %w", err)
	p.irq.Fail(p.rxErr)
}
