package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/govmm/govmm/vmm"
)

// kernelExits is KVM's own exit count over all vCPUs.
func kernelExits(t *testing.T, c qmp.Monitor) uint64 {
	t.Helper()
	var table vmm.ExitTable
	if err := runQMP(c, "query-exit-stats", nil, &table); err != nil {
		t.Fatal(err)
	}
	if table.Kernel == nil {
		t.Skip("this kernel has no KVM stats fd: cannot watch exits")
	}
	n, ok := table.Kernel.VCPUTotal("exits")
	if !ok {
		t.Skip("KVM stats have no exits counter")
	}
	return n
}

func status(t *testing.T, c qmp.Monitor) string {
	t.Helper()
	var s struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := runQMP(c, "query-status", nil, &s); err != nil {
		t.Fatal(err)
	}
	return s.Status
}

// waitQMP connects to govmm's QMP socket once it is up.
func waitQMP(t *testing.T, sock string, stderr *syncBuffer) *qmp.SocketMonitor {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := dialQMP(sock, time.Second)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("no QMP socket: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventLog keeps a QMP connection's events in arrival order.
type eventLog struct {
	mu      sync.Mutex
	events  []qmp.Event
	hungUp  bool          // the connection is gone (mu)
	changed chan struct{} // closed and replaced whenever the log changes (mu)
	waited  int           // events before this index were returned by wait (mu)
}

// watchEvents starts recording mon's events; the log ends when govmm
// hangs up.
func watchEvents(t *testing.T, mon qmp.Monitor) *eventLog {
	t.Helper()
	evs, err := mon.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l := &eventLog{changed: make(chan struct{})}
	go func() {
		for e := range evs {
			l.mu.Lock()
			l.events = append(l.events, e)
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
		l.mu.Lock()
		l.hungUp = true
		close(l.changed)
		l.mu.Unlock()
	}()
	return l
}

// names lists the events so far, comma-separated.
func (l *eventLog) names() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var names []string
	for _, e := range l.events {
		names = append(names, e.Event)
	}
	return strings.Join(names, ",")
}

// wait returns the next event called name after the one the previous wait
// returned, failing the test after timeout or when the connection ends.
func (l *eventLog) wait(t *testing.T, name string, timeout time.Duration) qmp.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		for ; l.waited < len(l.events); l.waited++ {
			if e := l.events[l.waited]; e.Event == name {
				l.waited++
				l.mu.Unlock()
				return e
			}
		}
		hungUp, changed := l.hungUp, l.changed
		l.mu.Unlock()
		if hungUp {
			t.Fatalf("QMP connection ended without %s (events %s)", name, l.names())
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no %s within %v (events %s)", name, timeout, l.names())
		}
	}
}

// qmpVM is a running govmm with a QMP connection.
type qmpVM struct {
	cmd    *exec.Cmd
	sock   string
	stdout *syncBuffer // the console
	stdin  io.Writer   // keyboard input to the console
	mon    *qmp.SocketMonitor
	events *eventLog
	stderr *syncBuffer
}

// startQMP starts govmm on the test initramfs with a QMP socket, extra
// kernel command line words and extra flags, and connects once the guest
// is ready (so its power button handler listens).
func startQMP(t *testing.T, extra string, flags ...string) *qmpVM {
	t.Helper()
	return startQMPWith(t, needGuest(t), initramfs, extra, flags...)
}

