package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/kvm"
)

// The kernel-build guest (guests/kbuild, `make -C guests kbuild`): a Debian
// tree with a prepared tinyconfig kernel source on an ext4 image, and the
// script that builds it on the host from the same image.
const (
	kbuildImage   = "../../guests/out/kbuild.img"
	kbuildHostRun = "../../guests/kbuild/host-run.sh"
)

var kbuildSecondsRE = regexp.MustCompile(`kbuild seconds=([0-9.]+) jobs=(\d+) targets=(\S+)`)

// kbuildRun is one timed build: the build's own seconds (printed by
// kbuild.sh around make alone), the wall time of the whole command, and
// for govmm the exit tables of the whole VM.
type kbuildRun struct {
	seconds float64
	wall    float64
	what    string // jobs and targets, as kbuild.sh reports them
	user    *exitstats.Snapshot
	kernel  *exitstats.KernelSnapshot
}

// kbuildWorkload is what every variant builds, from the environment:
// KBUILD_FULL=1 (vmlinux), KBUILD_TARGETS, KBUILD_JOBS, as kbuild.sh
// reads them. The host run inherits them; the guest gets them on its
// kernel command line (guests/kbuild/run.sh).
func kbuildWorkload() (cmdline string) {
	if os.Getenv("KBUILD_FULL") == "1" {
		cmdline += " kbuild.full"
	}
	if t := strings.Fields(os.Getenv("KBUILD_TARGETS")); len(t) > 0 {
		cmdline += " kbuild.targets=" + strings.Join(t, ",")
	}
	if j := os.Getenv("KBUILD_JOBS"); j != "" {
		cmdline += " kbuild.jobs=" + j
	}
	return cmdline
}

// kbuildExitTables reads both halves of a table saved with
// --exit-stats-json. The kernel half is nil where the host has no KVM
// stats fd.
func kbuildExitTables(path string) (*exitstats.Snapshot, *exitstats.KernelSnapshot, error) {
	user, err := readTable(path)
	if err != nil {
		return nil, nil, err
	}
	kernel, err := readKernelTable(path)
	if err != nil {
		return nil, nil, err
	}
	return &user, kernel, nil
}

// runKbuild copies the pristine image (every build starts from the same
// tree), runs one command on the copy (the string "DISK" in args stands
// for the copy's path) and reads kbuild.sh's result from its output.
func runKbuild(ctx context.Context, dir, jsonPath string, args []string) (kbuildRun, error) {
	disk := filepath.Join(dir, "kbuild-run.img")
	defer os.Remove(disk)
	if out, err := exec.Command("cp", "--sparse=always", kbuildImage, disk).CombinedOutput(); err != nil {
		return kbuildRun{}, fmt.Errorf("copy %s: %v\n%s", kbuildImage, err, out)
	}
	args = append([]string(nil), args...)
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "DISK", disk)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	r := kbuildRun{wall: time.Since(start).Seconds()}
	name := filepath.Base(args[0])
	if ctx.Err() != nil {
		return r, fmt.Errorf("%s: still running after the time limit (KBUILD_TIMEOUT)\n%s", name, lastLines(string(out), 12))
	}
	if err != nil {
		return r, fmt.Errorf("%s: %v\n%s", name, err, lastLines(string(out), 12))
	}
	m := kbuildSecondsRE.FindStringSubmatch(string(out))
	if m == nil {
		return r, fmt.Errorf("%s printed no kbuild result:\n%s", name, lastLines(string(out), 12))
	}
	r.seconds, _ = strconv.ParseFloat(m[1], 64)
	r.what = "-j" + m[2] + " " + strings.ReplaceAll(m[3], ",", " ")
	if jsonPath != "" {
		if r.user, r.kernel, err = kbuildExitTables(jsonPath); err != nil {
			return r, err
		}
	}
	return r, nil
}

