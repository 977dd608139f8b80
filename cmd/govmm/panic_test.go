package main

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A guest kernel panic reported through pvpanic (--on-panic poweroff) ends
// govmm with status 1 and a line naming the panic; without --on-panic the
// guest has no pvpanic device and its own panic= decides.
func TestGuestPanicEndsGovmm(t *testing.T) {
	kernel := needGuest(t)
	cmd := exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", initramfs,
		"--on-panic", "poweroff", "--append", "console=ttyS0 reboot=k panic=-1 quiet rdinit=/no-such-init")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want status 1; stderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "guest kernel panicked (reported through pvpanic)") {
		t.Errorf("stderr does not name the panic:\n%s", stderr.String())
	}
	if !strings.Contains(stdout.String(), "Kernel panic") {
		t.Errorf("no panic on the console:\n%s", stdout.String())
	}
}

// With --on-panic pause a guest panic stops the VM as QEMU's -action
// panic=pause does: GUEST_PANICKED with action pause, STOP, status
// guest-panicked; cont lets the guest go on with its panic, which with
// panic=-1 reboots it in place.
func TestQMPGuestPanicPause(t *testing.T) {
	vm := startQMP(t, "govmm.shell", "--on-panic", "pause")
	if _, err := io.WriteString(vm.stdin, "echo c >/proc/sysrq-trigger\n"); err != nil {
		t.Fatal(err)
	}
	e := vm.events.wait(t, "GUEST_PANICKED", 30*time.Second)
	if a, _ := e.Data["action"].(string); a != "pause" {
		t.Errorf("GUEST_PANICKED action %q, want pause", a)
	}
	if s := status(t, vm.mon); s != "guest-panicked" {
		t.Errorf("status %q, want guest-panicked", s)
	}
	if err := runQMP(vm.mon, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	vm.events.wait(t, "RESET", 30*time.Second)
	vm.waitBoots(t, 2)
	if err := runQMP(vm.mon, "quit", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitExit(t, vm.cmd, vm.stderr)
	if got, want := vm.events.names(), "GUEST_PANICKED,STOP,RESUME,RESET,SHUTDOWN"; got != want {
		t.Errorf("events %s, want %s", got, want)
	}
}
