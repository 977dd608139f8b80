package exitstats

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/govmm/govmm/kvm"
)

// lint fails t on any problem promlint finds in what c exports.
func lint(t *testing.T, c prometheus.Collector) {
	t.Helper()
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// gather registers c alone in a pedantic registry, which also checks that
// every metric was described, and returns the families by name.
func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// series returns the metric of family mf whose labels are all in want.
func series(mf *dto.MetricFamily, want map[string]string) *dto.Metric {
	if mf == nil {
		return nil
	}
	for _, m := range mf.GetMetric() {
		match := 0
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
				match++
			}
		}
		if match == len(want) {
			return m
		}
	}
	return nil
}

func TestCollectorExits(t *testing.T) {
	r := NewRegistry()
	serial, hlt := r.Kind("IO:serial"), r.Kind("HLT")
	v0, v1 := r.NewVCPU(0), r.NewVCPU(1)
	for _, ns := range []uint64{50, 150, 7000} {
		v0.Record(serial, ns)
	}
	v0.RecordGuest(2_000_000_000)
	v1.Record(hlt, 3e9) // past the last finite bound
	c := NewCollector(CollectorConfig{Registry: r})
	lint(t, c)

	want := `
# HELP govmm_exits_total VM exits handled in user space, by vCPU and exit reason (with the device for I/O and MMIO).
# TYPE govmm_exits_total counter
govmm_exits_total{reason="HLT",vcpu="1"} 1
govmm_exits_total{reason="IO:serial",vcpu="0"} 3
# HELP govmm_guest_seconds_total Time the vCPU spent inside KVM_RUN (in the guest, or in the kernel on its behalf).
# TYPE govmm_guest_seconds_total counter
govmm_guest_seconds_total{vcpu="0"} 2
govmm_guest_seconds_total{vcpu="1"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "govmm_exits_total", "govmm_guest_seconds_total"); err != nil {
		t.Error(err)
	}

	mfs := gather(t, c)
	h := series(mfs["govmm_exit_handling_seconds"], map[string]string{"vcpu": "0", "reason": "IO:serial"}).GetHistogram()
	if h.GetSampleCount() != 3 || math.Abs(h.GetSampleSum()-7200e-9) > 1e-15 {
		t.Errorf("IO:serial histogram: count %d sum %g, want 3 and 7.2e-6", h.GetSampleCount(), h.GetSampleSum())
	}
	// Cumulative counts at 100 ns, 200 ns, ..., 12.8 us: 1, 2, 2, ..., 3.
	wantCum := map[float64]uint64{100e-9: 1, 200e-9: 2, 6400e-9: 2, 12800e-9: 3}
	if len(h.GetBucket()) != NumBuckets-1 {
		t.Errorf("%d finite buckets, want %d", len(h.GetBucket()), NumBuckets-1)
	}
	for _, b := range h.GetBucket() {
		for bound, n := range wantCum {
			if math.Abs(b.GetUpperBound()-bound) < 1e-12 && b.GetCumulativeCount() != n {
				t.Errorf("bucket le=%g holds %d, want %d", bound, b.GetCumulativeCount(), n)
			}
		}
	}
	hltHist := series(mfs["govmm_exit_handling_seconds"], map[string]string{"vcpu": "1", "reason": "HLT"}).GetHistogram()
	if n := hltHist.GetBucket()[NumBuckets-2].GetCumulativeCount(); hltHist.GetSampleCount() != 1 || n != 0 {
		t.Errorf("a 3 s HLT: count %d, %d below the last bound; want 1 and 0", hltHist.GetSampleCount(), n)
	}
	if g := series(mfs["govmm_guest_run_seconds"], map[string]string{"vcpu": "0"}).GetHistogram(); g.GetSampleCount() != 1 || g.GetSampleSum() != 2 {
		t.Errorf("guest run histogram: %v", g)
	}
}

// The Prometheus histogram and the percentiles come from the same counts:
// each Prometheus bucket holds exactly the samples at or below its bound,
// and each percentile lies in the Prometheus bucket of the exact one.
func TestPrometheusBucketsAgreeWithPercentiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	r := NewRegistry()
	k := r.Kind("IO:x")
	v := r.NewVCPU(0)
	samples := make([]uint64, 20000)
	for i := range samples {
		samples[i] = uint64(math.Exp(rng.Float64() * math.Log(3e9))) // 1 ns to 3 s
		v.Record(k, samples[i])
	}
	slices.Sort(samples)
	h := series(gather(t, NewCollector(CollectorConfig{Registry: r}))["govmm_exit_handling_seconds"],
		map[string]string{"vcpu": "0", "reason": "IO:x"}).GetHistogram()
	if len(h.GetBucket()) != NumBuckets-1 || h.GetSampleCount() != uint64(len(samples)) {
		t.Fatalf("%d buckets, %d samples", len(h.GetBucket()), h.GetSampleCount())
	}
	// prometheusBucket is the index of the first bound at or above ns.
	prometheusBucket := func(ns uint64) int {
		for i := range NumBuckets - 1 {
			if b, _ := BucketUpperBound(i); ns <= b {
				return i
			}
		}
		return NumBuckets - 1
	}
	for i, b := range h.GetBucket() {
		bound, _ := BucketUpperBound(i)
		atOrBelow, _ := slices.BinarySearch(samples, bound+1)
		if b.GetCumulativeCount() != uint64(atOrBelow) || math.Abs(b.GetUpperBound()-float64(bound)/1e9) > 1e-15 {
			t.Errorf("bucket le=%g holds %d, %d samples are at or below %d ns",
				b.GetUpperBound(), b.GetCumulativeCount(), atOrBelow, bound)
		}
	}
	row, _ := r.Snapshot().VCPUs[0].Row("IO:x")
	for _, perMille := range []uint64{500, 900, 990, 999} {
		got, _ := row.Percentile(float64(perMille) / 10)
		exact := nearestRank(samples, perMille)
		if prometheusBucket(got) != prometheusBucket(exact) {
			t.Errorf("p%g = %d ns, exact %d: in different Prometheus buckets", float64(perMille)/10, got, exact)
		}
	}
}

func TestCollectorVMInfo(t *testing.T) {
	state := "running"
	c := NewCollector(CollectorConfig{VMInfo: func() VMInfo {
		return VMInfo{VCPUs: 2, MemoryBytes: 512 << 20, State: state, States: []string{"created", "running", "paused", "stopped"}, Resets: 3}
	}})
	lint(t, c)
	want := `
# HELP govmm_memory_bytes Guest RAM size.
# TYPE govmm_memory_bytes gauge
govmm_memory_bytes 5.36870912e+08
# HELP govmm_vcpus Number of vCPUs of the VM.
# TYPE govmm_vcpus gauge
govmm_vcpus 2
# HELP govmm_vm_resets_total Machine resets (system_reset, guest reboots) since the VM started.
# TYPE govmm_vm_resets_total counter
govmm_vm_resets_total 3
# HELP govmm_vm_state 1 for the state the VM is in, 0 for the others.
# TYPE govmm_vm_state gauge
govmm_vm_state{state="created"} 0
govmm_vm_state{state="paused"} 0
govmm_vm_state{state="running"} 1
govmm_vm_state{state="stopped"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// A state the list lacks still shows as the current one.
	state = "migrating"
	if v := series(gather(t, c)["govmm_vm_state"], map[string]string{"state": "migrating"}); v.GetGauge().GetValue() != 1 {
		t.Errorf("unlisted state: %v", v)
	}
}

func TestCollectorKernelFromKVM(t *testing.T) {
	ks := newKernelStats(t, newKVMVM(t))
	c := NewCollector(CollectorConfig{Kernel: ks})
	lint(t, c)
	mfs := gather(t, c)

	exits := series(mfs["govmm_kvm_exits_total"], map[string]string{"vcpu": "0"})
	if exits.GetCounter().GetValue() < 2 {
		t.Errorf("govmm_kvm_exits_total{vcpu=\"0\"} = %v, want >= 2", exits)
	}
	// Each KVM stat is exported under one name, VM-wide ones without labels.
	snap, err := ks.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(mfs)+0, len(snap.VM)+len(snap.VCPUs[0].Stats); got != want {
		t.Errorf("%d metric families for %d KVM statistics", got, want)
	}
	for _, st := range snap.VM {
		mf := mfs[kernelMetricName(st.StatDesc, st.Name)]
		if mf == nil || len(mf.GetMetric()) != 1 || len(mf.GetMetric()[0].GetLabel()) != 0 {
			t.Errorf("VM-wide %s: %v", st.Name, mf)
		}
	}
	// Time stats are in seconds, and histograms get their sums from the
	// matching counter where the kernel has one.
	for name, mf := range mfs {
		if !strings.Contains(name, "_seconds") {
			continue
		}
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil && math.IsNaN(h.GetSampleSum()) {
				if _, ok := mfs[name+"_total"]; ok {
					t.Errorf("%s has no sum although %s_total exists", name, name)
				}
			}
		}
	}
}

