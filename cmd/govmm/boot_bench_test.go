package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/testenv"
)

// bootCmdline makes every VMM's guest do the same work: boot, print the
// ready line from /init, reboot.
const bootCmdline = "console=ttyS0 panic=-1 quiet govmm.exit=reboot"

// bootRun is one measured boot.
type bootRun struct {
	wall      time.Duration
	maxRSSMiB float64 // peak RSS of the VMM process, if rssKnown
	rssKnown  bool
	guestMiB  float64 // guest RAM touched, where the VMM reports it
	ok        bool
}

var touchedRE = regexp.MustCompile(`guest RAM touched ([0-9.]+) MiB`)

// timeBoot runs one VMM command to its exit and measures it. A run that
// fails, or never prints the ready line, is not ok, and err says why.
func timeBoot(timeout time.Duration, name string, args ...string) (bootRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	r := bootRun{wall: time.Since(start)}
	// ProcessState is nil when the command never started.
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.maxRSSMiB = float64(ru.Maxrss) / 1024
			// os/exec starts the child with vfork, so at its exec the
			// kernel folds this process's peak RSS into the child's
			// ru_maxrss: a figure at or below ours may be ours.
			own, err := ownPeakRSSMiB()
			r.rssKnown = err == nil && r.maxRSSMiB > own
		}
	}
	if m := touchedRE.FindStringSubmatch(errOut.String()); m != nil {
		r.guestMiB, _ = strconv.ParseFloat(m[1], 64)
	}
	r.ok = err == nil && strings.Contains(out.String()+errOut.String(), "GOVMM-READY")
	switch {
	case r.ok:
		return r, nil
	case ctx.Err() != nil:
		return r, fmt.Errorf("%s: no end within %v", filepath.Base(name), timeout)
	case err != nil:
		return r, fmt.Errorf("%s: %v\n%s", filepath.Base(name), err, lastLines(errOut.String(), 5))
	default:
		return r, fmt.Errorf("%s: no GOVMM-READY line\n%s", filepath.Base(name), lastLines(errOut.String(), 5))
	}
}

// ownPeakRSSMiB is this process's peak RSS (VmHWM: its own address
// space's, without what getrusage would add from its parent's).
func ownPeakRSSMiB() (float64, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if kb, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), 64)
			return n / 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/self/status: no VmHWM")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// buildPVMBoot compiles the C reference VMM from ../shared/guest.
func buildPVMBoot(b *testing.B) string {
	src := guestDir + "/pvmboot.c"
	if _, err := os.Stat(src); err != nil {
		return ""
	}
	bin := filepath.Join(b.TempDir(), "pvmboot")
	if out, err := exec.Command("gcc", "-O2", "-pthread", "-o", bin, src).CombinedOutput(); err != nil {
		b.Logf("build pvmboot: %v\n%s", err, out)
		return ""
	}
	return bin
}

