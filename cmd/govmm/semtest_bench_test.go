package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/vmm"
)

// semTestArgs are sem_test's ITEMS and SPIN; SEMTEST_ITEMS and
// SEMTEST_SPIN override them (the defaults are 800000 2000; the
// guest needs ~80 us per item here, so the benchmark defaults lower).
func semTestArgs() (items, spin string) {
	items, spin = "100000", "2000"
	if v := os.Getenv("SEMTEST_ITEMS"); v != "" {
		items = v
	}
	if v := os.Getenv("SEMTEST_SPIN"); v != "" {
		spin = v
	}
	return items, spin
}

var semSecondsRE = regexp.MustCompile(`sem_test items=\d+ spin=\d+ seconds=([0-9.]+)`)

// semRun is one sem_test run: its own timing, and for govmm the exit
// table of the whole VM.
type semRun struct {
	seconds float64
	table   *exitstats.Snapshot
	kernel  *exitstats.KernelSnapshot // KVM's counters, where it has a stats fd
}

// runSemTest runs one command whose output contains sem_test's line.
func runSemTest(b *testing.B, jsonPath string, name string, args ...string) (semRun, error) {
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return semRun{}, fmt.Errorf("%s: %v\n%s", filepath.Base(name), err, lastLines(string(out), 8))
	}
	m := semSecondsRE.FindStringSubmatch(string(out))
	if m == nil {
		return semRun{}, fmt.Errorf("%s printed no sem_test result:\n%s", filepath.Base(name), lastLines(string(out), 8))
	}
	r := semRun{}
	r.seconds, _ = strconv.ParseFloat(m[1], 64)
	if jsonPath != "" {
		t, err := readTable(jsonPath)
		if err != nil {
			return r, err
		}
		r.table = &t
		if r.kernel, err = readKernelTable(jsonPath); err != nil {
			return r, err
		}
	}
	return r, nil
}

// readKernelTable reads the in-kernel half of a saved table (nil where the
// kernel had no stats fd).
func readKernelTable(path string) (*exitstats.KernelSnapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var saved vmm.ExitTable
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return saved.Kernel, nil
}

// semKernelCounters are KVM's exit counters the sem_test report shows.
var semKernelCounters = []string{"exits", "halt_exits", "halt_successful_poll", "halt_wakeup", "irq_injections", "irq_exits", "insn_emulation", "io_exits", "mmio_exits", "signal_exits"}

// kvmCounterRates returns the per-second rates of KVM's counters names
// (summed over vCPUs, baseline subtracted); nil without a stats fd.
func kvmCounterRates(run, base *exitstats.KernelSnapshot, names []string, seconds float64) rateSet {
	if run == nil {
		return nil
	}
	rates := rateSet{}
	for _, name := range names {
		n, ok := run.VCPUTotal(name)
		if !ok {
			continue
		}
		if base != nil {
			b, _ := base.VCPUTotal(name)
			n -= min(n, b)
		}
		rates[name] = float64(n) / seconds
	}
	return rates
}

