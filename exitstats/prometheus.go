package exitstats

import (
	"math"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/govmm/govmm/kvm"
)

// metricPrefix starts every metric name of govmm.
const metricPrefix = "govmm_"

// VMInfo describes a VM as a whole, for the VM gauges.
type VMInfo struct {
	VCPUs       int
	MemoryBytes uint64
	// State is the current state; States lists every state the VM can be
	// in, so that each has a series (1 for the current one, 0 for the rest)
	// and a query for a state the VM is not in finds 0 rather than nothing.
	State  string
	States []string
	// Resets counts machine resets (system_reset, guest reboots) so far.
	Resets uint64
}

// CollectorConfig says what a Collector exports. Every part may be nil.
type CollectorConfig struct {
	// Registry holds the user-space exit statistics.
	Registry *Registry
	// Kernel holds KVM's own statistics (NewKernelStats).
	Kernel *KernelStats
	// VMInfo is called once per scrape for the VM gauges. It runs on the
	// scraping goroutine and must not wait for a vCPU.
	VMInfo func() VMInfo
}

// Collector exports exit statistics, KVM's in-kernel statistics and a few
// VM gauges to Prometheus. It reads only snapshots: Registry.Snapshot and
// the stats fds never wait for a vCPU thread, so a scrape cannot show up as
// exit latency.
type Collector struct {
	cfg CollectorConfig

	exits, handling, guest, guestRun *prometheus.Desc
	vcpus, memory, state, resets     *prometheus.Desc
	kernelErr                        *prometheus.Desc

	// kernelVM and kernelVCPU map a KVM stat name to its metric, for the
	// VM fd and the vCPU fds. Built once: descriptors never change.
	kernelVM, kernelVCPU map[string]*kernelMetric
}

// kernelMetric is how one KVM statistic is exported.
type kernelMetric struct {
	name      string // the metric's name, which Desc does not give back
	desc      *prometheus.Desc
	stat      kvm.StatDesc
	valueType prometheus.ValueType // for counters and gauges
	// sumStat names the cumulative statistic holding the sum of what a
	// histogram counts ("" if there is none); see pairHistogramSums.
	sumStat string
}

// NewCollector returns a collector; register it with a prometheus.Registry.
func NewCollector(cfg CollectorConfig) *Collector {
	c := &Collector{
		cfg: cfg,
		exits: prometheus.NewDesc(metricPrefix+"exits_total",
			"VM exits handled in user space, by vCPU and exit reason (with the device for I/O and MMIO).",
			[]string{"vcpu", "reason"}, nil),
		handling: prometheus.NewDesc(metricPrefix+"exit_handling_seconds",
			"Time user space spent handling one VM exit, from the return of KVM_RUN to the next entry.",
			[]string{"vcpu", "reason"}, nil),
		guest: prometheus.NewDesc(metricPrefix+"guest_seconds_total",
			"Time the vCPU spent inside KVM_RUN (in the guest, or in the kernel on its behalf).",
			[]string{"vcpu"}, nil),
		guestRun: prometheus.NewDesc(metricPrefix+"guest_run_seconds",
			"Time of one KVM_RUN call, from entry to the exit that returned to user space.",
			[]string{"vcpu"}, nil),
		vcpus:     prometheus.NewDesc(metricPrefix+"vcpus", "Number of vCPUs of the VM.", nil, nil),
		memory:    prometheus.NewDesc(metricPrefix+"memory_bytes", "Guest RAM size.", nil, nil),
		resets:    prometheus.NewDesc(metricPrefix+"vm_resets_total", "Machine resets (system_reset, guest reboots) since the VM started.", nil, nil),
		state:     prometheus.NewDesc(metricPrefix+"vm_state", "1 for the state the VM is in, 0 for the others.", []string{"state"}, nil),
		kernelErr: prometheus.NewDesc(metricPrefix+"kvm_stats_read", "Reading KVM's binary stats fds.", nil, nil),
	}
	vmDescs, vcpuDescs := cfg.Kernel.descriptors()
	c.kernelVCPU = kernelMetrics(vcpuDescs, []string{"vcpu"}, nil)
	c.kernelVM = kernelMetrics(vmDescs, nil, c.kernelVCPU)
	return c
}

