package vmm

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govmm/govmm/vcpu"
)

// crashNow makes the guest kernel panic once its drivers are up: it finds
// no init to run.
const crashNow = "rdinit=/no-such-init"

// With --on-panic poweroff the guest's pvpanic report ends the VM as a
// crash, not the reboot its panic=-1 would do.
func TestGuestPanicPoweroff(t *testing.T) {
	vm, out, console := bootLinuxWith(t, "vmlinux", 2, crashNow, func(c *Config) { c.OnPanic = OnPanicPoweroff })
	if out.Reason != vcpu.Crashed || out.Cause != CauseGuestPanic || !errors.Is(out.Err, errGuestPanic) {
		t.Errorf("ended %v, cause %q, %v; want a crash by guest-panic", out.Reason, out.Cause, out.Err)
	}
	if n := vm.Resets(); n != 0 {
		t.Errorf("%d resets: the panic rebooted the guest", n)
	}
	if !strings.Contains(console, "Kernel panic") {
		t.Errorf("no panic on the console:\n%s", console)
	}
}

// With --on-panic pause the VM stops in "guest-panicked", QMP clients are
// told, and the host can still end it.
func TestGuestPanicPause(t *testing.T) {
	console := &syncBuffer{}
	vm, err := New(Config{
		Kernel: needGuest(t, "vmlinux"), Initrd: initramfs,
		Cmdline: DefaultCmdline + " " + crashNow,
		MemSize: 512 << 20, CPUs: 2,
		Console: console, ExitStats: true, SyncRegs: true,
		OnPanic: OnPanicPause,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	var mu sync.Mutex
	var actions []string
	vm.resetMu.Lock()
	vm.onPanic = func(action string, _ bool) {
		mu.Lock()
		actions = append(actions, action)
		mu.Unlock()
	}
	vm.resetMu.Unlock()
	done := make(chan Outcome, 1)
	go func() { done <- vm.Run() }()
	deadline := time.Now().Add(bootTimeout)
	for vm.Status() != "guest-panicked" {
		select {
		case out := <-done:
			t.Fatalf("guest ended (%s, %v) before it panicked; console:\n%s", out.Words(), out.Err, console)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			vm.Stop()
			<-done
			t.Fatalf("not guest-panicked after %v; console:\n%s", bootTimeout, console)
		}
	}
	// The pause is asked for from the panicking vCPU's own exit; wait
	// until every vCPU is parked.
	waitFor(t, "every vCPU parked", func() bool {
		for _, c := range vm.VCPUs() {
			if !c.Paused() {
				return false
			}
		}
		return true
	})
	mu.Lock()
	got := slices.Clone(actions)
	mu.Unlock()
	if want := []string{OnPanicPause}; !slices.Equal(got, want) {
		t.Errorf("GUEST_PANICKED actions %q, want %q", got, want)
	}
	// Prometheus's state gauge says paused (it said running).
	if s := vm.metricsState(); s != "paused" {
		t.Errorf("govmm_vm_state %q for a guest-panicked VM, want paused", s)
	}
	// As in QEMU 7.2, cont lets the panicked guest go on (its panic=-1
	// then reboots it); here the host ends it instead.
	vm.Stop()
	select {
	case out := <-done:
		if out.Cause != CauseHostSignal || out.Err != nil {
			t.Errorf("ended %s (%v), want stopped by the host", out.Words(), out.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run still going 10 s after Stop")
	}
}

// A guest-driven event goes out at most once per period: the first at
// once, repeats within the period dropped (a guest writing pvpanic's
// crash-loaded bit in a loop got a QMP client hung up on).
func TestEventThrottle(t *testing.T) {
	const eventEvery = time.Second
	th := eventThrottle{every: eventEvery}
	t0 := time.Unix(1000, 0)
	for _, step := range []struct {
		at   time.Duration
		want bool
	}{
		{0, true},
		{time.Millisecond, false},
		{eventEvery - 1, false},
		{eventEvery, true},
		{eventEvery + time.Millisecond, false},
		{3 * eventEvery, true},
	} {
		if got := th.allow(t0.Add(step.at)); got != step.want {
			t.Errorf("at %v: allowed %v, want %v", step.at, got, step.want)
		}
	}
}
