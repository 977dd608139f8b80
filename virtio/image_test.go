package virtio

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newBlockBounded is NewBlock with a bound on returning at all: opening
// a FIFO for reading without O_NONBLOCK would wait for a writer for ever.
func newBlockBounded(t *testing.T, path string, readOnly bool) (*Block, error) {
	t.Helper()
	type result struct {
		b   *Block
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := NewBlock(path, readOnly)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("NewBlock(%s, ro=%v) still blocked after 10 s", path, readOnly)
		return nil, nil
	}
}

// Only regular files and block devices are disks: a directory opened
// read-only used to become an 8 EiB disk whose every read failed.
func TestImageKinds(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		name, path string
		readOnly   bool
		want       string
	}{
		{"directory, ro", dir, true, "is a directory"},
		{"directory, rw", dir, false, "is a directory"},
		{"FIFO, ro", fifo, true, "is a FIFO"},
		{"FIFO, rw", fifo, false, "is a FIFO"},
		{"character device", "/dev/null", true, "is a character device"},
		{"socket", sock, true, "no such device or address"}, // open(2) refuses a socket
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := newBlockBounded(t, tc.path, tc.readOnly)
			if err == nil {
				b.Close()
				t.Fatalf("accepted as a disk of %d sectors", b.Capacity())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}

	// A regular file is a disk, its descriptor back in blocking mode.
	path, _ := testImage(t, "disk.img", 8)
	b, err := NewBlock(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if fl, err := unix.FcntlInt(uintptr(b.fd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
		t.Errorf("disk descriptor flags %#x (%v): O_NONBLOCK still set", fl, err)
	}
}

// A block device is a disk too (a loop device here, where root may make
// one).
func TestImageBlockDevice(t *testing.T) {
	path, _ := testImage(t, "disk.img", 16)
	out, err := exec.Command("losetup", "--find", "--show", path).Output()
	if err != nil {
		t.Skipf("cannot set up a loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	b, err := NewBlock(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Capacity() != 16 {
		t.Errorf("%s: %d sectors, want 16", dev, b.Capacity())
	}
}

// lockBytes lists the bytes of path that someone holds an OFD lock on,
// from /proc/locks.
func lockBytes(t *testing.T, path string) []string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Skipf("no /proc/locks: %v", err)
	}
	// "1: OFDLCK ADVISORY READ -1 08:01:1234 100 101"
	suffix := fmt.Sprintf(":%d", st.Ino)
	var held []string
	for _, line := range strings.Split(string(locks), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && f[1] == "OFDLCK" && strings.HasSuffix(f[5], suffix) {
			held = append(held, f[3]+" "+f[6]+"-"+f[7])
		}
	}
	slices.Sort(held)
	return held
}

// govmm takes exactly the bytes a QEMU 7.2 virtio-blk device takes
// (measured there: 100-101 and 201 for a writer, 100 and 201 for a
// reader), so that each refuses what the other would refuse.
func TestImageLockBytes(t *testing.T) {
	for _, tc := range []struct {
		readOnly bool
		want     string
	}{
		{false, "[READ 100-101 READ 201-201]"}, // /proc/locks merges 100 and 101
		{true, "[READ 100-100 READ 201-201]"},
	} {
		path, _ := testImage(t, "disk.img", 8)
		b, err := NewBlock(path, tc.readOnly)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(lockBytes(t, path)); got != tc.want {
			t.Errorf("read-only %v: locks %s, want %s", tc.readOnly, got, tc.want)
		}
		b.Close()
		if got := lockBytes(t, path); len(got) != 0 {
			t.Errorf("read-only %v: locks %v left after Close", tc.readOnly, got)
		}
	}
}

// tempDir is a temporary directory whose name QEMU's option parser
// accepts: t.TempDir's holds the test's name, commas and all.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "govmm-qemu-lock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// qemuImage is an 8-sector image in a directory of its own.
func qemuImage(t *testing.T) string {
	t.Helper()
	path := filepath.Join(tempDir(t), "disk.img")
	if err := os.WriteFile(path, make([]byte, 8*SectorSize), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// qemuWithDisk starts QEMU, stopped (-S), with path as a virtio-blk disk,
// and returns once QEMU's monitor greets (the drive is open and locked
// by then) or QEMU has exited (then with its stderr).
func qemuWithDisk(t *testing.T, qemu, path string, readOnly bool) (running bool, stderr string) {
	t.Helper()
	sock := filepath.Join(tempDir(t), "qmp.sock")
	drive := "file=" + path + ",format=raw,if=none,id=d0"
	if readOnly {
		drive += ",readonly=on"
	}
	cmd := exec.Command(qemu, "-S", "-nodefaults", "-display", "none", "-M", "microvm", "-accel", "tcg",
		"-qmp", "unix:"+sock+",server=on,wait=off", "-drive", drive, "-device", "virtio-blk-device,drive=d0")
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false, errBuf.String()
		default:
		}
		if c, err := net.Dial("unix", sock); err == nil {
			// The greeting comes from the monitor's own thread, maybe
			// before the disk is set up; a command's reply comes from
			// the main loop, which starts after it.
			c.SetDeadline(deadline)
			r := bufio.NewReader(c)
			_, err := r.ReadString('\n')
			if err == nil {
				_, err = c.Write([]byte(`{"execute":"qmp_capabilities"}`))
			}
			var reply string
			if err == nil {
				reply, err = r.ReadString('\n')
			}
			c.Close()
			if err == nil && strings.Contains(reply, `"return"`) {
				return true, ""
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("QEMU neither greeted nor exited in 60 s; stderr: %s", errBuf.String())
	return false, ""
}

// QEMU and govmm exclude each other as QEMU excludes itself: one writer
// and no reader beside it, or any number of readers. Both directions run
// against a real QEMU.
func TestImageLocksAgainstQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("no qemu-system-x86_64 on this machine")
	}
	for _, tc := range []struct {
		name                string
		qemuRO, govmmRO     bool
		compatible          bool
		qemuSays, govmmSays string // the error of the one that comes second
	}{
		{"both write", false, false, false, `Failed to get "write" lock`, `failed to get "write" lock`},
		{"QEMU writes govmm reads", false, true, false, `Failed to get "write" lock`, `failed to get shared "write" lock`},
		{"QEMU reads govmm writes", true, false, false, `Failed to get shared "write" lock`, `failed to get "write" lock`},
		{"both read", true, true, true, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := qemuImage(t)

			// QEMU first, govmm second.
			if running, stderr := qemuWithDisk(t, qemu, path, tc.qemuRO); !running {
				t.Fatalf("QEMU on a free image exited: %s", stderr)
			}
			b, err := NewBlock(path, tc.govmmRO)
			switch {
			case tc.compatible && err != nil:
				t.Errorf("govmm beside QEMU: %v", err)
			case !tc.compatible && err == nil:
				t.Errorf("govmm (ro=%v) opened an image QEMU (ro=%v) has open", tc.govmmRO, tc.qemuRO)
			case !tc.compatible && !strings.Contains(err.Error(), tc.govmmSays):
				t.Errorf("govmm's error %q does not say %q", err, tc.govmmSays)
			}
			if b != nil {
				b.Close()
			}
		})
		t.Run(tc.name+" govmm first", func(t *testing.T) {
			path := qemuImage(t)
			b, err := NewBlock(path, tc.govmmRO)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			running, stderr := qemuWithDisk(t, qemu, path, tc.qemuRO)
			switch {
			case tc.compatible && !running:
				t.Errorf("QEMU beside govmm exited: %s", stderr)
			case !tc.compatible && running:
				t.Errorf("QEMU (ro=%v) opened an image govmm (ro=%v) has open", tc.qemuRO, tc.govmmRO)
			case !tc.compatible && !strings.Contains(stderr, tc.qemuSays):
				t.Errorf("QEMU's error %q does not say %q", stderr, tc.qemuSays)
			}
		})
	}
}

// ImageInUse sees the lock a VM holds on its disk image (the check that
// keeps a report from being renamed over another VM's disk), and none
// once the image is closed.
func TestImageInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if ImageInUse(path) {
		t.Fatal("a file nobody has open is in use")
	}
	f, _, err := openImage(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if !ImageInUse(path) {
		t.Error("an image open read-only by a VM is not in use")
	}
	f.Close()
	if ImageInUse(path) {
		t.Error("a closed image is still in use")
	}
}