// Describe sends every descriptor Collect can use: the set is fixed once
// the stats fds are open, so the registry can check it for clashes.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	if c.cfg.Registry != nil {
		for _, d := range []*prometheus.Desc{c.exits, c.handling, c.guest, c.guestRun} {
			ch <- d
		}
	}
	if c.cfg.VMInfo != nil {
		ch <- c.vcpus
		ch <- c.memory
		ch <- c.state
		ch <- c.resets
	}
	if c.cfg.Kernel != nil {
		ch <- c.kernelErr
		for _, m := range c.kernelVCPU {
			ch <- m.desc
		}
		for _, m := range c.kernelVM {
			ch <- m.desc
		}
	}
}

// Collect sends the current values.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.cfg.Registry != nil {
		c.collectExits(ch)
	}
	if c.cfg.VMInfo != nil {
		c.collectVM(ch)
	}
	if c.cfg.Kernel != nil {
		c.collectKernel(ch)
	}
}

func (c *Collector) collectExits(ch chan<- prometheus.Metric) {
	for _, v := range c.cfg.Registry.Snapshot().VCPUs {
		id := strconv.Itoa(v.ID)
		for _, r := range v.Rows {
			ch <- constMetric(c.exits, prometheus.CounterValue, float64(r.Count), id, r.Name)
			ch <- exitHistogram(c.handling, &r.Stats, id, r.Name)
		}
		// The run in progress too: charged only at its exit, a vCPU
		// halted in the kernel for seconds made this counter jump.
		ch <- constMetric(c.guest, prometheus.CounterValue, nsToSeconds(addSat(v.Guest.Sum, v.InGuest)), id)
		ch <- exitHistogram(c.guestRun, &v.Guest, id)
	}
}

// exitHistogram turns a row's histogram into a Prometheus histogram, its
// buckets summed into the coarser Prometheus ones: those bounds are
// histogram bounds, so the counts agree with the percentiles.
func exitHistogram(desc *prometheus.Desc, s *Stats, labels ...string) prometheus.Metric {
	cumulative := make(map[float64]uint64, NumBuckets-1)
	var n uint64
	for i, count := range s.Hist.Buckets() {
		n = addSat(n, count)
		if bound, ok := BucketUpperBound(i); ok {
			cumulative[nsToSeconds(bound)] = n
		}
	}
	// The count comes from the buckets rather than s.Count so that the
	// +Inf bucket can never be below a finite one.
	return constHistogram(desc, n, nsToSeconds(s.Sum), cumulative, labels...)
}

func nsToSeconds(ns uint64) float64 { return float64(ns) / 1e9 }

func (c *Collector) collectVM(ch chan<- prometheus.Metric) {
	info := c.cfg.VMInfo()
	ch <- constMetric(c.vcpus, prometheus.GaugeValue, float64(info.VCPUs))
	ch <- constMetric(c.memory, prometheus.GaugeValue, float64(info.MemoryBytes))
	ch <- constMetric(c.resets, prometheus.CounterValue, float64(info.Resets))
	sent := false
	for _, s := range info.States {
		v := 0.0
		if s == info.State {
			v, sent = 1, true
		}
		ch <- constMetric(c.state, prometheus.GaugeValue, v, s)
	}
	if !sent && info.State != "" {
		ch <- constMetric(c.state, prometheus.GaugeValue, 1, info.State)
	}
}

