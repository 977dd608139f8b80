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

// netMetric is one exported counter and how to read it.
type netMetric struct {
	desc  *prometheus.Desc
	value func(virtio.NetStats) uint64
}

func netDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("govmm_net_"+name, help, []string{"device", "tap"}, nil)
}

var netMetrics = []netMetric{
	{netDesc("receive_bytes_total", "Bytes of the frames delivered to the guest (without the virtio header)."),
		func(s virtio.NetStats) uint64 { return s.RxBytes }},
	{netDesc("receive_packets_total", "Frames delivered to the guest."),
		func(s virtio.NetStats) uint64 { return s.RxPackets }},
	{netDesc("receive_drops_total", "Frames from the tap the guest did not get: no room in its receive buffers, the device down, or a header it cannot take."),
		func(s virtio.NetStats) uint64 { return s.RxDropped }},
	{netDesc("transmit_bytes_total", "Bytes of the frames the guest sent to the tap (without the virtio header)."),
		func(s virtio.NetStats) uint64 { return s.TxBytes }},
	{netDesc("transmit_packets_total", "Frames the guest sent to the tap."),
		func(s virtio.NetStats) uint64 { return s.TxPackets }},
	{netDesc("transmit_drops_total", "Well-formed frames from the guest the tap refused."),
		func(s virtio.NetStats) uint64 { return s.TxDropped - s.TxInvalid }},
	{netDesc("transmit_errors_total", "Frames from the guest dropped as malformed (length, virtio header)."),
		func(s virtio.NetStats) uint64 { return s.TxInvalid }},
}

func (c netCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range netMetrics {
		ch <- m.desc
	}
}

func (c netCollector) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.nets {
		s := n.net.Stats()
		for _, m := range netMetrics {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value(s)), n.name, n.tap)
		}
	}
}
