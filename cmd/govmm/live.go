package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vmm"
)

// sample is one reading of a running VM's exit table.
type sample struct {
	at    time.Time
	table vmm.ExitTable
}

func readSample(mon qmp.Monitor) (sample, error) {
	at := time.Now()
	// Only the tables the live view shows: the virtio queues' telemetry,
	// 6 KiB of histograms a request type in memory, is not decoded.
	var t struct {
		User   exitstats.Snapshot        `json:"user"`
		Kernel *exitstats.KernelSnapshot `json:"kernel"`
	}
	err := runQMP(mon, "query-exit-stats", nil, &t)
	return sample{at: at, table: vmm.ExitTable{User: t.User, Kernel: t.Kernel}}, err
}

// liveRow is one line of the live view.
type liveRow struct {
	name  string
	rate  float64 // per second
	share float64 // percent of wall time (summed over vCPUs)
	avgUs float64 // mean handling time in this interval
	// p50 and p99 are the interval's percentiles, "-" where unknown.
	p50, p99 string
	sites    []liveSite
}

// liveSite is one of a row's top guest RIPs in the interval.
type liveSite struct {
	where string  // function+0xoff, or the address
	share float64 // of the row's exits in the interval, 0 to 1
	exact bool    // share is exact, not an upper bound
}

// liveSites returns the row's top call sites in the interval between two
// readings of its top RIPs. The counts are bounds (exitstats.RIPCount),
// so a RIP's exits in between are at most its upper bound now minus its
// lower bound before. That is exact when its count now is exact and it
// was not merely left out of a full list before.
func liveSites(prev, cur []exitstats.RIPCount, exits float64) []liveSite {
	before := map[uint64]uint64{}
	for _, r := range prev {
		before[r.RIP] = r.Count - r.Overcount
	}
	var sites []liveSite
	for _, r := range cur {
		lower, held := before[r.RIP]
		n := float64(r.Count) - float64(lower)
		if n <= 0 {
			continue
		}
		exact := r.Exact() && (held || len(prev) < exitstats.TopRIPs)
		sites = append(sites, liveSite{where: r.Where(), share: n / exits, exact: exact})
	}
	sort.SliceStable(sites, func(i, j int) bool { return sites[i].share > sites[j].share })
	return sites[:min(len(sites), liveSitesShown)]
}

// liveSitesShown is how many call sites the live view shows per row.
const liveSitesShown = 3

// userRates derives per-second rates and time shares from two readings of
// the user-space table (all vCPUs together), TIMEINGUEST included.
func userRates(a, b sample) []liveRow {
	dt := b.at.Sub(a.at).Seconds()
	ta, tb := a.table.User.Total(), b.table.User.Total()
	var rows []liveRow
	add := func(name string, sa, sb exitstats.Stats, ra, rb []exitstats.RIPCount) {
		n := float64(sb.Count) - float64(sa.Count)
		if n <= 0 {
			return
		}
		ns := float64(sb.Sum) - float64(sa.Sum)
		rows = append(rows, liveRow{name: name, rate: n / dt, share: ns / (dt * 1e9) * 100, avgUs: ns / n / 1e3,
			p50: intervalPercentile(&sa, &sb, 50), p99: intervalPercentile(&sa, &sb, 99),
			sites: liveSites(ra, rb, n)})
	}
	prevRIPs := map[string][]exitstats.RIPCount{}
	for _, r := range ta.Rows {
		prevRIPs[r.Name] = r.TopRIPs
	}
	for _, r := range tb.Rows {
		prev, _ := ta.Row(r.Name)
		add(r.Name, prev, r.Stats, prevRIPs[r.Name], r.TopRIPs)
	}
	if g, ok := guestRate(ta, tb, dt); ok {
		rows = append(rows, g)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].share > rows[j].share })
	return rows
}

// guestRate is the TIMEINGUEST row between two readings, the runs in
// progress included (InGuest): a vCPU halted in the kernel for seconds
// showed no guest time, then all of it in one interval (800% of a 2-vCPU
// VM; found by an audit). Its rate, average and percentiles are of the
// runs that ended in the interval.
func guestRate(ta, tb exitstats.VCPUSnapshot, dt float64) (liveRow, bool) {
	ns := float64(tb.Guest.Sum+tb.InGuest) - float64(ta.Guest.Sum+ta.InGuest)
	if ns <= 0 {
		return liveRow{}, false
	}
	n := float64(tb.Guest.Count) - float64(ta.Guest.Count)
	r := liveRow{name: exitstats.GuestName, share: ns / (dt * 1e9) * 100, p50: "-", p99: "-"}
	if n > 0 {
		r.rate, r.avgUs = n/dt, (float64(tb.Guest.Sum)-float64(ta.Guest.Sum))/n/1e3
		r.p50, r.p99 = intervalPercentile(&ta.Guest, &tb.Guest, 50), intervalPercentile(&ta.Guest, &tb.Guest, 99)
	}
	return r, true
}

