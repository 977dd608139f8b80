package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testenv"
)

// checkTraceFile reads a trace govmm wrote and checks it against the
// trace-event format (testenv.CheckTrace).
func checkTraceFile(t *testing.T, path string) testenv.TraceSummary {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := testenv.CheckTrace(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return sum
}

// A 2-vCPU boot of the Linux guest with a disk, traced: a valid trace
// with a track per vCPU full of exits, and the disk's queue with its
// notifies, its interrupts and the arrows between them (the guest reads
// the partition table).
func TestExitTraceOfLinuxBoot(t *testing.T) {
	kernel := needGuest(t)
	trace := filepath.Join(t.TempDir(), "boot.json")
	cmd := exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2",
		"--disk", diskImage(t), "--exit-trace", trace)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("govmm run: %v\n%s", err, lastLines(string(out), 15))
	}
	if !strings.Contains(string(out), "exit trace: ") {
		t.Errorf("no exit trace summary line:\n%s", lastLines(string(out), 15))
	}
	sum := checkTraceFile(t, trace)
	// Which vCPU does what is the guest's choice (and so is which of the
	// disk's queues, one per vCPU, it reads through), but the boot vCPU
	// always exits (PCI probing, the console) and every vCPU has a track.
	if sum.Tracks["vCPU 0"] == 0 {
		t.Errorf("vCPU 0's track is empty or missing; tracks: %v", sum.Tracks)
	}
	vcpuTracks, notifies, irqs := 0, 0, 0
	for name, n := range sum.Tracks {
		switch {
		case strings.HasPrefix(name, "vCPU "):
			vcpuTracks++
		case strings.HasPrefix(name, "virtio-blk q") && strings.HasSuffix(name, " notify"):
			notifies += n
		case strings.HasPrefix(name, "virtio-blk q") && strings.HasSuffix(name, " interrupts"):
			irqs += n
		}
	}
	if notifies == 0 || irqs == 0 {
		t.Errorf("the disk's queues have %d notifies and %d interrupts, want some of each; tracks: %v", notifies, irqs, sum.Tracks)
	}
	if _, ok := sum.Tracks["vCPU 1"]; !ok || vcpuTracks != 2 {
		t.Errorf("tracks %v: want one per vCPU, vCPU 0 and vCPU 1", sum.Tracks)
	}
	if sum.Names["IO:serial"] == 0 {
		t.Errorf("no IO:serial exit in the trace of a boot that printed: %v", sum.Names)
	}
	if sum.Flows == 0 {
		t.Errorf("no arrow from a notify to its interrupt")
	}
	if fi, err := os.Stat(trace); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("%s: %v, %v; want a 0644 file", trace, fi.Mode(), err)
	}
}

// An --exit-trace that cannot be written at exit (its directory removed,
// or replaced, during the run) is reported, and the other reports are
// still written: the exit table, --exit-stats-json, and status 1. It used
// to return at once, losing the table, the saved statistics and, after a
// crash, why the VM ended; and a replaced directory read "permission
// denied" with no word of Landlock (an audit).
func TestFailedExitTraceKeepsTheOtherReports(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		replace    bool
	}{
		{"removed", "no such file or directory", false},
		{"replaced", "permission denied (Landlock lets govmm write only into the directory that was there when the VM started", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			traceDir := filepath.Join(t.TempDir(), "traces")
			if err := os.Mkdir(traceDir, 0o755); err != nil {
				t.Fatal(err)
			}
			stats := filepath.Join(t.TempDir(), "stats.json")
			vm := startQMP(t, "govmm.run=sleep,600", "--exit-trace", filepath.Join(traceDir, "trace.json"), "--exit-stats-json", stats)
			if err := os.Remove(traceDir); err != nil {
				t.Fatal(err)
			}
			if tc.replace {
				if err := os.Mkdir(traceDir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := runQMP(vm.mon, "quit", nil, nil); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- vm.cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("govmm still running 30 s after quit\n%s", vm.stderr.String())
			}
			if tc.replace && strings.Contains(vm.stderr.String(), "this kernel has no Landlock") {
				t.Skip("no Landlock: the replaced directory is written")
			}
			if code := vm.cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("status %d, want 1 for the lost trace", code)
			}
			for _, want := range []string{"govmm: --exit-trace: ", tc.want, "TIMEINGUEST"} {
				if !strings.Contains(vm.stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, vm.stderr.String())
				}
			}
			if _, err := os.Stat(stats); err != nil {
				t.Errorf("--exit-stats-json not written: %v", err)
			}
		})
	}
}