// startQMPWith is startQMP booting kernel and initramfs.
func startQMPWith(t *testing.T, kernel, initramfs, extra string, flags ...string) *qmpVM {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	args := append([]string{"run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2",
		"--qmp", "unix:" + sock, "--append", "console=ttyS0 reboot=k panic=-1 quiet " + extra}, flags...)
	cmd := exec.Command(govmmBin, args...)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := waitQMP(t, sock, stderr)
	t.Cleanup(func() { c.Disconnect() })
	events := watchEvents(t, c)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "GOVMM-READY") {
		if time.Now().After(deadline) {
			t.Fatalf("guest not ready\nconsole:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &qmpVM{cmd: cmd, sock: sock, stdout: stdout, stdin: stdin, mon: c, events: events, stderr: stderr}
}

// shutdownOf decodes a SHUTDOWN or RESET event's data.
func shutdownOf(e qmp.Event) (guest bool, reason string) {
	guest, _ = e.Data["guest"].(bool)
	reason, _ = e.Data["reason"].(string)
	return guest, reason
}

// waitExit waits for govmm to exit with status 0.
func waitExit(t *testing.T, cmd *exec.Cmd, stderr *syncBuffer) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("govmm: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("govmm still running 30 s later\n%s", stderr.String())
	}
}

// Pausing a running Linux guest over QMP stops its vCPUs (KVM's exit count
// stops), cont resumes them, system_powerdown asks the guest, which powers
// off: govmm ends with status 0; the live view reads the same socket.
func TestQMPPauseResumePowerdown(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// sem_test exits all the time, so a paused guest is easy to tell.
	vm := startQMP(t, "govmm.run=sem_test,10000000,2000", "--disk", disk+",ro")
	cmd, c, events, stderr, sock := vm.cmd, vm.mon, vm.events, vm.stderr, vm.sock
	if s := status(t, c); s != "running" {
		t.Fatalf("status %q, want running", s)
	}
	var mem struct {
		Base    uint64 `json:"base-memory"`
		Plugged uint64 `json:"plugged-memory"`
	}
	if err := runQMP(c, "query-memory-size-summary", nil, &mem); err != nil || mem.Base != 512<<20 || mem.Plugged != 0 {
		t.Errorf("query-memory-size-summary: %+v, %v; want 512 MiB (the default --mem), none plugged", mem, err)
	}
	if err := runQMP(c, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if s := status(t, c); s != "paused" {
		t.Fatalf("status after stop %q, want paused", s)
	}
	e1 := kernelExits(t, c)
	time.Sleep(300 * time.Millisecond)
	if e2 := kernelExits(t, c); e2 != e1 {
		t.Errorf("paused vCPUs made %d exits in 300 ms", e2-e1)
	}
	if err := runQMP(c, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	if s := status(t, c); s != "running" {
		t.Fatalf("status after cont %q, want running", s)
	}
	// Exits resume: polled until they grow, bounded only by "at all" (a
	// fixed 300 ms could pass with the host starving the vCPUs).
	e3 := kernelExits(t, c)
	for deadline := time.Now().Add(endBound); kernelExits(t, c) <= e3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no exits in %v after cont", endBound)
		}
	}
	var blocks []struct {
		Device   string `json:"device"`
		Inserted struct {
			File     string `json:"file"`
			ReadOnly bool   `json:"ro"`
		} `json:"inserted"`
	}
	if err := runQMP(c, "query-block", nil, &blocks); err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 1 || blocks[0].Inserted.File != disk || !blocks[0].Inserted.ReadOnly {
		t.Errorf("query-block: %+v, want the read-only disk %s", blocks, disk)
	}
	var buses []struct {
		Devices []struct {
			ID struct {
				Vendor int `json:"vendor"`
				Device int `json:"device"`
			} `json:"id"`
		} `json:"devices"`
	}
	if err := runQMP(c, "query-pci", nil, &buses); err != nil {
		t.Fatal(err)
	}
	foundBlk := false
	for _, b := range buses {
		for _, d := range b.Devices {
			foundBlk = foundBlk || d.ID.Vendor == 0x1af4 && d.ID.Device == 0x1042
		}
	}
	if !foundBlk {
		t.Errorf("query-pci lists no virtio-blk (1af4:1042): %+v", buses)
	}
	live, err := exec.Command(govmmBin, "stat", "--qmp", "unix:"+sock, "--once", "--interval", "200ms").CombinedOutput()
	if err != nil || !strings.Contains(string(live), "exits") || !strings.Contains(string(live), "p99(us)") {
		t.Errorf("govmm stat --once: %v\n%s", err, live)
	}
	// The button asks the guest, whose init syncs and powers off.
	if err := runQMP(c, "system_powerdown", nil, nil); err != nil {
		t.Fatal(err)
	}
	if guest, reason := shutdownOf(events.wait(t, "SHUTDOWN", 30*time.Second)); !guest || reason != "guest-shutdown" {
		t.Errorf("SHUTDOWN guest=%v reason=%s, want the guest's own (guest-shutdown)", guest, reason)
	}
	waitExit(t, cmd, stderr)
	if got, want := events.names(), "STOP,RESUME,POWERDOWN,SHUTDOWN"; got != want {
		t.Errorf("events %s, want %s", got, want)
	}
	for _, w := range []string{"guest powered off", "host asked for power-down over QMP"} {
		if !strings.Contains(stderr.String(), w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
		}
	}
}

// After stop, system_powerdown presses the button of a guest that cannot
// run to answer it: as under QEMU the VM stays paused (POWERDOWN, no
// SHUTDOWN) and nothing waits. cont lets the guest see the press and power
// off.
func TestQMPPowerdownWhilePaused(t *testing.T) {
	vm := startQMP(t, "govmm.run=sleep,600")
	cmd, c, events, stderr := vm.cmd, vm.mon, vm.events, vm.stderr
	if err := runQMP(c, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := runQMP(c, "system_powerdown", nil, nil); err != nil {
		t.Fatal(err)
	}
	events.wait(t, "POWERDOWN", 10*time.Second)
	if s := status(t, c); s != "paused" {
		t.Errorf("status after a press while paused: %q, want paused", s)
	}
	if err := runQMP(c, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	if guest, reason := shutdownOf(events.wait(t, "SHUTDOWN", 30*time.Second)); !guest || reason != "guest-shutdown" {
		t.Errorf("SHUTDOWN guest=%v reason=%s, want guest-shutdown", guest, reason)
	}
	waitExit(t, cmd, stderr)
	if got, want := events.names(), "STOP,POWERDOWN,RESUME,SHUTDOWN"; got != want {
		t.Errorf("events %s, want %s", got, want)
	}
}

// boots is how many times the guest has reached /init.
func (vm *qmpVM) boots() int { return strings.Count(vm.stdout.String(), "GOVMM-READY") }

// waitBoots waits until the guest has reached /init n times.
func (vm *qmpVM) waitBoots(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for vm.boots() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d boots, want %d\nconsole:\n%s\nstderr:\n%s", vm.boots(), n, vm.stdout.String(), vm.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// resetsOf reads the reset counter of query-exit-stats.
func resetsOf(t *testing.T, c qmp.Monitor) uint64 {
	t.Helper()
	var table vmm.ExitTable
	if err := runQMP(c, "query-exit-stats", nil, &table); err != nil {
		t.Fatal(err)
	}
	return table.Resets
}

// system_reset reboots the guest in place, five times over one QMP
// connection: RESET each time with QEMU's reason, the guest boots again,
// the VM runs on and counts its resets; then it powers down as usual.
func TestQMPResetInPlace(t *testing.T) {
	vm := startQMP(t, "govmm.run=sleep,600")
	const resets = 5
	for i := 1; i <= resets; i++ {
		if err := runQMP(vm.mon, "system_reset", nil, nil); err != nil {
			t.Fatalf("reset %d: %v", i, err)
		}
		if guest, reason := shutdownOf(vm.events.wait(t, "RESET", 30*time.Second)); guest || reason != "host-qmp-system-reset" {
			t.Errorf("reset %d: RESET guest=%v reason=%s, want the host's", i, guest, reason)
		}
		vm.waitBoots(t, i+1)
		if s := status(t, vm.mon); s != "running" {
			t.Errorf("reset %d: status %q, want running", i, s)
		}
	}
	if n := resetsOf(t, vm.mon); n != resets {
		t.Errorf("query-exit-stats counts %d resets, want %d", n, resets)
	}
	if err := runQMP(vm.mon, "system_powerdown", nil, nil); err != nil {
		t.Fatal(err)
	}
	if guest, reason := shutdownOf(vm.events.wait(t, "SHUTDOWN", 30*time.Second)); !guest || reason != "guest-shutdown" {
		t.Errorf("SHUTDOWN guest=%v reason=%s, want guest-shutdown", guest, reason)
	}
	waitExit(t, vm.cmd, vm.stderr)
	want := strings.Repeat("RESET,", resets) + "POWERDOWN,SHUTDOWN"
	if got := vm.events.names(); got != want {
		t.Errorf("events %s, want %s", got, want)
	}
	if !strings.Contains(vm.stderr.String(), "5 resets") {
		t.Errorf("stderr does not count the resets:\n%s", vm.stderr.String())
	}
}

// A power button the guest ignored, then system_reset: the next boot
// comes up once. The press stayed latched in the slave PIC (Linux takes
// it through the IOAPIC), and the reset left IRQ 2 pending in the
// power-on master: the new kernel took vector 7 at its first sti
// ("unexpected #NM exception"), panicked and rebooted, every time (found
// by a chaos run; TestResetLeavesNoPICInterrupt has the mechanism).
func TestQMPResetAfterIgnoredPowerdown(t *testing.T) {
	vm := startQMP(t, "govmm.button=ignore govmm.run=sleep,600")
	if err := runQMP(vm.mon, "system_powerdown", nil, nil); err != nil {
		t.Fatal(err)
	}
	vm.events.wait(t, "POWERDOWN", 30*time.Second)
	if err := runQMP(vm.mon, "system_reset", nil, nil); err != nil {
		t.Fatal(err)
	}
	vm.events.wait(t, "RESET", 30*time.Second)
	vm.waitBoots(t, 2)
	// The crashing boot never reached /init: its RESET came before the
	// second ready line, if at all.
	if got := vm.events.names(); got != "POWERDOWN,RESET" {
		t.Errorf("events %s by the second boot, want POWERDOWN,RESET (the host's reset alone)", got)
	}
	if strings.Contains(vm.stdout.String(), "Oops") {
		t.Errorf("the guest oopsed after the reset:\n%s", vm.stdout.String())
	}
}

// A reset boots the kernel and initrd the VM started with, from the
// files govmm opened then (under Landlock, which allows no new opens of
// them): renamed over or deleted since, they boot as before, as QEMU,
// which keeps them in memory, boots them. Reopened by path, a replaced
// kernel ended the VM with "permission denied", and one rewritten in
// place booted silently or panicked the guest in a loop (an audit).
// Written in place, the reset is refused, the VM ends with SHUTDOWN
// host-error, and govmm says why.
func TestResetBootsTheFilesItStartedWith(t *testing.T) {
	copies := func() (kernel, initrd string) {
		dir := t.TempDir()
		kernel, initrd = filepath.Join(dir, "vmlinux"), filepath.Join(dir, "rootfs.cpio.gz")
		for from, to := range map[string]string{needGuest(t): kernel, initramfs: initrd} {
			b, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(to, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return kernel, initrd
	}
	kernel, initrd := copies()
	vm := startQMPWith(t, kernel, initrd, "govmm.run=sleep,600")
	junk := filepath.Join(filepath.Dir(initrd), "junk")
	if err := os.WriteFile(junk, []byte("not an initrd"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(junk, initrd); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(kernel); err != nil {
		t.Fatal(err)
	}
	if err := runQMP(vm.mon, "system_reset", nil, nil); err != nil {
		t.Fatalf("reset with the files renamed over and deleted: %v\n%s", err, vm.stderr.String())
	}
	vm.waitBoots(t, 2)

	kernel, initrd = copies()
	vm = startQMPWith(t, kernel, initrd, "govmm.run=sleep,600")
	f, err := os.OpenFile(kernel, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write([]byte{0})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	err = runQMP(vm.mon, "system_reset", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "was written to since the VM started") {
		t.Errorf("reset with the kernel written in place: %v, want it refused", err)
	}
	if guest, reason := shutdownOf(vm.events.wait(t, "SHUTDOWN", 30*time.Second)); guest || reason != "host-error" {
		t.Errorf("SHUTDOWN guest=%v reason=%s, want host-error", guest, reason)
	}
	done := make(chan error, 1)
	go func() { done <- vm.cmd.Wait() }()
	select {
	case err := <-done:
		if code := vm.cmd.ProcessState.ExitCode(); code != 1 {
			t.Errorf("govmm: %v, want status 1", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("govmm still running 30 s after a failed reset\n%s", vm.stderr.String())
	}
	for _, want := range []string{"govmm could not go on", "machine reset: kernel " + kernel + " was written to"} {
		if !strings.Contains(vm.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, vm.stderr.String())
		}
	}
	if vm.boots() != 1 {
		t.Errorf("%d boots, want 1", vm.boots())
	}
}

// A guest that reboots boots again in the same process: RESET
// guest-reset each time, on one connection. A guest that reboots for ever
// stays visible (RESET events, the reset count) and killable: SIGTERM
// ends it.
func TestQMPGuestRebootInPlace(t *testing.T) {
	vm := startQMP(t, "govmm.exit=reboot")
	const resets = 5
	for i := 1; i <= resets; i++ {
		if guest, reason := shutdownOf(vm.events.wait(t, "RESET", 60*time.Second)); !guest || reason != "guest-reset" {
			t.Errorf("reset %d: RESET guest=%v reason=%s, want guest-reset", i, guest, reason)
		}
	}
	vm.waitBoots(t, resets+1)
	if n := resetsOf(t, vm.mon); n < resets {
		t.Errorf("query-exit-stats counts %d resets, want at least %d", n, resets)
	}
	if err := vm.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, vm.cmd, vm.stderr)
	if !strings.Contains(vm.stderr.String(), "resets (the tables count every boot)") {
		t.Errorf("stderr does not count the resets:\n%s", vm.stderr.String())
	}
}

// After stop, system_reset resets the machine and leaves it stopped, in
// QEMU's "prelaunch" state: nothing boots until cont.
func TestQMPResetWhilePaused(t *testing.T) {
	vm := startQMP(t, "govmm.run=sleep,600")
	if err := runQMP(vm.mon, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := runQMP(vm.mon, "system_reset", nil, nil); err != nil {
		t.Fatal(err)
	}
	vm.events.wait(t, "RESET", 30*time.Second)
	if s := status(t, vm.mon); s != "prelaunch" {
		t.Errorf("status after a reset while paused: %q, want prelaunch", s)
	}
	if n := resetsOf(t, vm.mon); n != 1 {
		t.Errorf("%d resets, want 1", n)
	}
	if err := runQMP(vm.mon, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	vm.waitBoots(t, 2)
	if s := status(t, vm.mon); s != "running" {
		t.Errorf("status after cont: %q, want running", s)
	}
	if err := runQMP(vm.mon, "quit", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitExit(t, vm.cmd, vm.stderr)
	if got, want := vm.events.names(), "STOP,RESET,RESUME,SHUTDOWN"; got != want {
		t.Errorf("events %s, want %s", got, want)
	}
}

// --no-reboot, as QEMU's -no-reboot: a reset ends govmm with SHUTDOWN
// naming who asked, and exit status 0.
func TestQMPNoReboot(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		reset       bool // ask with system_reset, else the guest reboots
		guest       bool
		reason      string
		words       string
	}{
		{"system_reset", "govmm.run=sleep,600", true, false, "host-qmp-system-reset", "host asked for a reset over QMP"},
		// The shell reboots when the test says so, once it watches.
		{"guest reboot", "govmm.shell", false, true, "guest-reset", "guest asked for a reset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := startQMP(t, tc.extra, "--no-reboot")
			if tc.reset {
				if err := runQMP(vm.mon, "system_reset", nil, nil); err != nil {
					t.Fatal(err)
				}
			} else if _, err := io.WriteString(vm.stdin, "reboot -f\n"); err != nil {
				t.Fatal(err)
			}
			if guest, reason := shutdownOf(vm.events.wait(t, "SHUTDOWN", 30*time.Second)); guest != tc.guest || reason != tc.reason {
				t.Errorf("SHUTDOWN guest=%v reason=%s, want %v %s", guest, reason, tc.guest, tc.reason)
			}
			waitExit(t, vm.cmd, vm.stderr)
			if got := vm.events.names(); got != "SHUTDOWN" {
				t.Errorf("events %s, want SHUTDOWN only", got)
			}
			if !strings.Contains(vm.stderr.String(), tc.words) {
				t.Errorf("stderr lacks %q:\n%s", tc.words, vm.stderr.String())
			}
		})
	}
}

// A disk whose image's file system fills up stops the VM instead of
// failing the guest's writes, as QEMU's default werror=enospc does:
// BLOCK_IO_ERROR (nospace) and STOP, run state io-error; once there is
// room, cont runs the kept writes again and the guest never sees an
// error. govmm failed them with IOERR, and the guest's file system lost
// its writes (found by an audit: "Buffer I/O error ... lost async page
// write" in the guest).
func TestFullHostDiskPausesTheVM(t *testing.T) {
	needGuest(t)
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("none", dir, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 64<<20); err != nil { // sparse, 8x the room
		t.Fatal(err)
	}
	vm := startQMP(t, "govmm.run=dd,if=/dev/zero,of=/dev/vda,bs=1M,count=20,conv=fsync", "--disk", disk)
	e := vm.events.wait(t, "BLOCK_IO_ERROR", 60*time.Second)
	if e.Data["nospace"] != true || e.Data["action"] != "stop" || e.Data["operation"] != "write" {
		t.Errorf("BLOCK_IO_ERROR %v, want a write without space, action stop", e.Data)
	}
	vm.events.wait(t, "STOP", 30*time.Second)
	if s := status(t, vm.mon); s != "io-error" {
		t.Errorf("status %q, want io-error", s)
	}
	ioStatus := func() string {
		var blocks []struct {
			IOStatus string `json:"io-status"`
		}
		if err := runQMP(vm.mon, "query-block", nil, &blocks); err != nil || len(blocks) != 1 {
			t.Fatalf("query-block: %v, %d disks", err, len(blocks))
		}
		return blocks[0].IOStatus
	}
	if s := ioStatus(); s != "nospace" {
		t.Errorf("io-status %q while waiting for space, want nospace", s)
	}
	// cont with no more room: RESUME, then the writes fail again and the
	// VM stops again, in that order (RESUME used to come after them); a
	// stop of the stopped VM says nothing (it used to add a STOP).
	seen := len(strings.Split(vm.events.names(), ","))
	if err := runQMP(vm.mon, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	vm.events.wait(t, "STOP", 30*time.Second)
	if err := runQMP(vm.mon, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Split(vm.events.names(), ",")[seen:], ","); got != "RESUME,BLOCK_IO_ERROR,STOP" {
		t.Errorf("events after a cont with no room: %s, want RESUME,BLOCK_IO_ERROR,STOP", got)
	}
	if err := syscall.Mount("none", dir, "tmpfs", syscall.MS_REMOUNT, "size=128m"); err != nil {
		t.Fatal(err)
	}
	if err := runQMP(vm.mon, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(vm.stdout.String(), "GOVMM-RESULT") {
		if time.Now().After(deadline) {
			t.Fatalf("dd did not finish after cont\nconsole:\n%s\nstderr:\n%s", vm.stdout.String(), vm.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out := vm.stdout.String(); !strings.Contains(out, "GOVMM-RESULT rc=0") || strings.Contains(out, "I/O error") {
		t.Errorf("the guest saw the full disk:\n%s", out)
	}
	vm.events.wait(t, "SHUTDOWN", 30*time.Second)
	waitExit(t, vm.cmd, vm.stderr)
}
