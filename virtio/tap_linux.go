package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/govmm/govmm/internal/nbsys"
	"golang.org/x/sys/unix"
)

// Tap is a Linux tap interface carrying Ethernet frames, each preceded
// by a NetHdrLen-byte virtio_net_hdr_v1: the framing Net expects.
type Tap struct {
	f    *os.File
	name string
	iovs []unix.Iovec // WriteFrame's, reused: one queue pair writes a tap
}

// OpenTap attaches to the tap interface name, creating it if it does not
// exist (which needs CAP_NET_ADMIN); an empty name or one with %d lets
// the kernel choose. The interface still has to be brought up and
// bridged or addressed by the host's network setup.
func OpenTap(name string) (*Tap, error) { return openTap(name, false) }

// OpenTapQueues attaches n queues to the multiqueue tap name
// (IFF_MULTI_QUEUE: `ip tuntap add ... multi_queue`), creating it if it
// does not exist; the kernel spreads the frames it sends among the
// queues by flow. An existing tap made without multi_queue refuses
// (EINVAL). One queue is OpenTap's single-queue tap, or one queue of an
// existing multiqueue tap.
func OpenTapQueues(name string, n int) ([]*Tap, error) {
	// A multiqueue tap takes another queue from anyone who asks: a second
	// VM given the tap of a running one joined it without a word, and the
	// kernel spread the first VM's traffic over both (found by an audit;
	// QEMU refuses queues=1 on a multiqueue tap). A tap with queues open
	// already is refused.
	if open, known := tapQueuesOpen(name); known && open > 0 {
		return nil, fmt.Errorf("open tap %q: %d of its queues are open already (another VM uses it): refused", name, open)
	}
	if n == 1 {
		t, err := OpenTap(name)
		if errors.Is(err, unix.EINVAL) {
			// The tap exists with multi_queue: one queue of it.
			t, err = openTap(name, true)
		}
		if err != nil {
			return nil, err
		}
		return []*Tap{t}, nil
	}
	var taps []*Tap
	for range n {
		t, err := openTap(name, true)
		if err != nil {
			for _, t := range taps {
				t.Close()
			}
			return nil, err
		}
		taps = append(taps, t)
		name = t.name // a pattern like tap%d names the first queue's tap
	}
	return taps, nil
}

// tapQueuesOpen returns how many queues of the tap called name are open,
// attached or not, from the kernel's link information
// (IFLA_TUN_NUM_QUEUES and IFLA_TUN_NUM_DISABLED_QUEUES, since Linux
// 4.19); known is false where the interface does not exist (OpenTap will
// make it) or the kernel does not say.
func tapQueuesOpen(name string) (open int, known bool) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, false
	}
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, false
	}
	defer unix.Close(s)
	req := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofIfInfomsg)
	le := binary.NativeEndian
	le.PutUint32(req[0:], uint32(len(req)))
	le.PutUint16(req[4:], unix.RTM_GETLINK)
	le.PutUint16(req[6:], unix.NLM_F_REQUEST)
	le.PutUint32(req[8:], 1) // sequence
	le.PutUint32(req[unix.NLMSG_HDRLEN+4:], uint32(ifi.Index))
	if err := unix.Sendto(s, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, false
	}
	buf := make([]byte, 64<<10)
	n, _, err := unix.Recvfrom(s, buf, 0)
	if err != nil {
		return 0, false
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil || len(msgs) == 0 || msgs[0].Header.Type != unix.RTM_NEWLINK {
		return 0, false
	}
	attrs, err := syscall.ParseNetlinkRouteAttr(&msgs[0])
	if err != nil {
		return 0, false
	}
	for _, a := range attrs {
		if a.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_LINKINFO {
			continue
		}
		data := nestedAttr(a.Value, unix.IFLA_INFO_DATA)
		queues := nestedAttr(data, unix.IFLA_TUN_NUM_QUEUES)
		disabled := nestedAttr(data, unix.IFLA_TUN_NUM_DISABLED_QUEUES)
		if len(queues) < 4 || len(disabled) < 4 {
			return 0, false
		}
		return int(le.Uint32(queues)) + int(le.Uint32(disabled)), true
	}
	return 0, false
}

