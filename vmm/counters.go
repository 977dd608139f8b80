package vmm

import "github.com/prometheus/client_golang/prometheus"

// counterMetric is one exported counter of a device and how to read it
// from the device's statistics S.
type counterMetric[S any] struct {
	desc  *prometheus.Desc
	value func(S) float64
}

func describeCounters[S any](ch chan<- *prometheus.Desc, ms []counterMetric[S]) {
	for _, m := range ms {
		ch <- m.desc
	}
}

// collectCounters sends every counter of ms read from s, with the
// device's label values.
func collectCounters[S any](ch chan<- prometheus.Metric, ms []counterMetric[S], s S, labels ...string) {
	for _, m := range ms {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, m.value(s), labels...)
	}
}
