package vmm

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/govmm/govmm/guestlog"
)

// warningsDesc is govmm_device_warnings_total: what the rate-limited
// device logs saw, counted whether or not the line was logged, so the
// metric keeps going where the log goes quiet.
var warningsDesc = prometheus.NewDesc("govmm_device_warnings_total",
	"Events a device warned about, logged or suppressed: bad guest input (bad_request, bar_overlap, unclaimed_read, ...) or a host error while serving the guest (host_io).",
	[]string{"device", "kind"}, nil)

// warningsCollector exports a VM's guestlog counts.
type warningsCollector struct{ set *guestlog.Set }

func (c warningsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- warningsDesc }

func (c warningsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.set.Counts() {
		ch <- prometheus.MustNewConstMetric(warningsDesc, prometheus.CounterValue, float64(n.N), n.Device, n.Kind)
	}
}

// DeviceWarnings returns how many events of each kind each device warned
// about (see govmm_device_warnings_total).
func (v *VM) DeviceWarnings() []guestlog.Count { return v.guestLog.Counts() }