func TestCollectorAfterKernelClose(t *testing.T) {
	ks := newKernelStats(t, newKVMVM(t))
	c := NewCollector(CollectorConfig{Kernel: ks})
	if err := ks.Close(); err != nil {
		t.Fatal(err)
	}
	// Closed fds are not read again: no metric pretends to be a reading.
	if mfs := gather(t, c); len(mfs) != 0 {
		t.Errorf("%d families after Close", len(mfs))
	}
}

// An fd that fails to read fails the kernel part of the scrape, with the
// error, rather than exporting zeros.
func TestCollectorKernelReadError(t *testing.T) {
	k := newKVMVM(t)
	f, err := k.vcpu.StatsFD()
	if err != nil {
		t.Fatal(err)
	}
	f.Close() // Read now fails with EBADF
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(CollectorConfig{Kernel: NewKernelStats(nil, []*kvm.StatsFile{f})}))
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "KVM stats of vCPU 0") {
		t.Errorf("gather error %v, want the failed read", err)
	}
}

func TestKernelMetricName(t *testing.T) {
	d := func(name string, typ kvm.StatType, unit kvm.StatUnit) kvm.StatDesc {
		return kvm.StatDesc{Name: name, Type: typ, Unit: unit, Exponent: -9, Size: 1}
	}
	tests := []struct {
		d    kvm.StatDesc
		want string
	}{
		{d("exits", kvm.StatCumulative, kvm.UnitNone), "govmm_kvm_exits_total"},
		{d("halt_wait_ns", kvm.StatCumulative, kvm.UnitSeconds), "govmm_kvm_halt_wait_seconds_total"},
		{d("halt_wait_hist", kvm.StatLogHist, kvm.UnitSeconds), "govmm_kvm_halt_wait_seconds"},
		{d("halt_poll_linear_hist", kvm.StatLinearHist, kvm.UnitNone), "govmm_kvm_halt_poll_linear"},
		{d("blocking", kvm.StatInstant, kvm.UnitBoolean), "govmm_kvm_blocking"},
		{d("max_mmu_rmap_size", kvm.StatPeak, kvm.UnitNone), "govmm_kvm_max_mmu_rmap_size"},
		{d("resident", kvm.StatInstant, kvm.UnitBytes), "govmm_kvm_resident_bytes"},
		{d("tsc", kvm.StatCumulative, kvm.UnitCycles), "govmm_kvm_tsc_cycles_total"},
		{d("flush_total", kvm.StatCumulative, kvm.UnitNone), "govmm_kvm_flush_total"},
		{d("queue_total", kvm.StatInstant, kvm.UnitNone), "govmm_kvm_queue"},
		{d("Odd-Name.x", kvm.StatCumulative, kvm.UnitNone), "govmm_kvm_odd_name_x_total"},
		{d("ns", kvm.StatCumulative, kvm.UnitSeconds), "govmm_kvm_ns_seconds_total"},
	}
	for _, tt := range tests {
		if got := kernelMetricName(tt.d, tt.d.Name); got != tt.want {
			t.Errorf("name of %q = %q, want %q", tt.d.Name, got, tt.want)
		}
	}
}

