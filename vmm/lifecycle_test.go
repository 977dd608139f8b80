package vmm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goqmp "github.com/digitalocean/go-qemu/qmp"

	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/vcpu"
	"github.com/govmm/govmm/vmm/qmp"
)

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// pauseInBackground calls vm.Pause on a goroutine of its own and returns
// a channel closed when it returns.
func pauseInBackground(vm *VM) <-chan struct{} {
	paused := make(chan struct{})
	go func() {
		vm.Pause()
		close(paused)
	}()
	return paused
}

// Pause parks the vCPUs (exits stop), Resume lets them go on, Stop ends
// the run; no exit is lost or double-counted on the way.
func TestPauseResumeStop(t *testing.T) {
	vm, done, dev := startPortLoop(t)
	vm.Pause()
	if !vm.VCPUs()[0].Paused() {
		t.Error("vCPU not parked after Pause")
	}
	paused := dev.n.Load()
	time.Sleep(50 * time.Millisecond)
	if n := dev.n.Load(); n != paused {
		t.Errorf("%d exits while paused", n-paused)
	}
	vm.Resume()
	waitFor(t, "exits after resume", func() bool { return dev.n.Load() > paused+100 })

	vm.Stop()
	var out Outcome
	select {
	case out = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return 10 s after Stop")
	}
	if out.Reason != vcpu.Stopped || out.Err != nil {
		t.Errorf("outcome %v (%v), want stopped", out.Reason, out.Err)
	}
	st, _ := vm.Stats().Total().Row("IO:test")
	if st.Count != dev.n.Load() {
		t.Errorf("table counts %d exits, the device saw %d", st.Count, dev.n.Load())
	}
}

// newLinuxVM builds a 2-vCPU VM of the test initramfs with extra command
// line words and, if disk is set, a raw disk; the caller runs it. The VM
// is closed by cleanup.
func newLinuxVM(t *testing.T, extra, disk string) (*VM, *syncBuffer) {
	t.Helper()
	console := &syncBuffer{}
	cfg := Config{
		Kernel: needGuest(t, "vmlinux"), Initrd: initramfs,
		Cmdline: DefaultCmdline + " " + extra,
		MemSize: 512 << 20, CPUs: 2,
		Console: console, ExitStats: true, SyncRegs: true,
	}
	if disk != "" {
		cfg.Disks = []DiskConfig{{Path: disk}}
	}
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm, console
}

