package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/internal/testenv"
)

var faultbenchRE = regexp.MustCompile(`faultbench regions=\d+ mib=\d+ forks=\d+ touch_s=([0-9.]+) fork_s=([0-9.]+)`)

// memRun is one faultbench run: the guest's own timings and KVM's
// counters of the whole VM.
type memRun struct {
	touch, fork float64
	kernel      *exitstats.KernelSnapshot
}

// memKVMCounters are KVM's statistics the report shows: vCPU page faults
// (pf_*, summed over vCPUs) and the VM's mappings by page size.
var memKVMCounters = []string{"pf_taken", "pf_fixed", "pf_guest", "pages_4k", "pages_2m"}

// kvmCount reads a vCPU total or, failing that, a VM-wide statistic.
func kvmCount(k *exitstats.KernelSnapshot, name string) (uint64, bool) {
	if n, ok := k.VCPUTotal(name); ok {
		return n, true
	}
	for _, s := range k.VM {
		if s.Name == name && !s.IsHistogram() {
			return s.Value(), true
		}
	}
	return 0, false
}

// BenchmarkMemFaults runs guests/faultbench (5 x 64 MiB touched, then 100
// fork+execs) in govmm with guest RAM madvised MADV_HUGEPAGE (the default)
// and without (--mem-hugepages=false), and reports the medians with
// min-max and n of the guest's touch and fork phases and of KVM's
// page-fault counters, from the binary stats fds. MEM_ROUNDS [3] rounds
// run inside one iteration (-benchtime 1x, as make bench-mem does), every
// round in a rotated order; a failed run is counted and reported.
func BenchmarkMemFaults(b *testing.B) {
	kernel := benchKernel(b, initramfs)
	rounds := testenv.Rounds(b, "MEM_ROUNDS", 3) * b.N
	dir := b.TempDir()
	govmm := func(name string, flags ...string) []string {
		return append([]string{govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2", "--mem", "1G",
			"--exit-stats=false", "--exit-stats-json", filepath.Join(dir, name+".json"),
			"--append", "console=ttyS0 reboot=k panic=-1 quiet govmm.run=faultbench,5,64,100"}, flags...)
	}
	variants := []bootVariant{
		{"hugepages", govmm("hugepages")},
		{"no-hugepages", govmm("no-hugepages", "--mem-hugepages=false")},
	}
	runs := map[string][]memRun{}
	b.ResetTimer()
	failed := testenv.RunRounds(b, rounds, len(variants), func(v int) string { return variants[v].name }, func(_, v int) error {
		args := variants[v].args
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v\n%s", err, lastLines(string(out), 8))
		}
		m := faultbenchRE.FindStringSubmatch(string(out))
		if m == nil {
			return fmt.Errorf("no faultbench result:\n%s", lastLines(string(out), 8))
		}
		r := memRun{}
		r.touch, _ = strconv.ParseFloat(m[1], 64)
		r.fork, _ = strconv.ParseFloat(m[2], 64)
		if r.kernel, err = readKernelTable(filepath.Join(dir, variants[v].name+".json")); err != nil {
			return err
		}
		runs[variants[v].name] = append(runs[variants[v].name], r)
		return nil
	})
	b.StopTimer()
	var report strings.Builder
	fmt.Fprintf(&report, "\nfaultbench 5 x 64 MiB, 100 fork+exec; %d rounds, variants rotated per round; median (min-max, n, failed runs):\n", rounds)
	fmt.Fprintf(&report, "%-13s %-26s %s\n", "guest RAM", "touch(s)", "fork+exec(s)")
	for v, variant := range variants {
		var touch, fork []float64
		for _, r := range runs[variant.name] {
			touch = append(touch, r.touch)
			fork = append(fork, r.fork)
		}
		t, f := testenv.Summarize(touch, failed[v]), testenv.Summarize(fork, failed[v])
		fmt.Fprintf(&report, "%-13s %-26s %s\n", variant.name, t.Format("%.2f"), f.Format("%.2f"))
		if t.N > 0 {
			b.ReportMetric(t.Median, variant.name+"-touch-s")
			b.ReportMetric(f.Median, variant.name+"-fork-s")
		}
	}
	fmt.Fprintf(&report, "KVM statistics of the whole VM (vCPUs summed), median (min-max, n):\n%-13s", "")
	for _, name := range memKVMCounters {
		fmt.Fprintf(&report, " %-26s", name)
	}
	fmt.Fprintln(&report)
	for _, variant := range variants {
		fmt.Fprintf(&report, "%-13s", variant.name)
		for _, name := range memKVMCounters {
			var xs []float64
			for _, r := range runs[variant.name] {
				if r.kernel == nil {
					continue
				}
				if n, ok := kvmCount(r.kernel, name); ok {
					xs = append(xs, float64(n))
				}
			}
			s := testenv.Summarize(xs, 0)
			fmt.Fprintf(&report, " %-26s", s.Format("%.0f"))
			if s.N > 0 && name == "pf_taken" {
				b.ReportMetric(s.Median, variant.name+"-pf_taken")
			}
		}
		fmt.Fprintln(&report)
	}
	// Printed, not b.Log: the testing package cuts a benchmark log at ten lines.
	fmt.Print(report.String())
}
