package vmm

import (
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/vcpu"
)

// With console=hvc0 the guest's /init talks through the virtio console:
// its output reaches Console, and host input reaches the guest's shell.
func TestVirtioConsole(t *testing.T) {
	console := &syncBuffer{}
	vm, err := New(Config{
		Kernel: needGuest(t, "vmlinux"), Initrd: initramfs,
		Cmdline: "console=hvc0 reboot=k panic=-1 quiet govmm.shell",
		MemSize: 512 << 20, CPUs: 1, VirtioConsole: true,
		Console: console, ExitStats: true, SyncRegs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	done := make(chan Outcome, 1)
	go func() { done <- vm.Run() }()
	// Type once the shell prompts, as a user would (the shell flushes what
	// came before it set up its terminal).
	deadline := time.Now().Add(bootTimeout)
	for !strings.Contains(console.String(), "/ # ") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	vm.Input([]byte("echo INPUT-$((6*7))\nexit\n"))
	var out Outcome
	select {
	case out = <-done:
	case <-time.After(bootTimeout):
		vm.Stop()
		<-done
		t.Fatalf("guest still running after %v; console:\n%s", bootTimeout, console)
	}
	if out.Err != nil || out.Reason != vcpu.PowerOff {
		t.Fatalf("guest ended %v (%v); console:\n%s", out.Reason, out.Err, console)
	}
	if !strings.Contains(console.String(), "GOVMM-READY") || !strings.Contains(console.String(), "INPUT-42") {
		t.Errorf("no ready line or no answer to the input on hvc0; console:\n%s", console)
	}
	var rx, tx uint64
	for _, c := range vm.VirtioCounters() {
		if c.Device != "virtio-console" {
			continue
		}
		n := c.NotifyEventFD + c.NotifyMMIO
		if c.Queue == 0 {
			rx += n
		} else {
			tx += n
		}
	}
	if tx == 0 || rx == 0 {
		t.Errorf("virtio-console saw %d receive and %d transmit notifications, want both", rx, tx)
	}
}