// BenchmarkBoot boots the shared guest kernel with the test initramfs
// under govmm, QEMU -M microvm, the C reference VMM and (once, if GOKVM
// names its binary) gokvm, and reports median wall time from start to exit
// after the guest's reboot, peak RSS, and for govmm the RSS left after the
// guest RAM it touched, each with its min-max and n; the bzImage boots
// with and without the kernel cache, as a ratio to the vmlinux boot too.
// BOOT_ROUNDS [5]
// rounds run inside one iteration (-benchtime 1x, as make bench-boot
// does), every round in a rotated order; failed boots are counted and
// printed, not dropped.
func BenchmarkBoot(b *testing.B) {
	kernel := benchKernel(b, initramfs)
	rounds := testenv.Rounds(b, "BOOT_ROUNDS", 5) * b.N
	// govmm as it runs by default: exit statistics and top RIPs on (the
	// rows used to turn the statistics off, so the memory they cost was
	// in no figure; found by a benchmark audit). govmm-no-stats shows it.
	govmmRun := func(kernel string, flags ...string) []string {
		return append([]string{govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2", "--mem", "512M",
			"--no-reboot", "--append", bootCmdline + " reboot=k"}, flags...)
	}
	// govmm-bzImage unpacks the payload at every boot; -cached reads the
	// ELF from a kernel cache that one untimed boot filled first.
	cache := "--kernel-cache=" + b.TempDir()
	variants := []bootVariant{
		{"govmm", govmmRun(kernel)},
		{"govmm-no-stats", govmmRun(kernel, "--exit-stats=false")},
		{"govmm-bzImage", govmmRun(guestDir+"/bzImage", "--kernel-cache=off")},
		{"govmm-bzImage-cached", govmmRun(guestDir+"/bzImage", cache)},
	}
	if _, err := timeBoot(60*time.Second, govmmBin, govmmRun(guestDir+"/bzImage", cache)[1:]...); err != nil {
		b.Fatalf("fill the kernel cache: %v", err)
	}
	if qemu, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		// -arch-capabilities: QEMU 7.2 sets that MSR on AMD hosts and
		// kvm_pvm refuses it; reboot=t plus -no-reboot makes the reboot
		// end QEMU.
		variants = append(variants, bootVariant{"qemu-microvm", []string{qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities",
			"-smp", "2", "-m", "512", "-kernel", kernel, "-initrd", initramfs, "-append", bootCmdline + " reboot=t",
			"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"}})
	} else {
		b.Log("qemu-system-x86_64 not installed: no QEMU row")
	}
	if pvmboot := buildPVMBoot(b); pvmboot != "" {
		variants = append(variants, bootVariant{"c-reference", []string{pvmboot, "-k", kernel, "-i", initramfs, "-m", "512", "-s", "2", "-c", bootCmdline + " reboot=k"}})
	}
	runs := make(map[string][]bootRun)
	b.ResetTimer()
	failed := testenv.RunRounds(b, rounds, len(variants), func(v int) string { return variants[v].name }, func(_, v int) error {
		r, err := timeBoot(60*time.Second, variants[v].args[0], variants[v].args[1:]...)
		if err == nil {
			runs[variants[v].name] = append(runs[variants[v].name], r)
		}
		return err
	})
	b.StopTimer()
	failures := map[string]int{}
	for v, n := range failed {
		failures[variants[v].name] = n
	}
	names := variantNames(variants)
	if gokvm := os.Getenv("GOKVM"); gokvm != "" {
		// gokvm enters a bzImage through its real-mode setup, which this
		// PVM host runs in its instruction emulator: one bounded try.
		names = append(names, "gokvm")
		r, err := timeBoot(30*time.Second, gokvm, "boot", "-k", guestDir+"/bzImage", "-i", initramfs, "-m", "512M", "-c", "2", "-p", bootCmdline+" reboot=k")
		if err != nil {
			b.Logf("gokvm: %v", err)
			failures["gokvm"] = 1
		} else {
			runs["gokvm"] = []bootRun{r}
		}
	}
	var report strings.Builder
	fmt.Fprintf(&report, "\nboot to the guest's reboot, %d rounds, variants rotated per round; median (min-max, n, failed runs):\n", rounds)
	fmt.Fprintf(&report, "%-21s %-30s %-30s %s\n", "vmm", "wall(s)", "peak rss(MiB)", "rss-guest(MiB)")
	walls := map[string]testenv.Summary{}
	rssUnknown := 0
	for _, name := range names {
		var wall, rss, over []float64
		for _, r := range runs[name] {
			wall = append(wall, r.wall.Seconds())
			if r.rssKnown {
				rss = append(rss, r.maxRSSMiB)
				over = append(over, r.maxRSSMiB-r.guestMiB)
			} else {
				rssUnknown++
			}
		}
		w := testenv.Summarize(wall, failures[name])
		fmt.Fprintf(&report, "%-21s %-30s", name, w.Format("%.3f"))
		if w.N == 0 {
			fmt.Fprintln(&report)
			continue
		}
		m := testenv.Summarize(rss, 0)
		fmt.Fprintf(&report, " %-30s", m.Format("%.1f"))
		if strings.HasPrefix(name, "govmm") {
			o := testenv.Summarize(over, 0)
			fmt.Fprintf(&report, " %s", o.Format("%.1f"))
			if o.N > 0 {
				b.ReportMetric(o.Median, name+"-rss-minus-guest-MiB")
			}
		}
		fmt.Fprintln(&report)
		b.ReportMetric(w.Median, name+"-s")
		if m.N > 0 {
			b.ReportMetric(m.Median, name+"-rss-MiB")
		}
		walls[name] = w
	}
	if rssUnknown > 0 {
		own, _ := ownPeakRSSMiB()
		fmt.Fprintf(&report, "%d boots left out of the rss columns: their peak was not above this benchmark's own (%.1f MiB), which a child inherits at exec\n", rssUnknown, own)
	}
	govmmWall, qemuWall := walls["govmm"], walls["qemu-microvm"]
	for _, bz := range []string{"govmm-bzImage", "govmm-bzImage-cached"} {
		if w := walls[bz]; w.N > 0 && govmmWall.N > 0 {
			b.ReportMetric(w.Median/govmmWall.Median, bz+"/vmlinux")
			fmt.Fprintf(&report, "%s/vmlinux %.2f (medians)\n", bz, w.Median/govmmWall.Median)
		}
	}
	if govmmWall.N > 0 && qemuWall.N > 0 {
		b.ReportMetric(govmmWall.Median/qemuWall.Median, "govmm/qemu")
		verdict := "the spreads overlap: no difference at this noise"
		switch {
		case govmmWall.N < 3 || qemuWall.N < 3:
			// One or two boots apart say nothing of the noise.
			verdict = fmt.Sprintf("n = %d and %d: too few boots to tell a difference from the noise", govmmWall.N, qemuWall.N)
		case !govmmWall.Overlaps(qemuWall):
			verdict = "the spreads do not overlap"
		}
		fmt.Fprintf(&report, "govmm/qemu %.2f (medians); %s\n", govmmWall.Median/qemuWall.Median, verdict)
	}
	// Printed, not b.Log: the testing package cuts a benchmark log at ten lines.
	fmt.Print(report.String())
}

// bootVariant is one VMM command line to time.
type bootVariant struct {
	name string
	args []string
}

func variantNames(vs []bootVariant) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.name)
	}
	return out
}

var median = testenv.Median

// A VMM binary that cannot start is a failed run with a reason, not a
// nil-pointer panic on its missing process state.
func TestTimeBootBinaryThatCannotStart(t *testing.T) {
	r, err := timeBoot(10*time.Second, filepath.Join(t.TempDir(), "no-such-vmm"))
	if err == nil || r.ok {
		t.Fatalf("timeBoot of a missing binary: %+v, %v; want a failed run", r, err)
	}
	t.Logf("reported as: %v", err)
}
