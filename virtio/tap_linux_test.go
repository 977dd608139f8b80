package virtio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testEtherType is the IEEE local experimental EtherType, so the test's
// frames stand out from the IPv6 chatter of a freshly upped interface.
const testEtherType = 0x88b5

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openTestTap opens a real tap and brings it up, or skips the test.
func openTestTap(t *testing.T) (*Tap, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("real tap test needs root (CAP_NET_ADMIN)")
	}
	tap, err := OpenTap("govmmtest%d")
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENODEV) {
		t.Skipf("no usable /dev/net/tun: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	ifi, err := net.InterfaceByName(tap.Name())
	if err != nil {
		tap.Close()
		t.Fatalf("tap %q not visible: %v", tap.Name(), err)
	}
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sock)
	ifr, _ := unix.NewIfreq(tap.Name())
	if err := unix.IoctlIfreq(sock, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(sock, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("bring %s up: %v", tap.Name(), err)
	}
	return tap, ifi.Index
}

func TestTapOpenClose(t *testing.T) {
	tap, ifindex := openTestTap(t)
	name := tap.Name()
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	// By index: another test process may take the name at once.
	if _, err := net.InterfaceByIndex(ifindex); err == nil {
		t.Errorf("tap %s outlives Close", name)
	}
	if _, err := OpenTap("a-name-longer-than-ifnamsiz"); err == nil {
		t.Error("OpenTap with an overlong name succeeded")
	}
}

// TestTapNet runs virtio-net over a real tap: a frame the guest sends
// shows up on the host interface, and one sent to the interface reaches
// the guest.
func TestTapNet(t *testing.T) {
	tap, ifindex := openTestTap(t)
	mac := net.HardwareAddr{0x52, 0x54, 0, 0xab, 0xcd, 0xef}
	n := mustNewNet(t, tap, mac, true)
	defer n.Close()

	// The host end: a packet socket on the tap, for our EtherType only.
	ps, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(testEtherType)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ps)
	if err := unix.Bind(ps, &unix.SockaddrLinklayer{Protocol: htons(testEtherType), Ifindex: ifindex}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval((5 * time.Second).Nanoseconds())
	unix.SetsockoptTimeval(ps, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

	rx := newTestDriver(t, netQueueSize)
	tx := newTestDriverAt(t, NewQueue(netQueueSize), netQueueSize, 0x200000, 0)
	tx.mem = rx.mem
	irq := newTestIRQ()
	if err := n.Activate(rx.mem, testNetFeatures(n), []*Queue{rx.q, tx.q}, irq); err != nil {
		t.Fatal(err)
	}

	ether := func(dst, src net.HardwareAddr, payload string) []byte {
		f := append(append(append([]byte{}, dst...), src...), 0, 0)
		binary.BigEndian.PutUint16(f[12:], testEtherType)
		return append(f, payload...)
	}
	broadcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

	// Guest to host.
	out := ether(broadcast, mac, "from the guest, padded to the minimum frame")
	tx.add(rd(make([]byte, NetHdrLen)), rd(out))
	if err := n.Notify(1); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	m, _, err := unix.Recvfrom(ps, buf, 0)
	if err != nil {
		t.Fatalf("host did not see the guest's frame: %v", err)
	}
	if !bytes.Equal(buf[:m], out) {
		t.Errorf("host got % x\nwant % x", buf[:m], out)
	}
	// A frame the tap refuses (no Ethernet header after the virtio-net
	// header) is the guest's fault, counted as such.
	tx.add(rd(make([]byte, NetHdrLen)))
	if err := n.Notify(1); err != nil {
		t.Fatal(err)
	}
	if s := n.Stats(); s.TxInvalid != 1 || s.TxDropped != 1 || s.TxPackets != 1 {
		t.Errorf("after a frame the tap refused: %+v, want 1 packet sent, 1 dropped as invalid", s)
	}

	// Host to guest. The host also sends its own traffic (IPv6 router
	// solicitations, ...) once the link is up: skip it.
	in := ether(mac, net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, "from the host, padded to the minimum frame")
	to := &unix.SockaddrLinklayer{Protocol: htons(testEtherType), Ifindex: ifindex, Halen: 6}
	copy(to.Addr[:], mac)
	if err := unix.Sendto(ps, in, 0, to); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("guest did not receive the host's frame")
		}
		rx.add(wr(1526))
		n.Notify(0)
		select {
		case <-irq.ch:
		case <-time.After(100 * time.Millisecond):
		}
		found := false
		for {
			id, l, ok := rx.popUsed()
			if !ok {
				break
			}
			// Buffers are used in order; recover each one's address
			// from the descriptor table.
			addr := binary.LittleEndian.Uint64(rx.mem[rx.desc+16*uint64(id):])
			f := rx.mem[addr+NetHdrLen : addr+uint64(l)]
			if len(f) >= 14 && binary.BigEndian.Uint16(f[12:]) == testEtherType {
				if !bytes.HasPrefix(f, in) {
					t.Errorf("guest got % x\nwant % x", f, in)
				}
				found = true
			}
		}
		if found {
			return
		}
	}
}

// A multiqueue tap whose queues another process has open is refused,
// one queue or several: a second VM given a running VM's tap joined it
// and took part of its traffic (an audit). The kernel's count of open
// queues is what tells; a tap nobody has open is taken as before.
func TestTapInUseRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("real tap test needs root (CAP_NET_ADMIN)")
	}
	first, err := OpenTapQueues("govmmmq%d", 2)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENODEV) {
		t.Skipf("no usable /dev/net/tun: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	name := first[0].Name()
	if open, known := tapQueuesOpen(name); !known || open != 2 {
		t.Skipf("the kernel does not tell the tap's open queues (%d, %v)", open, known)
	}
	for _, n := range []int{1, 2} {
		if taps, err := OpenTapQueues(name, n); err == nil || !strings.Contains(err.Error(), "queues are open already") {
			for _, tap := range taps {
				tap.Close()
			}
			t.Errorf("%d queue(s) of a tap in use: %v, want it refused", n, err)
		}
	}
	for _, tap := range first {
		tap.Close()
	}
}
