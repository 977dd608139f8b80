package virtio

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTapMQPairsFlap: a guest that flips VQ_PAIRS_SET between 1 and 2
// while the host sends it frames over a real multiqueue tap keeps both
// receive goroutines: pair 1 receives again after the last
// VQ_PAIRS_SET 2, and receives nothing while it is disabled.
func TestTapMQPairsFlap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("real tap test needs root (CAP_NET_ADMIN)")
	}
	taps, err := OpenTapQueues("govmmcq%d", 2)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENODEV) {
		t.Skipf("no usable /dev/net/tun: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	name := taps[0].Name()
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	sock, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	ifr, _ := unix.NewIfreq(name)
	unix.IoctlIfreq(sock, unix.SIOCGIFFLAGS, ifr)
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(sock, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	unix.Close(sock)

	mac := net.HardwareAddr{0x52, 0x54, 0, 0xab, 0xcd, 0x01}
	n, err := NewNet([]NetTap{taps[0], taps[1]}, mac, true)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	mem := make(testMem, testMemSize)
	var d [5]*testDriver
	var qs []*Queue
	for i := range d {
		size := uint16(netQueueSize)
		if i == 4 {
			size = netCtrlQueueSize
		}
		d[i] = newTestDriverIn(t, mem, NewQueue(size), size, 0x10000*uint64(i+1), 0)
		d[i].heap = 0x100000 + 0x80000*uint64(i)
		qs = append(qs, d[i].q)
	}
	irq := newTestIRQ()
	if err := n.Activate(mem, testNetFeatures(n), qs, irq); err != nil {
		t.Fatal(err)
	}
	bufAddr := [2][]uint64{}
	for p := range 2 {
		for range 128 {
			_, a := d[2*p].add(wr(1526))
			bufAddr[p] = append(bufAddr[p], a[0])
		}
		n.Notify(2 * p)
	}
	recycle := func(p int) int {
		k := 0
		for {
			id, _, ok := d[2*p].popUsed()
			if !ok {
				return k
			}
			d[2*p].publish(uint16(id))
			k++
		}
	}
	pairs := func(k byte) {
		t.Helper()
		_, a := d[4].add(rd([]byte{netCtrlMQ, netCtrlMQVQPairsSet, k, 0}), wr(1))
		if err := n.Notify(4); err != nil {
			t.Fatal(err)
		}
		d[4].mustUsed()
		if mem[a[1]] != netCtrlOK {
			t.Fatalf("VQ_PAIRS_SET %d: ack %d", k, mem[a[1]])
		}
	}

	// The host end: UDP/IPv4 frames of many flows, spread over the queues.
	ps, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ps)
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index, Halen: 6}
	copy(to.Addr[:], mac)
	udp := func(port uint16) []byte {
		f := make([]byte, 14+20+8+18)
		copy(f, mac)
		copy(f[6:], []byte{2, 0, 0, 0, 0, 1})
		binary.BigEndian.PutUint16(f[12:], unix.ETH_P_IP)
		ip := f[14:]
		ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
		binary.BigEndian.PutUint16(ip[2:], 20+8+18)
		copy(ip[12:], []byte{10, 0, 0, 1})
		copy(ip[16:], []byte{10, 0, 0, 2})
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		binary.BigEndian.PutUint16(ip[20:], port)
		binary.BigEndian.PutUint16(ip[22:], 9)
		binary.BigEndian.PutUint16(ip[24:], 8+18)
		return f
	}
	send := func(k int) {
		for i := range k {
			unix.Sendto(ps, udp(uint16(1000+i)), 0, to)
		}
	}
	waitRx := func(p int, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for d[2*p].usedIdx() == d[2*p].usedSeen {
			if time.Now().After(deadline) {
				t.Fatalf("%s: nothing on receiveq%d", what, p+1)
			}
			send(64)
			time.Sleep(5 * time.Millisecond)
		}
	}
	pairs(2)
	waitRx(1, "before the flaps")
	recycle(0)
	recycle(1)

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			send(16)
			time.Sleep(200 * time.Microsecond)
		}
	}()
	for i := range 30 {
		pairs(1)
		recycle(1)
		before := d[2].usedIdx()
		time.Sleep(3 * time.Millisecond)
		if after := d[2].usedIdx(); after != before {
			t.Errorf("round %d: %d frames on receiveq2 after VQ_PAIRS_SET 1", i, after-before)
		}
		pairs(2)
		recycle(0)
		n.Notify(0)
		n.Notify(2)
		time.Sleep(time.Millisecond)
	}
	close(stop)
	<-done
	select {
	case <-n.pairs[1].done:
		t.Fatal("pair 1's receive goroutine ended")
	case <-n.pairs[0].done:
		t.Fatal("pair 0's receive goroutine ended")
	default:
	}
	recycle(0)
	recycle(1)
	n.Notify(0)
	n.Notify(2)
	waitRx(1, "after the flaps")
	waitRx(0, "after the flaps")
}
