package vmm

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/govmm/govmm/virtio"
)

// blockCollector exports every disk's I/O counters, named in the style of
// the libvirt exporter's libvirt_domain_block_stats_*_total, so that
// dashboards built for libvirt guests carry over.
type blockCollector struct {
	disks []pciDisk
}

func blockDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("govmm_block_"+name, help, []string{"device", "file"}, nil)
}

var blockMetrics = []counterMetric[virtio.BlockStats]{
	{blockDesc("read_bytes_total", "Bytes read by the guest."), func(s virtio.BlockStats) float64 { return float64(s.ReadBytes) }},
	{blockDesc("write_bytes_total", "Bytes written by the guest."), func(s virtio.BlockStats) float64 { return float64(s.WriteBytes) }},
	{blockDesc("read_requests_total", "Completed read requests."), func(s virtio.BlockStats) float64 { return float64(s.ReadOps) }},
	{blockDesc("write_requests_total", "Completed write requests."), func(s virtio.BlockStats) float64 { return float64(s.WriteOps) }},
	{blockDesc("flush_requests_total", "Completed flush requests."), func(s virtio.BlockStats) float64 { return float64(s.FlushOps) }},
	{blockDesc("read_errors_total", "Reads that failed: a host I/O error, or a request outside the disk."),
		func(s virtio.BlockStats) float64 { return float64(s.FailedReadOps + s.InvalidReadOps) }},
	{blockDesc("write_errors_total", "Writes that failed: a host I/O error, a read-only disk, or a request outside the disk."),
		func(s virtio.BlockStats) float64 { return float64(s.FailedWriteOps + s.InvalidWriteOps) }},
	{blockDesc("flush_errors_total", "Flushes that failed on the host."), func(s virtio.BlockStats) float64 { return float64(s.FailedFlushOps) }},
	{blockDesc("read_time_seconds_total", "Time spent serving completed reads."), func(s virtio.BlockStats) float64 { return float64(s.ReadTimeNs) / 1e9 }},
	{blockDesc("write_time_seconds_total", "Time spent serving completed writes."), func(s virtio.BlockStats) float64 { return float64(s.WriteTimeNs) / 1e9 }},
	{blockDesc("flush_time_seconds_total", "Time spent serving completed flushes."), func(s virtio.BlockStats) float64 { return float64(s.FlushTimeNs) / 1e9 }},
}

func (c blockCollector) Describe(ch chan<- *prometheus.Desc) { describeCounters(ch, blockMetrics) }

func (c blockCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range c.disks {
		collectCounters(ch, blockMetrics, d.blk.Stats(), d.name, d.cfg.Path)
	}
}
