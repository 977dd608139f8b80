package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/virtio"
	"golang.org/x/sys/unix"
)

func TestNetFlags(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	var n netFlags
	for _, v := range []string{"tap=tap0", "tap=tap1,mac=52:54:00:12:34:56", "mac=52-54-00-12-34-56,tap=tap2", "tap=tap3,offload=off", "tap=tap4,queues=2", "tap=tap5,txwait=all", "tap=tap6,txwait=off", "tap=tap7,txwait=small"} {
		if err := n.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	want := netFlags{{Tap: "tap0"}, {Tap: "tap1", MAC: mac}, {Tap: "tap2", MAC: mac}, {Tap: "tap3", NoOffload: true}, {Tap: "tap4", Queues: 2},
		{Tap: "tap5", TxWait: virtio.NetTxWaitAll}, {Tap: "tap6", TxWait: virtio.NetTxWaitOff}, {Tap: "tap7"}}
	if !reflect.DeepEqual(n, want) {
		t.Errorf("nets %+v, want %+v", n, want)
	}
	if got := n.String(); got != "tap=tap0 tap=tap1,mac=52:54:00:12:34:56 tap=tap2,mac=52:54:00:12:34:56 tap=tap3,offload=off tap=tap4,queues=2 tap=tap5,txwait=all tap=tap6,txwait=off tap=tap7" {
		t.Errorf("String() = %q", got)
	}
	for _, tc := range []struct{ in, want string }{
		{"", "want key=value"},
		{"tap0", "want key=value"},
		{"tap=", "empty interface name"},
		{"mac=52:54:00:12:34:56", "missing tap="},
		{"tap=tap0,mac=52:54:00:12:34", "not an Ethernet address"},
		{"tap=tap0,mac=00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "not an Ethernet address"},
		{"tap=tap0,model=e1000", `unknown net option "model"`},
		{"tap=tap0,offload=maybe", "want on or off"},
		{"tap=tap0,queues=0", "from 1 to 16"},
		{"tap=tap0,queues=17", "from 1 to 16"},
		{"tap=tap0,queues=two", "from 1 to 16"},
		{"tap=tap0,txwait=never", "want small, all, off"},
	} {
		err := (&netFlags{}).Set(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Set(%q) = %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
}

// Values that parse but that no VM could use are refused before
// anything is opened, in one line; so is a tap that cannot be opened.
func TestNetBadConfig(t *testing.T) {
	// vmm.New validates the config before it opens /dev/kvm or reads
	// the kernel, so any regular file will do.
	kernel := writeFile(t, "vmlinux", []byte("not read"))
	for _, tc := range []struct{ net, want string }{
		{"tap=tap0,mac=01:00:5e:00:00:01", "not a unicast address"},
		{"tap=averyveryverylongtapname", "longer than 15 bytes"},
		{"tap=tap0,mac=52:54:00:12:34:56,bogus=1", `unknown net option "bogus"`},
	} {
		checkOneLineError(t, tc.want, "run", "--kernel", kernel, "--net", tc.net)
	}

	// An interface that exists and is no tap (every namespace has lo):
	// TUNSETIFF fails, so nothing is created or changed.
	needKVM(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to open /dev/kvm and /dev/net/tun")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no tap devices: %v", err)
	}
	checkOneLineError(t, `open tap "lo": TUNSETIFF`, "run", "--kernel", needGuest(t), "--net", "tap=lo")
}

// checkOneLineError runs govmm with args and checks that it fails with
// one line of error that contains want.
func checkOneLineError(t *testing.T, want string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, govmmBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	msg := strings.TrimRight(stderr.String(), "\n")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("govmm %s: exit %v, want a failure", strings.Join(args, " "), err)
	} else if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "govmm: ") || !strings.Contains(msg, want) {
		t.Errorf("govmm %s: error %q does not say %q in one line", strings.Join(args, " "), msg, want)
	}
}

// The guest network of TestNet: it exists only inside the test's own
// network namespace.
const (
	netHostAddr  = "10.0.2.1"
	netGuestAddr = "10.0.2.15"
	netGuestMAC  = "52:54:00:12:34:56"
	netTimeout   = 90 * time.Second // one boot and its transfers
)

// netNamespace makes a network namespace for the test with tap0 in it
// at netHostAddr/24, up, and deletes both when the test ends. It skips
// where that needs what the machine lacks.
func netNamespace(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and a tap")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no tap devices: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (apt-get install iproute2)")
	}
	ns := "govmm-test-" + rand.Text()[:10]
	ip(t, "netns", "add", ns)
	t.Cleanup(func() {
		// The tap would go with the namespace; deleting it first keeps
		// the order obvious.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		exec.CommandContext(ctx, "ip", "-n", ns, "link", "del", "tap0").Run()
		if out, err := exec.CommandContext(ctx, "ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	// Made without vnet_hdr: govmm's TUNSETIFF sets the flags it needs
	// when it attaches, like a VMM given a tap by a management layer.
	ip(t, "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
	ip(t, "-n", ns, "addr", "add", netHostAddr+"/24", "dev", "tap0")
	ip(t, "-n", ns, "link", "set", "tap0", "up")
	return ns
}

// ip runs an ip(8) command, failing the test if it fails.
func ip(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNetns runs f on a thread inside network namespace ns: sockets f
// opens belong to ns. If the thread cannot switch back, its goroutine
// ends still locked and the runtime retires the thread.
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer home.Close()
		target, err := os.Open("/var/run/netns/" + ns) // iproute2's NETNS_RUN_DIR
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		err = f()
		if serr := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); serr != nil {
			errc <- err
			return // still locked: the thread dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// listenIn opens a TCP listener inside network namespace ns.
func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	err := inNetns(ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// bootNet runs govmm with --net tap=tap0 inside ns and the guest at
// netGuestAddr, the guest running run (a govmm.run value); opts are
// more --net options (",offload=off").
func bootNet(t *testing.T, ns, run, opts string) (console, stderr string) {
	t.Helper()
	kernel := needGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), netTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, govmmBin, "run",
		"--kernel", kernel, "--initrd", initramfs, "--smp", "2",
		"--net", "tap=tap0,mac="+netGuestMAC+opts,
		"--append", fmt.Sprintf("console=ttyS0 reboot=k panic=-1 quiet govmm.ip=%s/24 govmm.run=%s", netGuestAddr, run))
	cmd.WaitDelay = 5 * time.Second
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("govmm still running after %v; console:\n%s\nstderr:\n%s", netTimeout, out.String(), errOut.String())
	}
	if err != nil {
		t.Fatalf("govmm: %v; console:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	return strings.ReplaceAll(out.String(), "\r", ""), errOut.String()
}

// TestNet boots a guest with a virtio-net interface on a tap in a
// namespace of the test's own and checks traffic both ways: ICMP from
// the guest and to it, ARP with the configured MAC, and a TCP upload
// and download over HTTP with busybox wget.
func TestNet(t *testing.T) {
	needGuest(t)
	ns := netNamespace(t)

	t.Run("ping", func(t *testing.T) {
		console, stderr := bootNet(t, ns, "ping,-c,3,-W,10,"+netHostAddr, "")
		if !strings.Contains(console, "GOVMM-RESULT rc=0") ||
			!strings.Contains(console, "3 packets transmitted, 3 packets received, 0% packet loss") {
			t.Fatalf("guest's ping to the host failed; console:\n%s\nstderr:\n%s", console, stderr)
		}
		for _, l := range strings.Split(console, "\n") {
			if strings.Contains(l, "bytes from") || strings.Contains(l, "round-trip") {
				t.Log(l)
			}
		}
		if !strings.Contains(stderr, "virtio-net") {
			t.Errorf("no virtio-net rows in the virtio table:\n%s", stderr)
		}
		// The interface counters: the pings (and ARP) went both ways.
		m := netCountersRE.FindStringSubmatch(stderr)
		if m == nil {
			t.Fatalf("no network device table:\n%s", stderr)
		}
		if rx, _ := strconv.Atoi(m[1]); rx < 3 {
			t.Errorf("%d frames received, want at least the 3 ping replies", rx)
		}
		if tx, _ := strconv.Atoi(m[2]); tx < 3 {
			t.Errorf("%d frames sent, want at least the 3 pings", tx)
		}
	})

	// busybox nc -e cat in the guest echoes what the host sends: 4 MiB
	// each way, compared byte for byte on the host, with the offloads
	// (checksums and 64 KiB segments both ways, mergeable receive
	// buffers) and without. The guest first prints the features its
	// driver accepted, which must be the ones asked for.
	for _, tc := range []struct {
		name, opts string
		offloads   bool
	}{{"tcp", "", true}, {"tcp-no-offload", ",offload=off", false}} {
		t.Run(tc.name, func(t *testing.T) {
			console, _ := testNetEcho(t, ns, tc.opts, tc.offloads)
			if !strings.Contains(console, "GOVMM-QUEUES rx-0 tx-0\n") {
				t.Errorf("guest's eth0 has other queues than one pair; console:\n%s", console)
			}
		})
	}

	// With queues=2 on a multi_queue tap the guest's driver asks for
	// both pairs on the control queue (one VQ_PAIRS_SET) and the echo
	// runs over them.
	t.Run("tcp-multiqueue", func(t *testing.T) {
		if err := makeTap(ns, true); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := makeTap(ns, false); err != nil {
				t.Error(err)
			}
		})
		console, stderr := testNetEcho(t, ns, ",queues=2", true)
		if !strings.Contains(console, "GOVMM-QUEUES rx-0 rx-1 tx-0 tx-1\n") {
			t.Errorf("guest's eth0 does not have two queue pairs; console:\n%s", console)
		}
		if !regexp.MustCompile(`(?m)^\s*virtio-net\s+4\s+ctrl\s+1\s`).MatchString(stderr) {
			t.Errorf("no control command served on queue 4 (VQ_PAIRS_SET); stderr:\n%s", stderr)
		}
		for _, l := range strings.Split(stderr, "\n") {
			if strings.Contains(l, "virtio-net ") {
				t.Log(l)
			}
		}
	})
}

// netOffloadBits are the virtio-net feature bits of the offloads, as
// positions in the guest's /sys/.../features string: CSUM, GUEST_CSUM,
// GUEST_TSO4/6, HOST_TSO4/6, MRG_RXBUF.
var netOffloadBits = []int{0, 1, 7, 8, 11, 12, 15}

// netCountersRE matches the first row of the network device table: rx
// and tx packets.
var netCountersRE = regexp.MustCompile(`network device[^\n]*\n\s*virtio-net\s+\S+\s+(\d+)\s+\d+\s+\d+\s+(\d+)\s`)

var featuresRE = regexp.MustCompile(`(?m)^GOVMM-FEATURES ([01]{64})`)

// testNetEcho echoes data through the guest with the --net options
// opts and checks it and the offload features negotiated; it returns
// govmm's console and stderr, where the guest listed eth0's queues
// (GOVMM-QUEUES).
func testNetEcho(t *testing.T, ns, opts string, offloads bool) (console, stderr string) {
	t.Helper()
	data := make([]byte, 4<<20)
	rand.Read(data)
	l := listenIn(t, ns, netHostAddr+":0")
	type echo struct {
		back     []byte
		err      error
		hostPing string // ping from the host while the guest echoes
		neigh    string // the host's ARP entry for the guest
	}
	echoes := make(chan echo, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			echoes <- echo{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(netTimeout))
		e := echo{hostPing: hostPing(ns, netGuestAddr)}
		if out, err := exec.Command("ip", "-n", ns, "neigh", "show", netGuestAddr).CombinedOutput(); err == nil {
			e.neigh = strings.TrimSpace(string(out))
		}
		werr := make(chan error, 1)
		go func() {
			_, err := c.Write(data)
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite() // cat's EOF
			}
			werr <- err
		}()
		e.back, e.err = io.ReadAll(c)
		e.err = errors.Join(e.err, <-werr)
		echoes <- e
	}()

	start := time.Now()
	// ${IFS} stands for the spaces govmm.run cannot carry.
	// When cat has seen the host's EOF, nc closes the socket with the
	// end of the echo maybe still unsent: the guest must not power off
	// (and lose it) until the host acknowledged it all, that is while
	// the connection is still in a state before FIN_WAIT2.
	port := l.Addr().(*net.TCPAddr).Port
	script := fmt.Sprintf("echo${IFS}GOVMM-FEATURES${IFS}$(cat${IFS}/sys/class/net/eth0/device/features);echo${IFS}GOVMM-QUEUES${IFS}$(ls${IFS}/sys/class/net/eth0/queues);nc${IFS}%s${IFS}%d${IFS}-e${IFS}cat;"+
		"while(netstat${IFS}-tn|grep${IFS}%s:%d|grep${IFS}-q${IFS}-e${IFS}ESTABLISHED${IFS}-e${IFS}FIN_WAIT1${IFS}-e${IFS}CLOSING${IFS}-e${IFS}LAST_ACK);do(sleep${IFS}0.1);done",
		netHostAddr, port, netHostAddr, port)
	console, stderr = bootNet(t, ns, "sh,-c,"+script, opts)
	elapsed := time.Since(start)
	l.Close() // ends an Accept still waiting
	e := <-echoes
	if !strings.Contains(console, "GOVMM-RESULT rc=0") || e.err != nil {
		t.Fatalf("echo through the guest failed (%v); console:\n%s\nstderr:\n%s", e.err, console, stderr)
	}
	if !bytes.Equal(e.back, data) {
		n := 0
		for n < len(e.back) && n < len(data) && e.back[n] == data[n] {
			n++
		}
		t.Errorf("echo: sent %d bytes, got %d back, first difference at byte %d", len(data), len(e.back), n)
	}
	t.Logf("guest echoed %d bytes in a boot of %.1f s", len(e.back), elapsed.Seconds())
	if m := featuresRE.FindStringSubmatch(console); m == nil {
		t.Errorf("guest printed no virtio-net features; console:\n%s", console)
	} else {
		for _, bit := range netOffloadBits {
			if got := m[1][bit] == '1'; got != offloads {
				t.Errorf("feature bit %d negotiated %v, want %v (features %s)", bit, got, offloads, m[1])
			}
		}
	}
	if !strings.Contains(e.neigh, "lladdr "+netGuestMAC) {
		t.Errorf("host's neighbour entry for the guest is %q, want lladdr %s", e.neigh, netGuestMAC)
	}
	switch {
	case e.hostPing == "":
		t.Log("no ping command on the host: host-to-guest ICMP not checked")
	case strings.Contains(e.hostPing, "1 packets received") || strings.Contains(e.hostPing, "1 received"):
		t.Logf("host pinged the guest: %s", strings.ReplaceAll(lastLines(e.hostPing, 2), "\n", "; "))
	default:
		t.Errorf("host's ping to the guest failed:\n%s", e.hostPing)
	}
	return console, stderr
}

// hostPing pings addr once from inside ns and returns ping's output,
// or "" if the host has no ping (iputils or busybox).
func hostPing(ns, addr string) string {
	args := []string{"netns", "exec", ns}
	if p, err := exec.LookPath("ping"); err == nil {
		args = append(args, p)
	} else if p, err := exec.LookPath("busybox"); err == nil {
		args = append(args, p, "ping")
	} else {
		return ""
	}
	// -W bounds the wait for a reply, not the test's time on success: a
	// loaded host may take seconds to schedule the guest's vCPU.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append(args, "-c", "1", "-W", "20", addr)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s(%v)", out, err)
	}
	return string(out)
}