func (c *Collector) collectKernel(ch chan<- prometheus.Metric) {
	s, err := c.cfg.Kernel.Snapshot()
	if err != nil {
		// An invalid metric fails this part of the scrape visibly (the
		// handler logs it) instead of exporting zeros that look real.
		ch <- prometheus.NewInvalidMetric(c.kernelErr, err)
		return
	}
	sendKernel(ch, c.kernelVM, s.VM)
	for _, v := range s.VCPUs {
		sendKernel(ch, c.kernelVCPU, v.Stats, strconv.Itoa(v.ID))
	}
}

// sendKernel sends the metrics of one stats fd's reading.
func sendKernel(ch chan<- prometheus.Metric, metrics map[string]*kernelMetric, stats []KernelStat, labels ...string) {
	byName := make(map[string]KernelStat, len(stats))
	for _, st := range stats {
		byName[st.Name] = st
	}
	for _, st := range stats {
		m, ok := metrics[st.Name]
		if !ok || m.stat.Type != st.Type || len(st.Values) == 0 {
			continue // not described at start: a vCPU fd unlike the others
		}
		scale := st.Scale()
		if !st.IsHistogram() {
			ch <- constMetric(m.desc, m.valueType, float64(st.Value())*scale, labels...)
			continue
		}
		sum := math.NaN() // KVM keeps no sum with a histogram
		if sumStat, ok := byName[m.sumStat]; ok {
			sum = float64(sumStat.Value()) * sumStat.Scale()
		}
		cumulative := make(map[float64]uint64, len(st.Values))
		var n uint64
		for i, count := range st.Values {
			n = addSat(n, count)
			if bound, ok := st.BucketUpperBound(i); ok {
				cumulative[float64(bound)*scale] = n
			}
		}
		ch <- constHistogram(m.desc, n, sum, cumulative, labels...)
	}
}

// kernelMetrics decides the metric of each KVM statistic: names in base
// units following Prometheus conventions ("halt_wait_ns", cumulative, unit
// seconds x 10^-9 becomes govmm_kvm_halt_wait_seconds_total), counters for
// cumulative stats, gauges for instant values and peaks, histograms for
// histograms. A name already taken in other (the vCPU metrics, when naming
// VM-wide ones) gets "vm_" after the prefix, since the same metric cannot
// have a vcpu label in some series and none in others.
func kernelMetrics(descs []kvm.StatDesc, labels []string, other map[string]*kernelMetric) map[string]*kernelMetric {
	byStat := make(map[string]*kernelMetric, len(descs))
	taken := map[string]bool{}
	for _, m := range other {
		taken[m.name] = true
	}
	scope := "vCPU"
	if labels == nil {
		scope = "VM"
	}
	for _, d := range descs {
		if _, dup := byStat[d.Name]; dup {
			continue
		}
		name := kernelMetricName(d, d.Name)
		if taken[name] && other != nil {
			name = kernelMetricName(d, "vm_"+d.Name)
		}
		if taken[name] {
			// Two stats that differ only in a unit suffix (wait_ns and
			// wait_us): keep the second, its suffix in the name, rather
			// than drop it.
			name = kernelMetricName(d, d.Name+"_"+d.Unit.String())
		}
		if taken[name] {
			continue // a third spelling of one name; never seen in a kernel
		}
		taken[name] = true
		help := "KVM " + scope + " statistic " + strconv.Quote(d.Name) + " (" + d.Type.String() + unitHelp(d) + "), from the binary stats fd."
		m := &kernelMetric{name: name, desc: prometheus.NewDesc(name, help, labels, nil), stat: d, valueType: prometheus.GaugeValue}
		if d.Type == kvm.StatCumulative {
			m.valueType = prometheus.CounterValue
		}
		byStat[d.Name] = m
	}
	pairHistogramSums(byStat)
	return byStat
}

