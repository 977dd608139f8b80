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
	maxRSSMiB float64 // peak RSS of the VMM process
	guestMiB  float64 // guest RAM touched, where the VMM reports it
	ok        bool
}

var touchedRE = regexp.MustCompile(`guest RAM touched ([0-9.]+) MiB`)

// timeBoot runs one VMM command to its exit and measures it. A run that
// fails, or never prints the ready line, is not ok.
func timeBoot(b *testing.B, timeout time.Duration, name string, args ...string) bootRun {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	r := bootRun{wall: time.Since(start)}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSSMiB = float64(ru.Maxrss) / 1024
	}
	if m := touchedRE.FindStringSubmatch(errOut.String()); m != nil {
		r.guestMiB, _ = strconv.ParseFloat(m[1], 64)
	}
	r.ok = err == nil && strings.Contains(out.String()+errOut.String(), "GOVMM-READY")
	if !r.ok && ctx.Err() == nil {
		b.Logf("%s failed: %v\n%s", filepath.Base(name), err, lastLines(errOut.String(), 5))
	}
	return r
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
// names its binary) gokvm, round-robin in one run, and reports median wall
// time from start to exit after the guest's reboot, peak RSS, and for
// govmm the RSS left after the guest RAM it touched.
func BenchmarkBoot(b *testing.B) {
	kernel := guestDir + "/vmlinux"
	if _, err := os.Stat(kernel); err != nil {
		b.Skipf("no guest kernel: %v", err)
	}
	if _, err := os.Stat(initramfs); err != nil {
		b.Fatalf("initramfs missing (%v): run `make guests` first", err)
	}
	variants := []bootVariant{
		{"govmm", []string{govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2", "--mem", "512M", "--exit-stats=false", "--append", bootCmdline + " reboot=k"}},
		{"govmm-bzImage", []string{govmmBin, "run", "--kernel", guestDir + "/bzImage", "--initrd", initramfs, "--smp", "2", "--mem", "512M", "--exit-stats=false", "--append", bootCmdline + " reboot=k"}},
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
	for i := 0; i < b.N; i++ {
		for _, v := range variants {
			runs[v.name] = append(runs[v.name], timeBoot(b, 60*time.Second, v.args[0], v.args[1:]...))
		}
	}
	b.StopTimer()
	if gokvm := os.Getenv("GOKVM"); gokvm != "" {
		// gokvm enters a bzImage through its real-mode setup, which this
		// PVM host runs in its instruction emulator: one bounded try.
		r := timeBoot(b, 30*time.Second, gokvm, "boot", "-k", guestDir+"/bzImage", "-i", initramfs, "-m", "512M", "-c", "2", "-p", bootCmdline+" reboot=k")
		runs["gokvm"] = []bootRun{r}
	}
	var report strings.Builder
	fmt.Fprintf(&report, "\n%-14s %6s %10s %10s %12s\n", "vmm", "boots", "wall(s)", "rss(MiB)", "rss-guest")
	base := 0.0
	for _, name := range append(variantNames(variants), "gokvm") {
		rs := runs[name]
		if len(rs) == 0 {
			continue
		}
		var wall, rss, over []float64
		for _, r := range rs {
			if r.ok {
				wall = append(wall, r.wall.Seconds())
				rss = append(rss, r.maxRSSMiB)
				over = append(over, r.maxRSSMiB-r.guestMiB)
			}
		}
		if len(wall) == 0 {
			fmt.Fprintf(&report, "%-14s %6d %10s   (did not boot within the time limit)\n", name, len(rs), "-")
			continue
		}
		w := median(wall)
		fmt.Fprintf(&report, "%-14s %6d %10.3f %10.1f", name, len(wall), w, median(rss))
		if strings.HasPrefix(name, "govmm") {
			fmt.Fprintf(&report, " %12.1f", median(over))
			b.ReportMetric(median(over), name+"-rss-minus-guest-MiB")
		}
		fmt.Fprintln(&report)
		b.ReportMetric(w, name+"-s")
		b.ReportMetric(median(rss), name+"-rss-MiB")
		if name == "qemu-microvm" {
			base = w
		}
	}
	if base > 0 {
		b.ReportMetric(median(wallOf(runs["govmm"]))/base, "govmm/qemu")
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

func wallOf(rs []bootRun) []float64 {
	var out []float64
	for _, r := range rs {
		if r.ok {
			out = append(out, r.wall.Seconds())
		}
	}
	return out
}

var median = testenv.Median
