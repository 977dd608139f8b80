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

// blockMetric is one exported counter and how to read it from a disk's
// counters.
type blockMetric struct {
	desc  *prometheus.Desc
	value func(virtio.BlockStats) uint64
}

func blockDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("govmm_block_"+name, help, []string{"device", "file"}, nil)
}

var blockMetrics = []blockMetric{
	{blockDesc("read_bytes_total", "Bytes read by the guest."), func(s virtio.BlockStats) uint64 { return s.ReadBytes }},
	{blockDesc("write_bytes_total", "Bytes written by the guest."), func(s virtio.BlockStats) uint64 { return s.WriteBytes }},
	{blockDesc("read_requests_total", "Completed read requests."), func(s virtio.BlockStats) uint64 { return s.ReadOps }},
	{blockDesc("write_requests_total", "Completed write requests."), func(s virtio.BlockStats) uint64 { return s.WriteOps }},
	{blockDesc("flush_requests_total", "Completed flush requests."), func(s virtio.BlockStats) uint64 { return s.FlushOps }},
	{blockDesc("read_errors_total", "Reads that failed: a host I/O error, or a request outside the disk."),
		func(s virtio.BlockStats) uint64 { return s.FailedReadOps + s.InvalidReadOps }},
	{blockDesc("write_errors_total", "Writes that failed: a host I/O error, a read-only disk, or a request outside the disk."),
		func(s virtio.BlockStats) uint64 { return s.FailedWriteOps + s.InvalidWriteOps }},
	{blockDesc("flush_errors_total", "Flushes that failed on the host."), func(s virtio.BlockStats) uint64 { return s.FailedFlushOps }},
}

// blockTimeMetrics are in seconds, from nanosecond counters.
var blockTimeMetrics = []blockMetric{
	{blockDesc("read_time_seconds_total", "Time spent serving completed reads."), func(s virtio.BlockStats) uint64 { return s.ReadTimeNs }},
	{blockDesc("write_time_seconds_total", "Time spent serving completed writes."), func(s virtio.BlockStats) uint64 { return s.WriteTimeNs }},
	{blockDesc("flush_time_seconds_total", "Time spent serving completed flushes."), func(s virtio.BlockStats) uint64 { return s.FlushTimeNs }},
}

func (c blockCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range append(blockMetrics, blockTimeMetrics...) {
		ch <- m.desc
	}
}

func (c blockCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range c.disks {
		s := d.blk.Stats()
		for _, m := range blockMetrics {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value(s)), d.name, d.cfg.Path)
		}
		for _, m := range blockTimeMetrics {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value(s))/1e9, d.name, d.cfg.Path)
		}
	}
}
