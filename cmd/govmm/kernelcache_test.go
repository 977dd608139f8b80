package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testenv"
)

// A bzImage boots with the kernel cache, which the first load fills, and
// the reset that follows loads the kernel from it while govmm runs under
// its seccomp filter (which allows no new files): no violation, two boots.
func TestKernelCacheAcrossResetUnderSeccomp(t *testing.T) {
	needGuest(t)
	bz, _ := testenv.LinuxGuest("../..", "bzImage")
	cache := filepath.Join(t.TempDir(), "kernels")
	cmd := exec.Command(govmmBin, "run", "--kernel", bz, "--initrd", initramfs, "--kernel-cache", cache,
		"--exit-stats=false", "--append", "console=ttyS0 reboot=k panic=-1 quiet govmm.exit=reboot")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	ready := regexp.MustCompile(`GOVMM-READY`)
	deadline := time.Now().Add(60 * time.Second)
	for len(ready.FindAllString(out.String(), -1)) < 2 && time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("govmm ended (%v) before two boots:\n%s", err, out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("govmm: %v\n%s", err, out)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("govmm did not end within 30 s of SIGTERM:\n%s", out)
	}
	if n := len(ready.FindAllString(out.String(), -1)); n < 2 || !strings.Contains(out.String(), "resets") {
		t.Fatalf("%d boots and no reset counted:\n%s", n, out)
	}
	if strings.Contains(out.String(), "kernel cache") {
		t.Errorf("the cache complained:\n%s", out)
	}
	if entries, _ := filepath.Glob(filepath.Join(cache, "*.elf")); len(entries) != 1 {
		t.Errorf("cache holds %q, want one entry", entries)
	}
}
