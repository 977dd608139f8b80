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

// kernelExitRates formats the per-second rates of KVM's exit counters
// (summed over vCPUs, baseline subtracted), largest first.
func kernelExitRates(run, base *exitstats.KernelSnapshot, seconds float64) string {
	if run == nil {
		return " (no KVM stats fd)"
	}
	var sb strings.Builder
	for _, name := range []string{"exits", "halt_exits", "halt_successful_poll", "halt_wakeup", "irq_injections", "irq_exits", "insn_emulation", "io_exits", "mmio_exits", "signal_exits"} {
		n, ok := run.VCPUTotal(name)
		if !ok {
			continue
		}
		if base != nil {
			b, _ := base.VCPUTotal(name)
			n -= min(n, b)
		}
		fmt.Fprintf(&sb, " %s %.0f/s", name, float64(n)/seconds)
	}
	return sb.String()
}

// BenchmarkSemTest runs sem_test on the host, in govmm with default
// settings and with each knob, and in QEMU, round-robin in one run, and
// reports median seconds with the ratio to the host and to QEMU. For the
// govmm runs it prints the user-space exits per second of sem_test by
// reason (the VM's exits minus those of a boot that runs nothing).
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
	} {
		variants = append(variants, variant{k.name, govmm(k.name, semRunArg, k.knobs...), filepath.Join(dir, k.name+".json")})
	}
	if qemu, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		variants = append(variants, variant{"qemu-microvm", []string{qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities",
			"-smp", "2", "-m", "512", "-kernel", kernel, "-initrd", initramfs,
			"-append", strings.Replace(cmdline(semRunArg), "reboot=k", "reboot=t", 1),
			"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"}, ""})
	}
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
	for i := 0; i < b.N; i++ {
		for _, v := range variants {
			r, err := runSemTest(b, v.json, v.args[0], v.args[1:]...)
			if err != nil {
				b.Fatal(err)
			}
			runs[v.name] = append(runs[v.name], r)
		}
	}
	b.StopTimer()

	host := median(secondsOf(runs["host"]))
	qemu := median(secondsOf(runs["qemu-microvm"]))
	var rep strings.Builder
	fmt.Fprintf(&rep, "\nsem_test %s %s, %d rounds (%s)\n", items, spin, b.N, time.Now().Format("2006-01-02"))
	fmt.Fprintf(&rep, "%-22s %9s %9s %9s\n", "where", "seconds", "/host", "/qemu")
	for _, v := range variants {
		s := median(secondsOf(runs[v.name]))
		fmt.Fprintf(&rep, "%-22s %9.3f %9.2f", v.name, s, s/host)
		if qemu > 0 {
			fmt.Fprintf(&rep, " %9.2f", s/qemu)
		}
		fmt.Fprintln(&rep)
		b.ReportMetric(s, v.name+"-s")
	}
	if qemu > 0 {
		b.ReportMetric(median(secondsOf(runs["govmm"]))/qemu, "govmm/qemu")
	}
	fmt.Fprintf(&rep, "\nuser-space exits per second of sem_test (last round, boot baseline subtracted):\n")
	for _, v := range variants {
		rs := runs[v.name]
		if len(rs) == 0 || rs[len(rs)-1].table == nil {
			continue
		}
		last := rs[len(rs)-1]
		fmt.Fprintf(&rep, "%-22s %s\n", v.name, exitRates(*last.table, baseline, last.seconds))
	}
	fmt.Fprintf(&rep, "\nin-kernel exits per second of sem_test (KVM stats fd, last round, boot baseline subtracted):\n")
	for _, v := range variants {
		rs := runs[v.name]
		if len(rs) == 0 || rs[len(rs)-1].table == nil {
			continue
		}
		last := rs[len(rs)-1]
		fmt.Fprintf(&rep, "%-22s%s\n", v.name, kernelExitRates(last.kernel, baselineKernel, last.seconds))
	}
	// Printed, not b.Log: the testing package cuts a benchmark log at ten lines.
	fmt.Print(rep.String())
}

func runSemTestBaseline(args []string, jsonPath string) (exitstats.Snapshot, error) {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return exitstats.Snapshot{}, fmt.Errorf("baseline boot: %v\n%s", err, lastLines(string(out), 8))
	}
	return readTable(jsonPath)
}

// exitRates formats count differences per second, largest first.
func exitRates(run, base exitstats.Snapshot, seconds float64) string {
	type rate struct {
		name string
		r    float64
	}
	var rates []rate
	b := base.Total()
	for _, row := range run.Total().Rows {
		n := float64(row.Count)
		if s, ok := b.Row(row.Name); ok {
			n -= float64(s.Count)
		}
		if n > 0 {
			rates = append(rates, rate{row.Name, n / seconds})
		}
	}
	sort.Slice(rates, func(i, j int) bool { return rates[i].r > rates[j].r })
	var sb strings.Builder
	for _, r := range rates {
		fmt.Fprintf(&sb, " %s %.0f/s", r.name, r.r)
	}
	if sb.Len() == 0 {
		return " (none beyond boot)"
	}
	return sb.String()
}

func secondsOf(rs []semRun) []float64 {
	var out []float64
	for _, r := range rs {
		out = append(out, r.seconds)
	}
	return out
}