// intervalPercentile formats the p-th percentile of what a row counted
// between two readings.
func intervalPercentile(a, b *exitstats.Stats, p float64) string {
	ns, ok := exitstats.IntervalPercentile(a, b, p)
	if !ok {
		return "-"
	}
	return exitstats.ApproxMicros(ns)
}

// kernelRates derives per-second rates of KVM's cumulative counters,
// summed over vCPUs; counters in seconds become a share of wall time.
func kernelRates(a, b sample) []liveRow {
	if a.table.Kernel == nil || b.table.Kernel == nil {
		return nil
	}
	dt := b.at.Sub(a.at).Seconds()
	prev := map[string]float64{}
	for _, v := range a.table.Kernel.VCPUs {
		for _, s := range v.Stats {
			if s.Type == kvm.StatCumulative {
				prev[s.Name] += float64(s.Value())
			}
		}
	}
	cur := map[string]float64{}
	scale := map[string]float64{}
	for _, v := range b.table.Kernel.VCPUs {
		for _, s := range v.Stats {
			if s.Type == kvm.StatCumulative {
				cur[s.Name] += float64(s.Value())
				scale[s.Name] = s.Scale()
				if s.Unit != kvm.UnitSeconds {
					scale[s.Name] = 0
				}
			}
		}
	}
	var rows []liveRow
	for name, v := range cur {
		d := v - prev[name]
		if d <= 0 {
			continue
		}
		r := liveRow{name: name, rate: d / dt}
		if scale[name] > 0 {
			r.share, r.rate = d*scale[name]/dt*100, 0
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].share != rows[j].share {
			return rows[i].share > rows[j].share
		}
		return rows[i].rate > rows[j].rate
	})
	return rows
}

// writeLive prints one frame of the live view.
func writeLive(w io.Writer, title string, a, b sample) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s  (%.1f s interval)\n\n", title, b.at.Sub(a.at).Seconds())
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "user-space exit\texits/s\tavg(us)\tp50(us)\tp99(us)\t%%time\t\n")
	user := userRates(a, b)
	for _, r := range user {
		fmt.Fprintf(tw, "%s\t%.0f\t%.3f\t%s\t%s\t%.2f\t\n", r.name, r.rate, r.avgUs, r.p50, r.p99, r.share)
	}
	if len(user) == 0 {
		fmt.Fprintf(tw, "(none: every exit stayed in KVM)\t\t\t\t\t\t\n")
	}
	tw.Flush()
	// The header, then each row followed by its top call sites (outside
	// the aligned columns, which they would stretch).
	for i, line := range strings.SplitAfter(table.String(), "\n") {
		sb.WriteString(line)
		if r := i - 1; r >= 0 && r < len(user) {
			for _, s := range user[r].sites {
				sb.WriteString(exitstats.SiteLine(s.share, s.exact, s.where))
			}
		}
	}
	if k := kernelRates(a, b); len(k) > 0 {
		sb.WriteString("\n")
		tw = tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "in-kernel (KVM stats)\tper s\t%%time\t\n")
		for _, r := range k {
			rate, share := fmt.Sprintf("%.0f", r.rate), ""
			if r.share > 0 {
				rate, share = "", fmt.Sprintf("%.2f", r.share)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t\n", r.name, rate, share)
		}
		tw.Flush()
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

// liveView polls a running govmm over QMP and redraws every interval;
// with once it prints a single frame after one interval.
func liveView(w io.Writer, path string, interval time.Duration, once bool) error {
	c, err := dialStat(path, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Disconnect()
	prev, err := readSample(c)
	if err != nil {
		return err
	}
	for {
		time.Sleep(interval)
		cur, err := readSample(c)
		if err != nil {
			return err
		}
		if !once {
			io.WriteString(w, "\x1b[H\x1b[2J") // home and clear, as kvm_stat
		}
		if err := writeLive(w, "govmm stat "+path, prev, cur); err != nil {
			return err
		}
		if once {
			return nil
		}
		prev = cur
	}
}