// BenchmarkKbuild times a kernel build (guests/kbuild) on the host and in
// govmm with default settings and with each knob, and in QEMU microvm,
// round-robin in one run, every build from a fresh copy of the same image.
// It prints median build seconds with the ratio to the host (bare metal)
// and to QEMU, and for the govmm runs the exits per second of the build by
// reason, user-space (govmm's table) and in-kernel (KVM's stats fd), with
// a boot that runs nothing subtracted: every figure a median over the
// rounds, seconds with their min-max and n, failed runs counted.
//
// By default it builds a bounded part of the tree (kbuild.sh's
// DEFAULT_TARGETS); KBUILD_FULL=1 builds vmlinux, KBUILD_TARGETS picks
// other targets, KBUILD_JOBS sets -j. KBUILD_ONLY, a regular expression,
// picks the guest variants to run (the host always runs); KBUILD_ROUNDS
// [1] is the number of rounds, each in a rotated order (testenv.Order),
// run inside one benchmark iteration (as BLK_ROUNDS is: -benchtime Nx
// would first run a whole extra round with b.N = 1); KBUILD_TIMEOUT bounds
// one run (default 90m).
func BenchmarkKbuild(b *testing.B) {
	kernel := guestDir + "/vmlinux"
	if _, err := os.Stat(kernel); err != nil {
		b.Skipf("no guest kernel: %v", err)
	}
	if _, err := os.Stat("/dev/kvm"); errors.Is(err, os.ErrNotExist) {
		b.Skip("no /dev/kvm on this machine")
	}
	if _, err := os.Stat(kbuildImage); err != nil {
		b.Skipf("no kernel-build image %s: build it with `make -C guests kbuild` (as root; a few minutes, ~2 GB)", kbuildImage)
	}
	if os.Geteuid() != 0 {
		b.Skip("the host build loop-mounts the image and chroots into it: run as root")
	}
	if _, err := os.Stat(initramfs); err != nil {
		b.Fatalf("initramfs missing (%v): run `make guests` first", err)
	}
	timeout := 90 * time.Minute
	if v := os.Getenv("KBUILD_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("KBUILD_TIMEOUT=%q: %v", v, err)
		}
		timeout = d
	}
	only := envRegexp(b, "KBUILD_ONLY")
	if only == nil {
		only = regexp.MustCompile("")
	}

	rounds := testenv.Rounds(b, "KBUILD_ROUNDS", 1) * b.N

	dir := b.TempDir()
	cmdline := "console=ttyS0 reboot=k panic=-1 quiet"
	govmm := func(name string, extra string, knobs ...string) []string {
		args := []string{govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2", "--mem", "2G",
			"--exit-stats-json", filepath.Join(dir, name+".json"), "--append", cmdline + extra}
		return append(args, knobs...)
	}
	type variant struct {
		name string
		args []string
		json string
	}
	variants := []variant{{"host", []string{kbuildHostRun, "DISK"}, ""}}
	workload := " govmm.mount" + kbuildWorkload()
	for _, k := range []struct {
		name  string
		knobs []string
	}{
		{"govmm", nil},
		{"govmm-halt-poll-0", []string{"--halt-poll-ns", "0"}},
		{"govmm-halt-poll-1ms", []string{"--halt-poll-ns", "1000000"}},
		{"govmm-hlt-passthrough", []string{"--hlt-passthrough"}},
		{"govmm-pv-haltpoll", []string{"--pv-haltpoll"}},
		{"govmm-pinned", []string{"--cpu-affinity", "0,1"}},
		// The disk not polled: what --blk-poll-us's default costs or
		// saves a build that keeps both vCPUs busy.
		{"govmm-no-poll", []string{"--blk-poll-us", "0"}},
		// Guest RAM in 4 KiB pages: what MADV_HUGEPAGE, the default, saves.
		{"govmm-4k-pages", []string{"--mem-hugepages=false"}},
	} {
		if only.MatchString(k.name) {
			args := append(govmm(k.name, workload, k.knobs...), "--disk", "DISK")
			variants = append(variants, variant{k.name, args, filepath.Join(dir, k.name+".json")})
		}
	}
	if qemu, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		b.Log("qemu-system-x86_64 not installed: no QEMU row")
	} else if only.MatchString("qemu-microvm") {
		// The disk is a virtio-mmio device there (govmm's is virtio-pci);
		// microvm describes it to the guest, whose kernel has the driver.
		variants = append(variants, variant{"qemu-microvm", []string{qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities",
			"-smp", "2", "-m", "2048", "-kernel", kernel, "-initrd", initramfs,
			"-drive", "id=kbuild,file=DISK,format=raw,if=none", "-device", "virtio-blk-device,drive=kbuild",
			"-append", strings.Replace(cmdline, "reboot=k", "reboot=t", 1) + workload,
			"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"}, ""})
	}

	// The exits of a boot that runs nothing, to take out of each run: with
	// the disk attached (its probing costs PCI config exits) but not mounted.
	basePath := filepath.Join(dir, "baseline.json")
	baseArgs := append(govmm("baseline", " govmm.run=true"), "--disk", kbuildImage+",ro")
	if out, err := exec.Command(govmmBin, baseArgs[1:]...).CombinedOutput(); err != nil {
		b.Fatalf("baseline boot: %v\n%s", err, lastLines(string(out), 8))
	}
	baseUser, baseKernel, err := kbuildExitTables(basePath)
	if err != nil {
		b.Fatal(err)
	}

	runs := map[string][]kbuildRun{}
	// Each run's seconds by round (NaN: failed), so that variants can be
	// compared within a round, where the host's drift is shared.
	byRound := make([][]float64, len(variants))
	for v := range byRound {
		byRound[v] = make([]float64, rounds)
	}
	b.ResetTimer()
	failed := testenv.RunRounds(b, rounds, len(variants), func(v int) string { return variants[v].name }, func(round, v int) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		r, err := runKbuild(ctx, dir, variants[v].json, variants[v].args)
		byRound[v][round] = math.NaN()
		if err == nil {
			runs[variants[v].name] = append(runs[variants[v].name], r)
			byRound[v][round] = r.seconds
		}
		return err
	})
	b.StopTimer()

	secs := func(name string) []float64 {
		var xs []float64
		for _, r := range runs[name] {
			xs = append(xs, r.seconds)
		}
		return xs
	}
	host, qemu := testenv.Median(secs("host")), testenv.Median(secs("qemu-microvm"))
	what := "no build finished"
	for _, v := range variants {
		if rs := runs[v.name]; len(rs) > 0 {
			what = rs[0].what
			break
		}
	}
	var rep strings.Builder
	fmt.Fprintf(&rep, "\nkernel build (%s), %d rounds, variants rotated per round (%s)\n", what, rounds, time.Now().Format("2006-01-02"))
	fmt.Fprintf(&rep, "seconds: median (min-max, n, failed runs); ratios of medians; exit rates: medians over rounds\n")
	fmt.Fprintf(&rep, "%-22s %-32s %9s %7s %7s %11s %11s\n", "where", "build seconds", "wall", "/host", "/qemu", "exits/s", "user-exit/s")
	for v, vr := range variants {
		rs := runs[vr.name]
		sum := testenv.Summarize(secs(vr.name), failed[v])
		var walls, all, user []float64
		for _, r := range rs {
			walls = append(walls, r.wall)
			if r.user == nil {
				continue
			}
			user = append(user, kbuildUserExits(*r.user, *baseUser)/r.seconds)
			if n, ok := kbuildKernelDelta(r.kernel, baseKernel, "exits"); ok {
				all = append(all, n/r.seconds)
			}
		}
		fmt.Fprintf(&rep, "%-22s %-32s %9.1f %7s %7s", vr.name, sum.Format("%.1f"), testenv.Median(walls), ratioOf(sum.Median, host), ratioOf(sum.Median, qemu))
		if len(user) > 0 {
			exits := "-"
			if len(all) > 0 {
				exits = fmt.Sprintf("%.0f", testenv.Median(all))
			}
			fmt.Fprintf(&rep, " %11s %11.0f", exits, testenv.Median(user))
		}
		fmt.Fprintln(&rep)
		if sum.N > 0 {
			b.ReportMetric(sum.Median, vr.name+"-s")
		}
	}
	if g := testenv.Median(secs("govmm")); g > 0 {
		if qemu > 0 {
			b.ReportMetric(g/qemu, "govmm/qemu")
		}
		if host > 0 {
			b.ReportMetric(g/host, "govmm/host")
		}
	}
	fmt.Fprintf(&rep, "\nbuild seconds by round (- failed):\n")
	for v, vr := range variants {
		fmt.Fprintf(&rep, "%-22s", vr.name)
		for _, x := range byRound[v] {
			if math.IsNaN(x) {
				fmt.Fprintf(&rep, " %7s", "-")
			} else {
				fmt.Fprintf(&rep, " %7.1f", x)
			}
		}
		fmt.Fprintln(&rep)
	}
	fmt.Fprintf(&rep, "\nexits per second of the build by reason, median (min-max) over rounds, boot baseline subtracted:\n")
	for _, v := range variants {
		var users, exits, events []rateSet
		for _, r := range runs[v.name] {
			if r.user == nil {
				continue
			}
			users = append(users, userExitRates(*r.user, *baseUser, r.seconds))
			if r.kernel != nil {
				e, ev := kbuildKernelRates(r.kernel, baseKernel, r.seconds)
				exits, events = append(exits, e), append(events, ev)
			}
		}
		if len(users) == 0 {
			continue
		}
		fmt.Fprintf(&rep, "%s (n=%d)\n  user-space exits:%s\n", v.name, len(users), formatRates(users))
		if len(exits) > 0 {
			fmt.Fprintf(&rep, "  KVM exits:%s\n  KVM events:%s\n", formatRates(exits), formatRates(events))
		}
	}
	// Printed, not b.Log: the testing package cuts a benchmark log at ten lines.
	fmt.Print(rep.String())
}

