package vmm

import (
	"errors"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vcpu"
)

func needKVM(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); errors.Is(err, os.ErrNotExist) {
		t.Skip("no /dev/kvm on this machine")
	}
}

// counter is a device that counts accesses and remembers its writes.
type counter struct {
	n    atomic.Uint64
	last atomic.Uint32

	mu     sync.Mutex
	values []uint32 // every write, in order
}

// written returns every value written so far.
func (c *counter) written() []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.values)
}

func (c *counter) Read(off uint64, data []byte) {
	c.n.Add(1)
	for i := range data {
		data[i] = 0
	}
}

func (c *counter) Write(off uint64, data []byte) {
	c.n.Add(1)
	var v uint32
	for i, b := range data {
		v |= uint32(b) << (8 * i)
	}
	c.last.Store(v)
	c.mu.Lock()
	c.values = append(c.values, v)
	c.mu.Unlock()
}

// runRaw boots a tiny guest with a counting device at testPort (I/O) and
// testMMIO, and returns the outcome, the device and the statistics.
func runRaw(t *testing.T, code []byte, longMode bool) (Outcome, *counter, *counter, exitstats.Snapshot) {
	t.Helper()
	needKVM(t)
	vm, err := New(Config{
		Raw:     &RawGuest{Code: code, LoadAddr: tiny.LoadAddr, LongMode: longMode},
		MemSize: 2 << 20, CPUs: 1, ExitStats: true, SyncRegs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	io, mmio := &counter{}, &counter{}
	if _, err := vm.IOBus.Register("test", testPort, 4, io); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.MMIOBus.Register("test", testMMIO, 8, mmio); err != nil {
		t.Fatal(err)
	}
	out := vm.Run()
	return out, io, mmio, vm.Stats()
}

const (
	testPort = 0x10
	testMMIO = 0x20000000
)

// checkRow verifies the invariants of a table row: its count, and that
// min <= avg <= max and sum = count x avg.
func checkRow(t *testing.T, s exitstats.Snapshot, name string, want uint64) {
	t.Helper()
	st, ok := s.Total().Row(name)
	if !ok {
		t.Fatalf("no %s row in the table", name)
	}
	if st.Count != want {
		t.Errorf("%s: count %d, want %d", name, st.Count, want)
	}
	avg := st.Avg()
	if float64(st.Min) > avg || avg > float64(st.Max) {
		t.Errorf("%s: min %d avg %.1f max %d out of order", name, st.Min, avg, st.Max)
	}
	if got := float64(st.Count) * avg; math.Abs(got-float64(st.Sum)) > 1e-6*float64(st.Sum)+1 {
		t.Errorf("%s: count x avg = %.0f, sum %d", name, got, st.Sum)
	}
	checkPercentiles(t, name, st)
}

// checkPercentiles verifies a real row's percentiles: from a histogram
// holding every exit, in order between min and max, and a median no more
// than twice the mean (Markov's inequality: fewer than half of the
// durations can be above that), give or take the histogram's error.
func checkPercentiles(t *testing.T, name string, st exitstats.Stats) {
	t.Helper()
	if n := st.Hist.Total(); n != st.Count {
		t.Errorf("%s: histogram holds %d exits, count %d", name, n, st.Count)
	}
	prev := st.Min
	for _, p := range []float64{50, 90, 99, 99.9} {
		ns, ok := st.Percentile(p)
		if !ok || ns < prev || ns > st.Max {
			t.Errorf("%s: p%g = %d (%v): not between the previous %d and max %d", name, p, ns, ok, prev, st.Max)
		}
		prev = ns
	}
	p50, _ := st.Percentile(50)
	if limit := 2*st.Avg()*(1+1.0/32) + 4; p50 == 0 || float64(p50) > limit {
		t.Errorf("%s: p50 %d ns, mean %.0f ns: want 0 < p50 <= %.0f", name, p50, st.Avg(), limit)
	}
	t.Logf("%s: %d exits, min %d p50 %d avg %.0f max %d ns", name, st.Count, st.Min, p50, st.Avg(), st.Max)
}

func TestPortIOExitsCounted(t *testing.T) {
	for _, tc := range []struct {
		name     string
		code     []byte
		longMode bool
	}{
		{"real mode", tiny.PortLoop16(testPort, 500), false},
		{"long mode", tiny.PortLoop64(testPort, 500), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, dev, _, stats := runRaw(t, tc.code, tc.longMode)
			if out.Err != nil || out.Reason != vcpu.Halted {
				t.Fatalf("outcome %v, %v; want halted", out.Reason, out.Err)
			}
			if dev.n.Load() != 500 {
				t.Errorf("device saw %d accesses, want 500", dev.n.Load())
			}
			checkRow(t, stats, "IO:test", 500)
			checkRow(t, stats, "HLT", 1)
			tot := stats.Total()
			var sum uint64
			for _, r := range tot.Rows {
				sum += r.Count
			}
			if sum != tot.Exits().Count {
				t.Errorf("rows add up to %d, TOTAL says %d", sum, tot.Exits().Count)
			}
		})
	}
}

func TestMMIOExitsCounted(t *testing.T) {
	out, _, dev, stats := runRaw(t, tiny.MMIOLoop64(testMMIO, 300), true)
	if out.Err != nil || out.Reason != vcpu.Halted {
		t.Fatalf("outcome %v, %v; want halted", out.Reason, out.Err)
	}
	if dev.n.Load() != 300 {
		t.Errorf("device saw %d accesses, want 300", dev.n.Load())
	}
	checkRow(t, stats, "MMIO:test", 300)
}

// An MMIO access nothing claims is logged and ignored; the VM runs on.
func TestUnclaimedMMIOIsNotFatal(t *testing.T) {
	out, _, _, stats := runRaw(t, tiny.MMIOLoop64(testMMIO+0x1000, 20), true)
	if out.Err != nil || out.Reason != vcpu.Halted {
		t.Fatalf("outcome %v, %v; want halted", out.Reason, out.Err)
	}
	checkRow(t, stats, "MMIO:unclaimed", 20)
}

// The guest reads CPUID leaf 1 on its one vCPU: EBX must carry the APIC
// ID (bits 31-24) and the logical-processor count (bits 23-16) govmm set,
// which is how Linux numbers its CPUs. (EDX is not compared with the
// table: on a PVM host the guest sees feature bits KVM_SET_CPUID2 did not
// give it; TestCPUIDForNumbersVCPUs checks the table itself.)
func TestCPUIDSeesAPICID(t *testing.T) {
	out, dev, _, _ := runRaw(t, tiny.CPUID64(1, testPort), true)
	if out.Err != nil || out.Reason != vcpu.Halted {
		t.Fatalf("outcome %v, %v; want halted", out.Reason, out.Err)
	}
	regs := dev.written()
	if len(regs) != 4 {
		t.Fatalf("CPUID guest wrote %d values, want 4 (EAX, EBX, ECX, EDX)", len(regs))
	}
	t.Logf("CPUID.1: EAX %#x EBX %#x ECX %#x EDX %#x", regs[0], regs[1], regs[2], regs[3])
	if id, count := regs[1]>>24, regs[1]>>16&0xff; id != 0 || count != 1 {
		t.Errorf("CPUID.1:EBX = %#x: APIC ID %d, logical count %d; want 0 and 1", regs[1], id, count)
	}
	if regs[3]&1 == 0 {
		t.Errorf("CPUID.1:EDX = %#x lacks FPU: not leaf 1", regs[3])
	}
}

// cpuidFor numbers each vCPU in every leaf Linux reads its APIC ID from.
func TestCPUIDForNumbersVCPUs(t *testing.T) {
	supported := []kvm.CPUIDEntry{
		{Function: cpuidFeatures, EBX: 0xff00_1234, EDX: 1},
		{Function: cpuidExtTopology, Index: 0}, {Function: cpuidExtTopology, Index: 1},
		{Function: cpuidAMDTopology},
	}
	for _, tc := range []struct{ id, n int }{{0, 1}, {3, 4}, {1, 2}} {
		got := cpuidFor(supported, tc.id, tc.n, false)
		for _, e := range got {
			switch e.Function {
			case cpuidFeatures:
				if e.EBX>>24 != uint32(tc.id) || e.EBX>>16&0xff != uint32(tc.n) || e.EBX&0xffff != 0x1234 {
					t.Errorf("vCPU %d of %d: leaf 1 EBX %#x", tc.id, tc.n, e.EBX)
				}
				if (e.EDX&featHTT != 0) != (tc.n > 1) || e.EDX&1 == 0 {
					t.Errorf("vCPU %d of %d: leaf 1 EDX %#x", tc.id, tc.n, e.EDX)
				}
			case cpuidExtTopology:
				if e.EDX != uint32(tc.id) {
					t.Errorf("vCPU %d: leaf 0xb.%d EDX (x2APIC ID) %d", tc.id, e.Index, e.EDX)
				}
			case cpuidAMDTopology:
				if e.EAX != uint32(tc.id) {
					t.Errorf("vCPU %d: leaf 0x8000001e EAX %d", tc.id, e.EAX)
				}
			}
		}
	}
	if supported[0].EBX != 0xff00_1234 {
		t.Errorf("cpuidFor modified the supported table")
	}
}

func TestMemorySliceBounds(t *testing.T) {
	m, err := newMemory(1<<20, MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	for _, c := range []struct {
		gpa, n uint64
		ok     bool
	}{
		{0, 1 << 20, true},
		{1<<20 - 1, 1, true},
		{1 << 20, 0, true},
		{1 << 20, 1, false},
		{1<<20 - 1, 2, false},
		{math.MaxUint64, 2, false},
		{2, math.MaxUint64, false},
	} {
		_, err := m.Slice(c.gpa, c.n)
		if (err == nil) != c.ok {
			t.Errorf("Slice(%#x, %#x): err %v, want ok=%v", c.gpa, c.n, err, c.ok)
		}
	}
}
