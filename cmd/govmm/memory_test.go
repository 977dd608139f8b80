package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testenv"
)

// A bzImage boots, and the reset that follows loads it again while govmm
// runs under its seccomp filter, which allows no new files: with the
// kernel cache, which the first load fills, from the cache; without it,
// unpacked again into scratch mappings. No violation, two boots.
func TestBzImageAcrossResetUnderSeccomp(t *testing.T) {
	needGuest(t)
	bz, _ := testenv.LinuxGuest("../..", "bzImage")
	for _, cached := range []bool{true, false} {
		t.Run(map[bool]string{true: "cached", false: "unpacked"}[cached], func(t *testing.T) {
			cache := "off"
			if cached {
				cache = filepath.Join(t.TempDir(), "kernels")
			}
			out := bootTwice(t, govmmBin, "run", "--kernel", bz, "--initrd", initramfs, "--kernel-cache", cache,
				"--exit-stats=false", "--append", "console=ttyS0 reboot=k panic=-1 quiet govmm.exit=reboot")
			if strings.Contains(out, "kernel cache") {
				t.Errorf("the cache complained:\n%s", out)
			}
			if entries, _ := filepath.Glob(filepath.Join(cache, "*.elf")); cached && len(entries) != 1 {
				t.Errorf("cache holds %q, want one entry", entries)
			}
		})
	}
}

// bootTwice runs a VM whose guest reboots until it has booted twice (a
// reset in between), ends it with SIGTERM and returns its output.
func bootTwice(t *testing.T, name string, args ...string) string {
	cmd := exec.Command(name, args...)
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
	if n := len(ready.FindAllString(out.String(), -1)); n < 2 || !regexp.MustCompile(`[1-9][0-9]* resets? \(the tables count every boot\)`).MatchString(out.String()) {
		t.Fatalf("%d boots and no reset counted:\n%s", n, out)
	}
	return out.String()
}

// The guest RAM mapping of a running govmm (the one of --mem's size) is
// madvised MADV_HUGEPAGE ("hg" in its smaps VmFlags) by default and not
// with --mem-hugepages=false.
func TestMemHugePagesFlag(t *testing.T) {
	kernel := needGuest(t)
	for _, tc := range []struct {
		flag string
		want bool
	}{{"--mem-hugepages=true", true}, {"--mem-hugepages=false", false}} {
		t.Run(tc.flag, func(t *testing.T) {
			cmd := exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--mem", "320M", tc.flag,
				"--exit-stats=false", "--append", "console=ttyS0 reboot=k panic=-1 quiet govmm.run=sleep,60")
			out := &syncBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			deadline := time.Now().Add(60 * time.Second)
			for !strings.Contains(out.String(), "GOVMM-READY") && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			flags, ok := ramVmFlags(string(smaps), 320<<10)
			if !ok {
				t.Fatalf("no 320 MiB mapping in govmm's smaps; output:\n%s", out)
			}
			if got := slices.Contains(flags, "hg"); got != tc.want {
				t.Errorf("guest RAM VmFlags %v: hg %v, want %v", flags, got, tc.want)
			}
		})
	}
}

// ramVmFlags returns the VmFlags of the mapping of sizeKiB in smaps.
func ramVmFlags(smaps string, sizeKiB int) ([]string, bool) {
	in := false
	for _, line := range strings.Split(smaps, "\n") {
		if rest, ok := strings.CutPrefix(line, "Size:"); ok {
			in = strings.TrimSpace(rest) == fmt.Sprintf("%d kB", sizeKiB)
		}
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok && in {
			return strings.Fields(rest), true
		}
	}
	return nil, false
}
