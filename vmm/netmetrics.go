package vmm

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/govmm/govmm/virtio"
)

// netCollector exports each virtio-net device's interface counters, named
// as the libvirt exporter names a domain's interface statistics
// (libvirt_domain_interface_stats_receive_bytes_total, ...), labelled by
// the device and the host tap it is wired to.
type netCollector struct {
	nets []pciNet
}

func netDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("govmm_net_"+name, help, []string{"device", "tap"}, nil)
}

var netMetrics = []counterMetric[virtio.NetStats]{
	{netDesc("receive_bytes_total", "Bytes of the frames delivered to the guest (without the virtio header)."),
		func(s virtio.NetStats) float64 { return float64(s.RxBytes) }},
	{netDesc("receive_packets_total", "Frames delivered to the guest."),
		func(s virtio.NetStats) float64 { return float64(s.RxPackets) }},
	{netDesc("receive_drops_total", "Frames from the tap the guest did not get: no room in its receive buffers, the device down, or a header it cannot take."),
		func(s virtio.NetStats) float64 { return float64(s.RxDropped) }},
	{netDesc("transmit_bytes_total", "Bytes of the frames the guest sent to the tap (without the virtio header)."),
		func(s virtio.NetStats) float64 { return float64(s.TxBytes) }},
	{netDesc("transmit_packets_total", "Frames the guest sent to the tap."),
		func(s virtio.NetStats) float64 { return float64(s.TxPackets) }},
	{netDesc("transmit_drops_total", "Well-formed frames from the guest the tap refused, or had no room for within a second."),
		func(s virtio.NetStats) float64 { return float64(s.TxDropped - s.TxInvalid) }},
	{netDesc("transmit_errors_total", "Frames from the guest dropped as its fault: malformed (length, virtio header, more buffers than IOV_MAX) or on a queue pair it has not enabled."),
		func(s virtio.NetStats) float64 { return float64(s.TxInvalid) }},
}

func (c netCollector) Describe(ch chan<- *prometheus.Desc) { describeCounters(ch, netMetrics) }

func (c netCollector) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.nets {
		collectCounters(ch, netMetrics, n.net.Stats(), n.name, n.tap)
	}
}
