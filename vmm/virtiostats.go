package vmm

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/virtio"
)

// VirtioQueueStats is one virtio queue's traffic: how notifications
// arrived, how many interrupts went out, and the request telemetry per
// kind of request (empty with exit statistics off).
type VirtioQueueStats struct {
	Device        string                `json:"device"`
	Queue         int                   `json:"queue"`
	NotifyEventFD uint64                `json:"notify_eventfd"`
	NotifyMMIO    uint64                `json:"notify_mmio"`
	Interrupts    uint64                `json:"interrupts"`
	Requests      []virtio.RequestStats `json:"requests"`
}

// VirtioQueues returns every virtio queue's counters and request
// telemetry, by device and queue. It never waits for a device.
func (v *VM) VirtioQueues() []VirtioQueueStats {
	if v.pci == nil {
		return nil
	}
	return virtioQueues(v.pci.transports)
}

func virtioQueues(transports []*virtio.Transport) []VirtioQueueStats {
	var out []VirtioQueueStats
	for _, t := range transports {
		reqs := t.RequestStats()
		for q, c := range t.Counters() {
			s := VirtioQueueStats{
				Device: t.Name(), Queue: q,
				NotifyEventFD: c.NotifyEventFD, NotifyMMIO: c.NotifyMMIO, Interrupts: c.Interrupts,
				Requests: []virtio.RequestStats{},
			}
			if q < len(reqs) {
				s.Requests = reqs[q].Ops
			}
			out = append(out, s)
		}
	}
	return out
}

// WriteRequestTable prints the request telemetry of queues after a blank
// line: per device, queue and kind of request, the count, the mean size
// and the median and 99th percentile of each phase and of the total, in
// microseconds (nothing without requests).
func WriteRequestTable(w io.Writer, queues []VirtioQueueStats) {
	seen := false
	for _, q := range queues {
		seen = seen || len(q.Requests) > 0
	}
	if !seen {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "virtio requests (us: p50/p99; queue + io + completion = total)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "device\tqueue\top\tcount\tavg bytes\t")
	for _, p := range virtio.PhaseNames {
		fmt.Fprintf(tw, "%s\t", p)
	}
	fmt.Fprintln(tw, "total\t")
	for _, q := range queues {
		for i := range q.Requests {
			r := &q.Requests[i]
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%.0f\t", q.Device, q.Queue, r.Op, r.Count(), r.Bytes.Avg())
			for _, p := range r.Phases() {
				fmt.Fprintf(tw, "%s\t", p50p99(p))
			}
			fmt.Fprintf(tw, "%s\t\n", p50p99(&r.Total))
		}
	}
	tw.Flush()
}

// p50p99 formats a latency histogram's median and 99th percentile.
func p50p99(h *exitstats.HistogramSnapshot) string {
	us := func(q float64) string { return strconv.FormatFloat(h.Quantile(q)/1e3, 'f', 1, 64) }
	return us(0.5) + "/" + us(0.99)
}
