package vmm

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/virtio"
)

// virtioCollector exports the request telemetry of every virtio queue.
// The total latency and its phases are separate metrics, so that summing
// the phase histogram over phase gives the total and nothing counts twice.
type virtioCollector struct {
	queues func() []VirtioQueueStats

	latency, phase, size *prometheus.Desc
}

func newVirtioCollector(queues func() []VirtioQueueStats) virtioCollector {
	labels := []string{"device", "queue", "op"}
	return virtioCollector{
		queues: queues,
		latency: prometheus.NewDesc("govmm_virtio_request_seconds",
			"Latency of virtio requests, from the notification the device served to the interrupt that completed them.",
			labels, nil),
		phase: prometheus.NewDesc("govmm_virtio_request_phase_seconds",
			"Latency of virtio requests by phase: queue (notification to the device taking the request), io (the device serving it), completion (used ring update to interrupt); the phases add up to govmm_virtio_request_seconds.",
			append(labels, "phase"), nil),
		size: prometheus.NewDesc("govmm_virtio_request_bytes",
			"Data moved by virtio requests (blk: sectors read or written; net: frames without their virtio header).",
			labels, nil),
	}
}

func (c virtioCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.latency
	ch <- c.phase
	ch <- c.size
}

func (c virtioCollector) Collect(ch chan<- prometheus.Metric) {
	for _, q := range c.queues() {
		queue := strconv.Itoa(q.Queue)
		for i := range q.Requests {
			r := &q.Requests[i]
			ch <- exitstats.HistogramMetric(c.latency, &r.Total, 1e-9, q.Device, queue, r.Op)
			for p, h := range r.Phases() {
				ch <- exitstats.HistogramMetric(c.phase, h, 1e-9, q.Device, queue, r.Op, virtio.PhaseNames[p])
			}
			ch <- exitstats.HistogramMetric(c.size, &r.Bytes, 1, q.Device, queue, r.Op)
		}
	}
}