// kbuildUserExits is the number of user-space exits in run beyond base.
func kbuildUserExits(run, base exitstats.Snapshot) float64 {
	n := float64(run.Total().Exits().Count)
	return n - float64(base.Total().Exits().Count)
}

// kbuildKernelDelta is a vCPU statistic summed over vCPUs, less its value in
// base (nil: nothing to subtract).
func kbuildKernelDelta(run, base *exitstats.KernelSnapshot, name string) (float64, bool) {
	if run == nil {
		return 0, false
	}
	n, ok := run.VCPUTotal(name)
	if !ok {
		return 0, false
	}
	d := float64(n)
	if base != nil {
		if m, ok := base.VCPUTotal(name); ok {
			d -= float64(m)
		}
	}
	return d, true
}

// kbuildKernelRates returns KVM's per-vCPU event counters (cumulative, no
// unit) summed over vCPUs, per second of the build. exits holds "all",
// every exit, those that went on to user space included; the *_exits
// counters split it by reason, and what they leave is "other" (exits KVM
// keeps no counter for, such as a PVM host's trapped guest syscalls and
// faults). events holds the remaining counters (page faults, emulated
// instructions, halt polling, ...).
func kbuildKernelRates(run, base *exitstats.KernelSnapshot, seconds float64) (exits, events rateSet) {
	exits, events = rateSet{}, rateSet{}
	seen := map[string]bool{}
	total, reasoned := 0.0, 0.0
	for _, v := range run.VCPUs {
		for _, st := range v.Stats {
			if seen[st.Name] || st.Type != kvm.StatCumulative || st.Unit != kvm.UnitNone || st.IsHistogram() {
				continue
			}
			seen[st.Name] = true
			d, ok := kbuildKernelDelta(run, base, st.Name)
			if !ok || d <= 0 {
				continue
			}
			switch {
			case st.Name == "exits":
				total = d
			case strings.HasSuffix(st.Name, "_exits"):
				reasoned += d
				exits[strings.TrimSuffix(st.Name, "_exits")] = d / seconds
			default:
				events[st.Name] = d / seconds
			}
		}
	}
	exits["all"] = total / seconds
	if total > reasoned {
		exits["other"] = (total - reasoned) / seconds
	}
	return exits, events
}