// Names that collide after conversion must still give distinct metrics: a
// VM-wide stat named like a vCPU one, and two spellings of one unit.
func TestKernelMetricCollisions(t *testing.T) {
	vcpu := kernelMetrics([]kvm.StatDesc{
		{Name: "exits", Type: kvm.StatCumulative, Size: 1},
		{Name: "wait_ns", Type: kvm.StatCumulative, Unit: kvm.UnitSeconds, Exponent: -9, Size: 1},
		{Name: "wait_us", Type: kvm.StatCumulative, Unit: kvm.UnitSeconds, Exponent: -6, Size: 1},
		{Name: "wait_hist", Type: kvm.StatLogHist, Unit: kvm.UnitSeconds, Exponent: -9, Size: 32},
	}, []string{"vcpu"}, nil)
	vm := kernelMetrics([]kvm.StatDesc{{Name: "exits", Type: kvm.StatCumulative, Size: 1}}, nil, vcpu)
	names := map[string]string{}
	for stat, m := range vcpu {
		names["vcpu "+stat] = m.name
	}
	for stat, m := range vm {
		names["vm "+stat] = m.name
	}
	want := map[string]string{
		"vcpu exits":     "govmm_kvm_exits_total",
		"vcpu wait_ns":   "govmm_kvm_wait_seconds_total",
		"vcpu wait_us":   "govmm_kvm_wait_us_seconds_total",
		"vcpu wait_hist": "govmm_kvm_wait_seconds",
		"vm exits":       "govmm_kvm_vm_exits_total",
	}
	for k, w := range want {
		if names[k] != w {
			t.Errorf("%s -> %q, want %q", k, names[k], w)
		}
	}
	if s := vcpu["wait_hist"].sumStat; s != "wait_ns" {
		t.Errorf("wait_hist sums from %q, want wait_ns", s)
	}
}