// nestedAttr returns the value of the netlink attribute of type typ in
// b, a run of attributes, or nil.
func nestedAttr(b []byte, typ uint16) []byte {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:]))
		t := binary.NativeEndian.Uint16(b[2:]) &^ unix.NLA_F_NESTED
		if l < unix.SizeofRtAttr || l > len(b) {
			return nil
		}
		if t == typ {
			return b[unix.SizeofRtAttr:l]
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return nil
}

func openTap(name string, multiQueue bool) (*Tap, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("open tap %q: %w", name, err)
	}
	// Non-blocking so that os.File puts the fd in Go's poller: reads
	// then park a goroutine instead of a thread, and Close ends them.
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open tap %q: /dev/net/tun: %w", name, err)
	}
	// NO_PI: no packet-information prefix; VNET_HDR: a virtio-net header
	// instead, sized to the virtio 1.x one so frames pass through as is.
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if multiQueue {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tap %q: TUNSETIFF: %w", name, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, NetHdrLen); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tap %q: TUNSETVNETHDRSZ: %w", name, err)
	}
	return &Tap{f: os.NewFile(uintptr(fd), "/dev/net/tun"), name: ifr.Name()}, nil
}

// Name is the interface name the kernel gave the tap.
func (t *Tap) Name() string { return t.name }

// SyscallConn gives access to the tap's descriptor, non-blocking and in
// Go's poller, on which each read carries one frame, virtio-net header
// first.
func (t *Tap) SyscallConn() (syscall.RawConn, error) { return t.f.SyscallConn() }

// WriteFrame writes one frame, virtio-net header first, gathered from
// bufs.
func (t *Tap) WriteFrame(bufs [][]byte) error {
	if err := writeFrame(t.f, bufs, &t.iovs); err != nil {
		return fmt.Errorf("tap %s: %w", t.name, err)
	}
	return nil
}

// tapWriteWait bounds how long a frame waits for room in the tap. A
// tap takes frames at once unless its send buffer was limited
// (TUNSETSNDBUF) and the host does not drain it; after this long the
// frame is dropped, as a NIC gives up on a stuck transmit, so that a
// notifier serving transmitq always returns (Transport.Close and reset
// wait for it) and the guest gets its buffers back.
const tapWriteWait = time.Second

// writeFrame writes bufs to f with one writev, waiting up to
// tapWriteWait for room if f (non-blocking, in the poller) has none;
// iovs is scratch space for the writev.
func writeFrame(f *os.File, bufs [][]byte, iovs *[]unix.Iovec) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	waited := false
	defer func() {
		if waited {
			f.SetWriteDeadline(time.Time{})
		}
	}()
	if err := rc.Write(func(fd uintptr) bool {
		_, werr = nbsys.Writev(int(fd), bufs, iovs)
		if werr == unix.EAGAIN && !waited {
			// Only a full tap pays for the deadline's timer.
			waited = true
			f.SetWriteDeadline(time.Now().Add(tapWriteWait))
		}
		return werr != unix.EAGAIN
	}); err != nil {
		return err
	}
	return werr
}

// SetOffload sets the offloads (TUN_F_* flags) the tap may use in the
// frames it hands us: partial checksums, TCP segments up to 64 KiB.
func (t *Tap) SetOffload(flags uint) error {
	return t.ioctl(fmt.Sprintf("TUNSETOFFLOAD %#x", flags), func(fd int) error { return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, int(flags)) })
}

// EnableQueue attaches (on) or detaches this queue of a multiqueue tap
// (TUNSETQUEUE): the kernel sends frames only to attached queues, and
// drops what a detached queue held.
func (t *Tap) EnableQueue(on bool) error {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_DETACH_QUEUE)
	if on {
		ifr.SetUint16(unix.IFF_ATTACH_QUEUE)
	}
	return t.ioctl("TUNSETQUEUE", func(fd int) error { return unix.IoctlIfreq(fd, unix.TUNSETQUEUE, ifr) })
}

// ioctl runs one ioctl named what on the tap's descriptor.
func (t *Tap) ioctl(what string, call func(fd int) error) error {
	rc, err := t.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("tap %s: %w", t.name, err)
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = call(int(fd)) }); err != nil {
		return fmt.Errorf("tap %s: %w", t.name, err)
	}
	if ierr != nil {
		return fmt.Errorf("tap %s: %s: %w", t.name, what, ierr)
	}
	return nil
}

// Close detaches from the interface (deleting it, unless it was made
// persistent) and ends a Read in progress.
func (t *Tap) Close() error { return t.f.Close() }
