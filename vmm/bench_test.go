package vmm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/vcpu"
)

// exitsPerRound is the guest's loop count: enough exits that VM set-up is
// outside the timed part and the per-exit mean settles.
const exitsPerRound = 20000

// timeRawGuest runs one tiny guest doing n port-I/O exits under govmm and
// returns the mean wall time of one exit round trip.
func timeRawGuest(b *testing.B, n uint32, stats, syncRegs bool) float64 {
	vm, err := New(Config{
		Raw:     &RawGuest{Code: tiny.PortLoop16(testPort, n), LoadAddr: tiny.LoadAddr},
		MemSize: 2 << 20, CPUs: 1, ExitStats: stats, SyncRegs: syncRegs,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer vm.Close()
	if _, err := vm.IOBus.Register("test", testPort, 1, devices.NewDiscard(0)); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	out := vm.Run()
	elapsed := time.Since(start)
	if out.Err != nil || out.Reason != vcpu.Halted {
		b.Fatalf("guest ended %v, %v", out.Reason, out.Err)
	}
	return float64(elapsed.Nanoseconds()) / float64(n)
}

// buildBareLoop compiles testdata/bareloop.c with gcc.
func buildBareLoop(b *testing.B) string {
	cc, err := exec.LookPath("gcc")
	if err != nil {
		b.Skip("gcc not found: cannot build the C baseline")
	}
	bin := filepath.Join(b.TempDir(), "bareloop")
	if out, err := exec.Command(cc, "-O2", "-o", bin, "testdata/bareloop.c").CombinedOutput(); err != nil {
		b.Fatalf("build bareloop: %v\n%s", err, out)
	}
	return bin
}

func timeBareLoop(b *testing.B, bin string, n uint32) float64 {
	cmd := exec.Command(bin, strconv.Itoa(int(n)))
	cmd.Stdin = bytes.NewReader(tiny.PortLoop16(testPort, n))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("bareloop: %v", err)
	}
	ns, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		b.Fatalf("bareloop printed %q", out)
	}
	return ns
}

// BenchmarkPortIOExit measures one user-space port-I/O exit round trip, in
// one run, for a bare C KVM_RUN loop (the physical limit) and for govmm
// with statistics off, on, and with sync registers off. The variants are
// interleaved round by round so that load on the shared host hits all of
// them alike, and the medians are reported with their ratio to C.
func BenchmarkPortIOExit(b *testing.B) {
	needKVM(b)
	bin := buildBareLoop(b)
	variants := []struct {
		name string
		run  func() float64
	}{
		{"c", func() float64 { return timeBareLoop(b, bin, exitsPerRound) }},
		{"stats-off", func() float64 { return timeRawGuest(b, exitsPerRound, false, true) }},
		{"stats-on", func() float64 { return timeRawGuest(b, exitsPerRound, true, true) }},
		{"sync-regs-off", func() float64 { return timeRawGuest(b, exitsPerRound, true, false) }},
	}
	samples := make([][]float64, len(variants))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, v := range variants {
			samples[j] = append(samples[j], v.run())
		}
	}
	b.StopTimer()
	// Ratios are taken round by round (each variant against the C loop
	// of the same round), then the median: drifts in host load cancel.
	var sb strings.Builder
	for j, v := range variants {
		med := median(samples[j])
		b.ReportMetric(med, v.name+"-ns/exit")
		ratios := make([]float64, len(samples[j]))
		for i := range ratios {
			ratios[i] = samples[j][i] / samples[0][i]
		}
		if j > 0 {
			b.ReportMetric(median(ratios), v.name+"/c")
		}
		fmt.Fprintf(&sb, "  %s %.0f ns (%.3fx)", v.name, med, median(ratios))
	}
	b.Logf("median per exit over %d rounds of %d exits:%s", b.N, exitsPerRound, sb.String())
}

var median = testenv.Median