// A kernel histogram becomes a Prometheus histogram with KVM's bucket
// bounds in base units.
func TestKernelHistogramMetric(t *testing.T) {
	hist := kvm.StatDesc{Name: "wait_hist", Type: kvm.StatLogHist, Unit: kvm.UnitSeconds, Exponent: -9, Size: 4}
	sum := kvm.StatDesc{Name: "wait_ns", Type: kvm.StatCumulative, Unit: kvm.UnitSeconds, Exponent: -9, Size: 1}
	metrics := kernelMetrics([]kvm.StatDesc{hist, sum}, []string{"vcpu"}, nil)
	ch := make(chan prometheus.Metric, 4)
	// Values 0; 1; 2, 3; 5 and 1000: buckets 0, 1, 2, and the rest.
	sendKernel(ch, metrics, []KernelStat{
		{StatDesc: hist, Values: []uint64{1, 1, 2, 2}},
		{StatDesc: sum, Values: []uint64{1011}},
	}, "0")
	close(ch)
	var h *dto.Histogram
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		if pb.Histogram != nil {
			h = pb.Histogram
		}
	}
	if h == nil {
		t.Fatal("no histogram sent")
	}
	if h.GetSampleCount() != 6 || math.Abs(h.GetSampleSum()-1011e-9) > 1e-18 {
		t.Errorf("count %d sum %g, want 6 and 1.011e-6", h.GetSampleCount(), h.GetSampleSum())
	}
	wantBounds := []float64{0, 1e-9, 3e-9}
	wantCum := []uint64{1, 2, 4}
	if len(h.GetBucket()) != len(wantBounds) {
		t.Fatalf("buckets %v", h.GetBucket())
	}
	for i, b := range h.GetBucket() {
		if math.Abs(b.GetUpperBound()-wantBounds[i]) > 1e-18 || b.GetCumulativeCount() != wantCum[i] {
			t.Errorf("bucket %d: le %g count %d, want le %g count %d", i, b.GetUpperBound(), b.GetCumulativeCount(), wantBounds[i], wantCum[i])
		}
	}
}

// Scrapes run beside a busy vCPU: each sees one consistent snapshot (the
// counter and the histogram of a row agree), and the writer never waits.
func TestCollectWhileRecording(t *testing.T) {
	r := NewRegistry()
	k := r.Kind("IO:serial")
	v := r.NewVCPU(0)
	c := NewCollector(CollectorConfig{Registry: r})
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)

	var done atomic.Bool
	go func() {
		defer done.Store(true)
		for i := range 200000 {
			v.Record(k, uint64(i%5000))
			v.RecordGuest(10)
			if i%256 == 0 {
				time.Sleep(time.Microsecond)
			}
		}
	}()
	scrapes := 0
	for !done.Load() || scrapes == 0 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var count float64
		var histCount uint64
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch mf.GetName() {
				case "govmm_exits_total":
					count = m.GetCounter().GetValue()
				case "govmm_exit_handling_seconds":
					histCount = m.GetHistogram().GetSampleCount()
				}
			}
		}
		if uint64(count) != histCount {
			t.Fatalf("scrape %d: counter %v, histogram count %d", scrapes, count, histCount)
		}
		scrapes++
	}
	t.Logf("%d scrapes", scrapes)
}

// BenchmarkCollect is the cost of one scrape's worth of exit metrics: 4
// vCPUs with 6 rows each, histograms included.
func BenchmarkCollect(b *testing.B) {
	r := NewRegistry()
	for i := range 4 {
		v := r.NewVCPU(i)
		for _, n := range []string{"IO:serial", "IO:pci", "MMIO:virtio-blk", "HLT", "INTR", "SHUTDOWN"} {
			v.Record(r.Kind(n), 7000)
		}
		v.RecordGuest(1000)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(CollectorConfig{Registry: r}))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