// BenchmarkSemTest runs sem_test on the host, in govmm with default
// settings and with each knob, and in QEMU, and reports median seconds
// with min-max and n, and the ratio of the medians to the host and to
// QEMU. SEMTEST_ROUNDS [3] rounds run inside one iteration (-benchtime 1x,
// as make bench-semtest does), every round in a rotated order; a failed
// run is counted and reported. For the govmm runs it prints the exits per
// second of sem_test by reason, user-space and KVM's, as medians over the
// rounds (each round's count minus that of a boot that runs nothing).
func BenchmarkSemTest(b *testing.B) {
	kernel := guestDir + "/vmlinux"
	if _, err := os.Stat(kernel); err != nil {
		b.Skipf("no guest kernel: %v", err)
	}
	hostBin := "../../guests/out/sem_test"
	if _, err := os.Stat(hostBin); err != nil {
		b.Fatalf("sem_test missing (%v): run `make guests` first", err)
	}
	items, spin := semTestArgs()
	rounds := testenv.Rounds(b, "SEMTEST_ROUNDS", 3) * b.N
	cmdline := func(run string) string {
		return "console=ttyS0 reboot=k panic=-1 quiet govmm.run=" + run
	}
	dir := b.TempDir()
	govmm := func(name string, run string, knobs ...string) []string {
		args := []string{govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2", "--mem", "512M",
			"--exit-stats-json", filepath.Join(dir, name+".json"), "--append", cmdline(run)}
		return append(args, knobs...)
	}
	semRunArg := "sem_test," + items + "," + spin
	type variant struct {
		name string
		args []string
		json string
	}
	variants := []variant{{"host", []string{hostBin, items, spin}, ""}}
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
		{"govmm-sysmon-asleep", []string{"--keep-sysmon-awake=false"}},
	} {
		variants = append(variants, variant{k.name, govmm(k.name, semRunArg, k.knobs...), filepath.Join(dir, k.name+".json")})
	}
	if qemu, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		variants = append(variants, variant{"qemu-microvm", []string{qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities",
			"-smp", "2", "-m", "512", "-kernel", kernel, "-initrd", initramfs,
			"-append", strings.Replace(cmdline(semRunArg), "reboot=k", "reboot=t", 1),
			"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"}, ""})
	}
	// SEMTEST_ONLY, a regular expression, picks variants.
	variants = envPick(b, "SEMTEST_ONLY", variants, func(v variant) string { return v.name })
	// The exits of a boot that runs nothing, to take out of each run.
	baseline, err := runSemTestBaseline(govmm("baseline", "true"), filepath.Join(dir, "baseline.json"))
	if err != nil {
		b.Fatal(err)
	}
	baselineKernel, err := readKernelTable(filepath.Join(dir, "baseline.json"))
	if err != nil {
		b.Fatal(err)
	}
	runs := map[string][]semRun{}
	b.ResetTimer()
	failed := testenv.RunRounds(b, rounds, len(variants), func(v int) string { return variants[v].name }, func(_, v int) error {
		r, err := runSemTest(b, variants[v].json, variants[v].args[0], variants[v].args[1:]...)
		if err == nil {
			runs[variants[v].name] = append(runs[variants[v].name], r)
		}
		return err
	})
	b.StopTimer()

	host := testenv.Median(secondsOf(runs["host"]))
	qemu := testenv.Median(secondsOf(runs["qemu-microvm"]))
	var rep strings.Builder
	fmt.Fprintf(&rep, "\nsem_test %s %s, %d rounds, variants rotated per round (%s); seconds: median (min-max, n, failed runs); ratios of medians\n", items, spin, rounds, time.Now().Format("2006-01-02"))
	fmt.Fprintf(&rep, "%-22s %-30s %7s %7s\n", "where", "seconds", "/host", "/qemu")
	for v, vr := range variants {
		sum := testenv.Summarize(secondsOf(runs[vr.name]), failed[v])
		fmt.Fprintf(&rep, "%-22s %-30s %7s %7s\n", vr.name, sum.Format("%.3f"), ratioOf(sum.Median, host), ratioOf(sum.Median, qemu))
		if sum.N > 0 {
			b.ReportMetric(sum.Median, vr.name+"-s")
		}
	}
	if g := testenv.Median(secondsOf(runs["govmm"])); qemu > 0 && g > 0 {
		b.ReportMetric(g/qemu, "govmm/qemu")
	}
	fmt.Fprintf(&rep, "\nuser-space exits per second of sem_test, median (min-max) over rounds, boot baseline subtracted:\n")
	for _, v := range variants {
		var sets []rateSet
		for _, r := range runs[v.name] {
			if r.table != nil {
				sets = append(sets, userExitRates(*r.table, baseline, r.seconds))
			}
		}
		if len(sets) > 0 {
			fmt.Fprintf(&rep, "%-22s n=%d%s\n", v.name, len(sets), formatRates(sets))
		}
	}
	fmt.Fprintf(&rep, "\nin-kernel exits per second of sem_test (KVM stats fd), median (min-max) over rounds, boot baseline subtracted:\n")
	for _, v := range variants {
		var sets []rateSet
		for _, r := range runs[v.name] {
			if r.table != nil {
				sets = append(sets, kvmCounterRates(r.kernel, baselineKernel, semKernelCounters, r.seconds))
			}
		}
		if len(sets) > 0 {
			fmt.Fprintf(&rep, "%-22s n=%d%s\n", v.name, len(sets), formatRates(sets))
		}
	}
	// Printed, not b.Log: the testing package cuts a benchmark log at ten lines.
	fmt.Print(rep.String())
}

// ratioOf formats x/base, or "-" without a base.
func ratioOf(x, base float64) string {
	if base <= 0 || x <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", x/base)
}

func runSemTestBaseline(args []string, jsonPath string) (exitstats.Snapshot, error) {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return exitstats.Snapshot{}, fmt.Errorf("baseline boot: %v\n%s", err, lastLines(string(out), 8))
	}
	return readTable(jsonPath)
}

// rateSet is one run's events per second, by name.
type rateSet map[string]float64

// userExitRates returns the per-second rate of each user-space exit row
// of run beyond its count in base; rows with nothing beyond base are left
// out.
func userExitRates(run, base exitstats.Snapshot, seconds float64) rateSet {
	rates := rateSet{}
	b := base.Total()
	for _, row := range run.Total().Rows {
		n := float64(row.Count)
		if s, ok := b.Row(row.Name); ok {
			n -= float64(s.Count)
		}
		if n > 0 {
			rates[row.Name] = n / seconds
		}
	}
	return rates
}

// formatRates prints every name of sets (one per round) with the median
// and min-max of its rate over the rounds, a round without it counting as
// 0, largest median first: " IO:serial 10/s (8-12)".
func formatRates(sets []rateSet) string {
	names := map[string]bool{}
	for _, set := range sets {
		for name := range set {
			names[name] = true
		}
	}
	type rate struct {
		name string
		s    testenv.Summary
	}
	var rates []rate
	for name := range names {
		var xs []float64
		for _, set := range sets {
			xs = append(xs, set[name])
		}
		rates = append(rates, rate{name, testenv.Summarize(xs, 0)})
	}
	sort.Slice(rates, func(i, j int) bool {
		if rates[i].s.Median != rates[j].s.Median {
			return rates[i].s.Median > rates[j].s.Median
		}
		return rates[i].name < rates[j].name
	})
	var sb strings.Builder
	for _, r := range rates {
		fmt.Fprintf(&sb, " %s %s", r.name, perSecond(r.s.Median))
		if r.s.N > 1 {
			fmt.Fprintf(&sb, " (%s-%s)", strings.TrimSuffix(perSecond(r.s.Min), "/s"), strings.TrimSuffix(perSecond(r.s.Max), "/s"))
		}
	}
	if sb.Len() == 0 {
		return " (none beyond boot)"
	}
	return sb.String()
}

// perSecond prints a rate with the digits that matter.
func perSecond(r float64) string {
	if r < 10 {
		return fmt.Sprintf("%.1f/s", r)
	}
	return fmt.Sprintf("%.0f/s", r)
}

func secondsOf(rs []semRun) []float64 {
	var out []float64
	for _, r := range rs {
		out = append(out, r.seconds)
	}
	return out
}
