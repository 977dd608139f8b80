package vmm

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/exittrace"
	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/vcpu"
)

// exitsPerRound is the guest's loop count: enough exits that VM set-up is
// outside the timed part and the per-exit mean settles.
const exitsPerRound = 20000

// timeRawGuest runs one tiny guest doing n port-I/O exits under govmm and
// returns the mean wall time of one exit round trip.
func timeRawGuest(n uint32, stats, syncRegs bool) (float64, error) {
	return timeRawGuestWith(n, func(c *Config) { c.ExitStats, c.SyncRegs = stats, syncRegs })
}

// timeRawGuestWith is timeRawGuest with the configuration set by set.
func timeRawGuestWith(n uint32, set func(*Config)) (float64, error) {
	vm, err := newRawGuest(n, set)
	if err != nil {
		return 0, err
	}
	defer vm.Close()
	return timeRun(vm, n)
}

// newRawGuest builds the VM of a guest doing n port-I/O exits, with the
// configuration set by set.
func newRawGuest(n uint32, set func(*Config)) (*VM, error) {
	cfg := Config{
		Raw:     &RawGuest{Code: tiny.PortLoop16(testPort, n), LoadAddr: tiny.LoadAddr},
		MemSize: 2 << 20, CPUs: 1,
	}
	set(&cfg)
	vm, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := vm.IOBus.Register("test", testPort, 1, devices.NewDiscard(0)); err != nil {
		vm.Close()
		return nil, err
	}
	return vm, nil
}

// timeRun runs a VM built by newRawGuest and returns the mean wall time
// of one of its n exits.
func timeRun(vm *VM, n uint32) (float64, error) {
	// Collect the set-up's garbage first. The exit path allocates
	// nothing, but in a child process, whose heap is small, the set-up's
	// garbage started a collection during the run, charged to the exits
	// (~1.5%: child rows 1.059-1.061 the C loop with it, 1.041-1.046
	// without, in interleaved runs).
	runtime.GC()
	start := time.Now()
	out := vm.Run()
	elapsed := time.Since(start)
	if out.Err != nil || out.Reason != vcpu.Halted {
		return 0, fmt.Errorf("guest ended %v, %v", out.Reason, out.Err)
	}
	return float64(elapsed.Nanoseconds()) / float64(n), nil
}

// buildBareLoop compiles testdata/bareloop.c with gcc, a declared
// dependency (make deps): without it the benchmark fails rather than
// skipping, since the C loop is what every row is compared with.
func buildBareLoop(b *testing.B) string {
	cc, err := exec.LookPath("gcc")
	if err != nil {
		b.Fatal("gcc not found (make deps installs it): cannot build the C baseline")
	}
	bin := filepath.Join(b.TempDir(), "bareloop")
	if out, err := exec.Command(cc, "-O2", "-o", bin, "testdata/bareloop.c").CombinedOutput(); err != nil {
		b.Fatalf("build bareloop: %v\n%s", err, out)
	}
	return bin
}

func timeBareLoop(bin string, n uint32) (float64, error) {
	cmd := exec.Command(bin, strconv.Itoa(int(n)))
	cmd.Stdin = bytes.NewReader(tiny.PortLoop16(testPort, n))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("bareloop: %w", err)
	}
	ns, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, fmt.Errorf("bareloop printed %q", out)
	}
	return ns, nil
}

// exitVariant is one row of BenchmarkPortIOExit: a way to run the guest's
// exits and time one.
type exitVariant struct {
	name string
	run  func() (float64, error)
}

// BenchmarkPortIOExit measures one user-space port-I/O exit round trip, in
// one run, for a bare C KVM_RUN loop (the physical limit) and for govmm
// with statistics off, on, on with the top guest RIPs (rips-on), with
// those and the exit trace (trace-on, its ring fresh each run), with sync
// registers off, and with statistics
// on in a child process without and with govmm's sandbox, Landlock and the seccomp filter (the
// child row is the control: seccomp_bench_test.go). EXIT_ROUNDS [25] rounds run inside one
// iteration (run it with -benchtime 1x, as make bench-exits does), each round running every variant in a rotated order
// (testenv.Order), so load on the shared host hits all of them alike. It
// prints, per variant, the median ns per exit and the median of the
// per-round ratios to C, each with its min-max and n, and the failed runs.
func BenchmarkPortIOExit(b *testing.B) {
	needKVM(b)
	bin := buildBareLoop(b)
	rounds := testenv.Rounds(b, "EXIT_ROUNDS", 25) * b.N
	variants := []exitVariant{
		{"c", func() (float64, error) { return timeBareLoop(bin, exitsPerRound) }},
		{"stats-off", func() (float64, error) { return timeRawGuest(exitsPerRound, false, true) }},
		{"stats-on", func() (float64, error) { return timeRawGuest(exitsPerRound, true, true) }},
		{"rips-on", func() (float64, error) {
			return timeRawGuestWith(exitsPerRound, func(c *Config) { c.ExitStats, c.SyncRegs, c.ExitRIPs = true, true, true })
		}},
		{"trace-on", func() (float64, error) {
			return timeRawGuestWith(exitsPerRound, func(c *Config) {
				c.ExitStats, c.SyncRegs, c.ExitRIPs, c.ExitTraceEvents = true, true, true, exittrace.DefaultEvents
			})
		}},
		{"sync-regs-off", func() (float64, error) { return timeRawGuest(exitsPerRound, true, false) }},
		{"child", func() (float64, error) { return timeChildGuest(exitsPerRound, false) }},
		{"seccomp-on", func() (float64, error) { return timeChildGuest(exitsPerRound, true) }},
	}
	// samples[v][r] is variant v's ns per exit in round r, NaN if it failed.
	samples := make([][]float64, len(variants))
	for v := range samples {
		samples[v] = make([]float64, rounds)
	}
	b.ResetTimer()
	failed := testenv.RunRounds(b, rounds, len(variants), func(v int) string { return variants[v].name }, func(r, v int) error {
		ns, err := variants[v].run()
		if err != nil {
			ns = math.NaN()
		}
		samples[v][r] = ns
		return err
	})
	b.StopTimer()
	// Ratios are taken round by round (each variant against the C loop
	// of the same round), then the median: drifts in host load cancel.
	var rep strings.Builder
	fmt.Fprintf(&rep, "\nport-I/O exit round trip, %d rounds of %d exits, variants rotated per round; median (min-max, n):\n", rounds, exitsPerRound)
	fmt.Fprintf(&rep, "%-15s %-30s %s\n", "variant", "ns per exit", "ratio to c (per round)")
	for v, vr := range variants {
		var ns, ratios []float64
		for r, x := range samples[v] {
			if math.IsNaN(x) {
				continue
			}
			ns = append(ns, x)
			if c := samples[0][r]; !math.IsNaN(c) {
				ratios = append(ratios, x/c)
			}
		}
		sum := testenv.Summarize(ns, failed[v])
		b.ReportMetric(sum.Median, vr.name+"-ns/exit")
		fmt.Fprintf(&rep, "%-15s %-30s", vr.name, sum.Format("%.0f"))
		if v > 0 {
			ratio := testenv.Summarize(ratios, 0)
			b.ReportMetric(ratio.Median, vr.name+"/c")
			fmt.Fprintf(&rep, " %s", ratio.Format("%.3f"))
		}
		fmt.Fprintln(&rep)
	}
	// Printed, not b.Log: the testing package cuts a benchmark log at ten lines.
	fmt.Print(rep.String())
}

var median = testenv.Median