// waitConsole waits until the console shows want, failing if the VM ends
// first or it takes longer than bootTimeout.
func waitConsole(t *testing.T, console *syncBuffer, done <-chan Outcome, want string) {
	t.Helper()
	deadline := time.After(bootTimeout)
	for !strings.Contains(console.String(), want) {
		select {
		case out := <-done:
			t.Fatalf("guest ended (%s, %v) before %q; console:\n%s", out.Words(), out.Err, want, console)
		case <-deadline:
			t.Fatalf("no %q after %v; console:\n%s", want, bootTimeout, console)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// The power button asks the guest, which syncs and powers off itself:
// data it wrote and never synced is on the disk afterwards, and the VM
// ends as a guest power-off.
func TestPowerButtonGuestSyncsAndPowersOff(t *testing.T) {
	const text = "written before the button and never synced"
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	vm, console := newLinuxVM(t, "govmm.run=hold-write,/dev/vda,"+strings.ReplaceAll(text, " ", "_"), disk)
	done := make(chan Outcome, 1)
	go func() { done <- vm.Run() }()
	waitConsole(t, console, done, "GOVMM-WRITTEN")
	want := strings.ReplaceAll(text, " ", "_")
	// Still only in the guest's page cache: the test can tell a sync from
	// no sync.
	if b, err := os.ReadFile(disk); err != nil {
		t.Fatal(err)
	} else if bytes.HasPrefix(b, []byte(want)) {
		t.Fatal("the data reached the disk before the button: the test proves nothing")
	}
	if err := vm.PressPowerButton(); err != nil {
		t.Fatal(err)
	}
	var out Outcome
	select {
	case out = <-done:
	case <-time.After(bootTimeout):
		vm.Stop()
		t.Fatalf("guest still running %v after the power button; console:\n%s", bootTimeout, console)
	}
	if out.Err != nil || out.Reason != vcpu.PowerOff || out.Cause != CauseGuestOff || out.ByHost {
		t.Fatalf("ended %v (%s, %v), want a guest power-off; console:\n%s", out.Reason, out.Cause, out.Err, console)
	}
	if !strings.Contains(console.String(), "power button pressed") {
		t.Errorf("the guest's button handler did not run; console:\n%s", console)
	}
	if vm.PowerdownAskedAt() == 0 {
		t.Error("the press was not recorded")
	}
	vm.Close() // flushes the image
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte(want)) {
		t.Errorf("disk starts %q, want %q: the guest's shutdown did not write back its cache", b[:len(want)], want)
	}
}

// A guest with no handler for the button ignores it and keeps running,
// as under QEMU; the host can still stop it.
func TestPowerButtonIgnored(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	vm, console := newLinuxVM(t, "govmm.button=ignore govmm.run=hold-write,/dev/vda,x", disk)
	done := make(chan Outcome, 1)
	go func() { done <- vm.Run() }()
	waitConsole(t, console, done, "GOVMM-WRITTEN")
	if err := vm.PressPowerButton(); err != nil {
		t.Fatal(err)
	}
	// Nothing in the guest answers, so nothing can end it: give it a
	// second to do the wrong thing (a guest that did would fail here).
	select {
	case out := <-done:
		t.Fatalf("guest without a handler ended (%s); console:\n%s", out.Words(), console)
	case <-time.After(time.Second):
	}
	vm.Stop()
	if out := <-done; out.Reason != vcpu.Stopped || out.Cause != CauseHostSignal {
		t.Errorf("ended %v (%s), want stopped by the host", out.Reason, out.Cause)
	}
}

// startPortLoop runs a raw guest that exits to a test device (returned)
// for ever, and returns once it does. The VM is stopped and closed at
// cleanup.
func startPortLoop(t *testing.T) (*VM, <-chan Outcome, *counter) {
	t.Helper()
	needKVM(t)
	vm, err := New(Config{
		// ecx = 0: the loop wraps and runs for 2^32 iterations.
		Raw:     &RawGuest{Code: tiny.PortLoop16(testPort, 0), LoadAddr: tiny.LoadAddr},
		MemSize: 2 << 20, CPUs: 1, ExitStats: true, SyncRegs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	dev := &counter{}
	if _, err := vm.IOBus.Register("test", testPort, 1, dev); err != nil {
		vm.Close()
		t.Fatal(err)
	}
	done := make(chan Outcome, 1)
	ran := make(chan struct{})
	go func() {
		done <- vm.Run()
		close(ran)
	}()
	t.Cleanup(func() {
		vm.Stop()
		<-ran
		vm.Close()
	})
	waitFor(t, "exits", func() bool { return dev.n.Load() > 10 })
	return vm, done, dev
}

// A paused VM ends when told: Stop (SIGTERM, QMP quit, Ctrl-A x) and an
// end from a device both wake the parked vCPUs, and Run returns. Before,
// the vCPUs slept on for ever.
func TestStopWhilePaused(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(vm *VM)
		want vcpu.StopReason
	}{
		{"host stop", (*VM).Stop, vcpu.Stopped},
		{"power-off", func(vm *VM) { vm.end(Outcome{Reason: vcpu.PowerOff, VCPU: -1}) }, vcpu.PowerOff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm, done, _ := startPortLoop(t)
			vm.Pause()
			if s := vm.Status(); s != "paused" {
				t.Fatalf("status %q, want paused", s)
			}
			tc.end(vm)
			select {
			case out := <-done:
				if out.Reason != tc.want {
					t.Errorf("outcome %v (%v), want %v", out.Reason, out.Err, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return 10 s after the end of a paused VM")
			}
			if s := vm.Status(); s != "shutdown" {
				t.Errorf("status %q, want shutdown", s)
			}
		})
	}
}

// Pause and Resume of the VM from several goroutines, with a Stop among
// them: every call returns and Run ends. Run with -race.
func TestConcurrentPauseResumeStop(t *testing.T) {
	vm, done, _ := startPortLoop(t)
	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				vm.Pause()
				vm.Resume()
				if g == 0 && i == 25 {
					vm.Stop()
				}
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("Pause/Resume did not return within 10 s")
	}
	select {
	case out := <-done:
		if out.Reason != vcpu.Stopped || out.Err != nil {
			t.Errorf("outcome %v (%v), want stopped", out.Reason, out.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return 10 s after Stop")
	}
}

// A guest that reboots is reset in place and boots again, in the same
// process, with the exit table counting on across the boots.
func TestGuestRebootResetsInPlace(t *testing.T) {
	vm, console := newLinuxVM(t, "govmm.exit=reboot", "")
	done := make(chan Outcome, 1)
	go func() { done <- vm.Run() }()
	const resets = 5
	// Each boot prints a ready line, then reboots: 6 lines are 5 resets
	// and a guest that came back after the last one.
	deadline := time.Now().Add(bootTimeout)
	// Whole lines only: a line cut short by Stop would not count.
	boots := func() int { return len(readyLine.FindAllString(console.String(), -1)) }
	for boots() < resets+1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	vm.Stop()
	out := <-done
	if n := boots(); n < resets+1 {
		t.Fatalf("%d boots reached /init in %v (%d resets), want %d; console:\n%s", n, bootTimeout, vm.Resets(), resets+1, console)
	}
	if out.Err != nil || out.Cause != CauseHostSignal {
		t.Fatalf("ended %s (%v), want stopped by the host; console:\n%s", out.Words(), out.Err, console)
	}
	if n := vm.Resets(); n < resets {
		t.Errorf("%d resets counted, want at least %d", n, resets)
	}
	table := vm.ExitTable()
	if table.Resets != vm.Resets() {
		t.Errorf("exit table counts %d resets, the VM %d", table.Resets, vm.Resets())
	}
	// The exit table counts on across boots: each boot's console output
	// is serial exits, so there are more than one boot's worth.
	if serial, _ := table.User.Total().Row("IO:serial"); serial.Count < uint64(len(console.String())) {
		t.Errorf("%d serial exits for %d console bytes over %d boots", serial.Count, len(console.String()), resets+1)
	}
	for _, m := range readyLine.FindAllStringSubmatch(console.String(), -1) {
		if m[1] != "2" {
			t.Errorf("a boot saw %s vCPUs, want 2; console:\n%s", m[1], console)
		}
	}
}

// A kernel that panics at every boot (no init to run) with panic=-1
// reboots for ever: each reboot is a reset in place, counted, and Stop
// still ends it promptly.
func TestCrashLoopStaysKillable(t *testing.T) {
	vm, console := newLinuxVM(t, "rdinit=/no-such-init", "")
	done := make(chan Outcome, 1)
	go func() { done <- vm.Run() }()
	deadline := time.Now().Add(bootTimeout)
	for vm.Resets() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := vm.Resets(); n < 3 {
		vm.Stop()
		<-done
		t.Fatalf("%d resets in %v, want 3; console:\n%s", n, bootTimeout, console)
	}
	vm.Stop()
	select {
	case out := <-done:
		if out.Err != nil || out.Cause != CauseHostSignal {
			t.Errorf("ended %s (%v), want stopped by the host", out.Words(), out.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run still going 10 s after Stop")
	}
	if !strings.Contains(console.String(), "Kernel panic") {
		t.Errorf("no panic on the console:\n%s", console)
	}
}

// A vCPU KVM cannot run (here the guest jumps to an address with no RAM,
// which KVM cannot fetch from: an internal error) ends the VM as the
// host's failure, SHUTDOWN host-error, not as a guest panic: QMP clients
// were told guest-panic with guest true (found by an audit).
func TestKVMFailureIsNoGuestPanic(t *testing.T) {
	needKVM(t)
	// jmp far 0xffff:0x0010, 0x100000: just past the end of 1 MiB of RAM.
	vm := newVM(t, Config{
		Raw:     &RawGuest{Code: []byte{0xea, 0x10, 0x00, 0xff, 0xff}, LoadAddr: tiny.LoadAddr},
		MemSize: 1 << 20, CPUs: 1, ExitStats: true, SyncRegs: true,
	})
	t.Cleanup(func() { vm.Close() })
	out := vm.Run()
	t.Logf("ended %v: %v", out.Reason, out.Err)
	if out.Reason != vcpu.Crashed || out.Err == nil {
		t.Skipf("this host's KVM ran the jump into no RAM (%v, %v)", out.Reason, out.Err)
	}
	if out.Cause != CauseHostError || !out.ByHost {
		t.Errorf("cause %q (by host %v), want host-error", out.Cause, out.ByHost)
	}
	if w := out.Words(); w == "guest crashed" {
		t.Errorf("reported as %q", w)
	}
}

// A guest resetting in a loop (ud2 with no IDT: a triple fault at once)
// resets in place thousands of times a second; QMP clients get at most a
// hundred RESETs a second of it, where they got one each time and a
// client that stopped reading for a few seconds was hung up on (an
// audit). The reset count still counts every one.
func TestResetStormEventsBounded(t *testing.T) {
	needKVM(t)
	vm := newVM(t, Config{
		Raw:     &RawGuest{Code: []byte{0x0f, 0x0b}, LoadAddr: tiny.LoadAddr, LongMode: true},
		MemSize: 2 << 20, CPUs: 1,
	})
	t.Cleanup(func() { vm.Close() })
	var events atomic.Int64
	vm.resetMu.Lock()
	vm.onReset = func(string) { events.Add(1) }
	vm.resetMu.Unlock()
	done := make(chan Outcome, 1)
	start := time.Now()
	go func() { done <- vm.Run() }()
	waitFor(t, "500 resets", func() bool { return vm.Resets() >= 500 })
	vm.Stop()
	<-done
	elapsed := time.Since(start)
	n := events.Load()
	if limit := 1 + int64(elapsed/(10*time.Millisecond)); n < 1 || n > limit {
		t.Errorf("%d RESET events for %d resets in %v, want 1 to %d", n, vm.Resets(), elapsed, limit)
	}
}

// A pause that lands while a reset is under way (a guest reboot) returns
// only once the reset is done: before, a stop returned "paused" and the
// reset then zeroed and reloaded the guest's RAM (found by an audit).
// The reset is held at its end, just before its RESET goes out, and the
// pause given 100 ms to return early.
func TestPauseWaitsForResetUnderWay(t *testing.T) {
	vm, _, dev := startPortLoop(t)
	inReset, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before startPortLoop's: a failed test must not leave Run held
	vm.resetMu.Lock()
	vm.onReset = func(string) {
		close(inReset)
		<-release
	}
	vm.resetMu.Unlock()
	vm.guestReset(0, vcpu.Reset)
	<-inReset
	paused := pauseInBackground(vm)
	select {
	case <-paused:
		t.Fatal("Pause returned while the reset was under way")
	case <-time.After(100 * time.Millisecond):
	}
	unblock()
	<-paused
	// Paused after the reset set its run state: paused, not prelaunch.
	if n, s := vm.Resets(), vm.Status(); n != 1 || s != "paused" {
		t.Errorf("%d resets, status %q; want 1, paused", n, s)
	}
	// Paused: the guest does not run after the reset.
	before := dev.n.Load()
	time.Sleep(50 * time.Millisecond)
	if after := dev.n.Load(); after != before {
		t.Errorf("%d exits while paused after the reset", after-before)
	}
	vm.Resume()
	waitFor(t, "exits after Resume", func() bool { return dev.n.Load() > before })
}

// A QMP quit's End, called before the server queues its SHUTDOWN and
// reply, leaves the VM running: ended there, Run could return and govmm
// close the server before they were queued, and the client got neither
// (found in review). No reset begins after it; Quit then ends the VM.
func TestQuitEndsTheVMAfterItsShutdown(t *testing.T) {
	vm, done, _ := startPortLoop(t)
	c := &control{vm: vm}
	c.End(qmp.ReasonQuit)
	if s := vm.Status(); s == "shutdown" {
		t.Fatal("End ended the VM before the server queued its SHUTDOWN")
	}
	before := vm.Resets()
	vm.guestReset(0, vcpu.Reset)
	c.Quit(qmp.ReasonQuit)
	if out := <-done; out.Cause != CauseHostQuit || vm.Resets() != before {
		t.Errorf("ended by %q after %d resets; want %q, none", out.Cause, vm.Resets()-before, CauseHostQuit)
	}
}

// TestEndDuringResetKeepsEventOrder: a signal (vm.Stop, as SIGTERM) or
// a QMP quit that ends the VM while a reset is under way lets the reset
// finish and send its RESET before the SHUTDOWN. Before, the SHUTDOWN
// could go out first and the RESET after it (found by an audit; the quit
// in review). The end is made inside the reset, just before its RESET
// goes out, and the SHUTDOWN is given 200 ms to overtake it.
func TestEndDuringResetKeepsEventOrder(t *testing.T) {
	for _, how := range []string{"signal", "quit"} {
		t.Run(how, func(t *testing.T) {
			vm, done, _ := startPortLoop(t)
			sock := filepath.Join(t.TempDir(), "qmp.sock")
			stopQMP, err := vm.ServeQMP(sock)
			if err != nil {
				t.Fatal(err)
			}
			defer stopQMP()
			monitor := func() *goqmp.SocketMonitor {
				mon, err := goqmp.NewSocketMonitor("unix", sock, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if err := mon.Connect(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { mon.Disconnect() })
				return mon
			}
			events, err := monitor().Events(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			control := monitor()
			var mu sync.Mutex
			var names []string
			shutdown := make(chan struct{})
			go func() {
				for e := range events {
					mu.Lock()
					names = append(names, e.Event)
					mu.Unlock()
					if e.Event == "SHUTDOWN" {
						close(shutdown)
						return
					}
				}
			}()
			end := map[string]func(){
				"signal": vm.Stop,
				"quit":   func() { go control.Run([]byte(`{"execute":"quit"}`)) },
			}[how]
			vm.resetMu.Lock()
			emitReset := vm.onReset
			vm.onReset = func(cause string) {
				end()
				select {
				case <-shutdown:
				case <-time.After(200 * time.Millisecond):
				}
				emitReset(cause)
			}
			vm.resetMu.Unlock()
			vm.guestReset(0, vcpu.Reset)
			<-done
			select {
			case <-shutdown:
			case <-time.After(10 * time.Second):
				t.Fatal("no SHUTDOWN")
			}
			mu.Lock()
			defer mu.Unlock()
			if n := vm.Resets(); n != 1 || !slices.Equal(names, []string{"RESET", "SHUTDOWN"}) {
				t.Errorf("%d resets, events %v; want one reset, RESET then SHUTDOWN", n, names)
			}
		})
	}
}

// A host reset asked for while the guest's own is pending joins it: one
// reset, and Reset says so (errResetJoined), so the QMP server sends no
// second RESET beside the guest-reset one the VM sends (a QMP stress
// audit saw two RESETs for one reset).
func TestHostResetJoinsGuestReset(t *testing.T) {
	vm, done, _ := startPortLoop(t)
	_ = done
	var causes []string
	var mu sync.Mutex
	vm.resetMu.Lock()
	vm.onReset = func(cause string) { mu.Lock(); causes = append(causes, cause); mu.Unlock() }
	vm.resetMu.Unlock()
	before := vm.Resets()
	// The guest's request first, as a reboot on a vCPU makes it; the
	// host's joins it before Run gets to it, or after: either way one
	// reset. Only a host reset that came first is the host's own.
	vm.guestReset(0, vcpu.Reset)
	err := vm.Reset()
	mu.Lock()
	defer mu.Unlock()
	switch {
	case errors.Is(err, errResetJoined):
		t.Log("joined")
		if n := vm.Resets() - before; n != 1 || len(causes) != 1 || causes[0] != CauseGuestReset {
			t.Errorf("joined: %d resets, RESET causes %v; want one, guest-reset", n, causes)
		}
	case err == nil:
		// The guest's reset was done before the host asked: two resets,
		// the host's RESET the QMP server's to send.
		if n := vm.Resets() - before; n != 2 || len(causes) != 1 {
			t.Errorf("separate: %d resets, RESET causes %v; want two resets, one guest-reset event", n, causes)
		}
	default:
		t.Fatal(err)
	}
}

// outb is real-mode code writing v to port: mov al,v; mov dx,port; out dx,al.
func outb(port uint16, v byte) []byte {
	return []byte{0xb0, v, 0xba, byte(port), byte(port >> 8), 0xee}
}

// rawHLT is real-mode hlt; a raw guest that gets there ends Halted.
var rawHLT = []byte{0xf4}

// Every reset register of a PC resets the machine: under QEMU 7.2 -M pc
// -no-reboot each of these guests (as a boot sector) ends at once with a
// guest reset. The i8042's pulse commands reset for any even command of
// 0xf0-0xfe (hw/input/pckbd.c), PIIX3's reset control register at 0xcf9
// when bit 2 is set (hw/isa/piix3.c), port 0x92 on a rising bit 0
// (hw/i386/port92.c). govmm took only the i8042's 0xfe; the others ran on
// to the HLT (found by an audit). A raw guest has no PCI host bridge:
// 0xcf9 is a device of its own there (the bridge's is a devices test).
func TestLegacyResetPortsReset(t *testing.T) {
	needKVM(t)
	for _, c := range []struct {
		name string
		code []byte
	}{
		{"i8042 0xfe", outb(0x64, 0xfe)},
		{"i8042 0xf0", outb(0x64, 0xf0)},
		{"i8042 0xfc", outb(0x64, 0xfc)},
		{"0xcf9 0x06", outb(0xcf9, 0x06)},
		{"0xcf9 0x04", outb(0xcf9, 0x04)},
		{"port 0x92 0x01", outb(0x92, 0x01)},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm := newVM(t, Config{
				Raw:     &RawGuest{Code: append(c.code, rawHLT...), LoadAddr: tiny.LoadAddr},
				MemSize: 2 << 20, CPUs: 1, NoReboot: true,
			})
			t.Cleanup(func() { vm.Close() })
			out := runWithin(t, vm, 30*time.Second)
			if out.Reason != vcpu.Reset || out.Cause != CauseGuestReset || out.Err != nil {
				t.Errorf("ended %v (%s, %v), want a guest reset", out.Reason, out.Words(), out.Err)
			}
		})
	}
	// Writes that reset nothing: the guest gets to its HLT.
	for _, c := range []struct {
		name string
		code []byte
	}{
		{"i8042 0xff", outb(0x64, 0xff)},
		{"0xcf9 0x02", outb(0xcf9, 0x02)},
		{"port 0x92 0x02", outb(0x92, 0x02)},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm := newVM(t, Config{
				Raw:     &RawGuest{Code: append(c.code, rawHLT...), LoadAddr: tiny.LoadAddr},
				MemSize: 2 << 20, CPUs: 1, NoReboot: true,
			})
			t.Cleanup(func() { vm.Close() })
			if out := runWithin(t, vm, 30*time.Second); out.Reason != vcpu.Halted {
				t.Errorf("ended %v (%s, %v), want halted", out.Reason, out.Words(), out.Err)
			}
		})
	}
}

// Port 0x92 resets on a rising edge of bit 0, and a machine reset clears
// the bit (QEMU's port92_reset): the same guest writing 1 after each
// reset resets each time. Had the bit stayed set, the second write would
// be no edge and the guest would spin for ever. It spins rather than
// halts after the write: a raw guest's HLT ends the VM, and could beat the
// reset to it.
func TestPort92ResetsAfterEachReset(t *testing.T) {
	needKVM(t)
	spin := []byte{0xeb, 0xfe} // jmp $
	vm := newVM(t, Config{
		Raw:     &RawGuest{Code: append(outb(0x92, 0x01), spin...), LoadAddr: tiny.LoadAddr},
		MemSize: 2 << 20, CPUs: 1,
	})
	t.Cleanup(func() { vm.Close() })
	done := make(chan Outcome, 1)
	go func() { done <- vm.Run() }()
	// A reset takes milliseconds; the bound is only "it happens at all",
	// as the boot tests' (a loaded host stalls for seconds).
	deadline := time.Now().Add(bootTimeout)
	for vm.Resets() < 3 && time.Now().Before(deadline) {
		select {
		case out := <-done:
			t.Fatalf("ended %v (%s) after %d resets, want a reset loop", out.Reason, out.Words(), vm.Resets())
		case <-time.After(time.Millisecond):
		}
	}
	vm.Stop()
	<-done
	if n := vm.Resets(); n < 3 {
		t.Errorf("%d resets in %v, want 3", n, bootTimeout)
	}
}

// runWithin runs vm to its end, stopping it (and failing) after d.
func runWithin(t *testing.T, vm *VM, d time.Duration) Outcome {
	t.Helper()
	watchdog := time.AfterFunc(d, vm.Stop)
	out := vm.Run()
	if !watchdog.Stop() {
		t.Fatalf("guest still running after %v", d)
	}
	return out
}