// pairHistogramSums finds, for each histogram, the cumulative statistic
// that adds up what it counts: KVM pairs them by name (halt_wait_hist with
// halt_wait_ns), which after conversion means the counter is the
// histogram's name plus "_total", in the same unit and scale.
func pairHistogramSums(byStat map[string]*kernelMetric) {
	counters := map[string]*kernelMetric{}
	for _, m := range byStat {
		if m.stat.Type == kvm.StatCumulative {
			counters[m.name] = m
		}
	}
	for _, m := range byStat {
		if !m.stat.IsHistogram() {
			continue
		}
		if sum, ok := counters[m.name+"_total"]; ok && sum.stat.Unit == m.stat.Unit && sum.stat.Scale() == m.stat.Scale() {
			m.sumStat = sum.stat.Name
		}
	}
}

// kernelMetricName converts a stat name to a metric name.
func kernelMetricName(d kvm.StatDesc, statName string) string {
	name := sanitizeMetricName(statName)
	if d.IsHistogram() {
		name = trimAnySuffix(name, "_hist", "_histogram")
	}
	switch d.Unit {
	case kvm.UnitSeconds:
		name = trimAnySuffix(name, "_ns", "_nsec", "_nanoseconds", "_us", "_usec", "_microseconds",
			"_ms", "_msec", "_milliseconds", "_s", "_sec", "_secs", "_seconds") + "_seconds"
	case kvm.UnitBytes:
		name = trimAnySuffix(name, "_b", "_bytes", "_kb", "_kib", "_mb", "_mib", "_gb", "_gib") + "_bytes"
	case kvm.UnitCycles:
		name = trimAnySuffix(name, "_cycles") + "_cycles"
	}
	return metricPrefix + "kvm_" + trimAnySuffix(name, "_total") + typeSuffix(d)
}

// typeSuffix is "_total" for counters, which only counters may carry.
func typeSuffix(d kvm.StatDesc) string {
	if d.Type == kvm.StatCumulative {
		return "_total"
	}
	return ""
}

// sanitizeMetricName lowers a stat name to the snake_case characters a
// metric name may hold.
func sanitizeMetricName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '_'
	}, s)
}

func trimAnySuffix(s string, suffixes ...string) string {
	for _, suf := range suffixes {
		if strings.HasSuffix(s, suf) && len(s) > len(suf) {
			return strings.TrimSuffix(s, suf)
		}
	}
	return s
}

// unitHelp describes a stat's unit, and the scale that took its raw
// values to that unit, for the help text ("" for a plain count).
func unitHelp(d kvm.StatDesc) string {
	if d.Unit == kvm.UnitNone && d.Exponent == 0 {
		return ""
	}
	if d.Exponent == 0 {
		return ", " + d.Unit.String()
	}
	base := "10"
	if d.Pow2 {
		base = "2"
	}
	return ", " + d.Unit.String() + ", raw values x " + base + "^" + strconv.Itoa(int(d.Exponent))
}

// constMetric and constHistogram fail only when the labels do not match the
// descriptor, a bug in this file; they hand the error to the registry,
// which fails that metric, rather than panic in a running VMM.
func constMetric(desc *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(desc, t, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}

func constHistogram(desc *prometheus.Desc, count uint64, sum float64, buckets map[float64]uint64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstHistogram(desc, count, sum, buckets, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}

// HistogramMetric turns a Histogram's snapshot into a Prometheus
// histogram, its values multiplied by scale (1e-9 from ns to seconds).
// Its buckets are the snapshot's powers of two (2^2 to 2^40), a quarter
// of the snapshot's own: enough for histogram_quantile, and a bounded
// number of series per histogram.
func HistogramMetric(desc *prometheus.Desc, s *HistogramSnapshot, scale float64, labels ...string) prometheus.Metric {
	cumulative := make(map[float64]uint64, HistogramBuckets/histSub)
	var n uint64
	for i, count := range s.Buckets {
		n = addSat(n, count)
		if bound, ok := HistogramUpperBound(i); ok && i%histSub == histSub-1 {
			cumulative[float64(bound)*scale] = n
		}
	}
	return constHistogram(desc, n, float64(s.Sum)*scale, cumulative, labels...)
}
