package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// What the block benchmark (blk_bench_test.go) reads from fio and from
// the host: fio's JSON report, a disk's /sys/block/*/stat line, a
// process's CPU time from /proc, and the per-job arithmetic on them.

// fioResult is one job of a fio report. The jobs run with
// group_reporting, so numjobs clones of a job come as one entry.
type fioResult struct {
	IOPS  float64
	MiBps float64
	// Completion latency percentiles (clat_ns), microseconds.
	P50us, P99us float64
}

// parseFio reads fio's --output-format=json report: each job by name,
// with the numbers of the direction it moved data in (the benchmark's
// jobs each read or write, never both). A job that failed or moved
// nothing is an error.
func parseFio(data []byte) (map[string]fioResult, error) {
	type direction struct {
		TotalIOs float64 `json:"total_ios"`
		IOPS     float64 `json:"iops"`
		BWBytes  float64 `json:"bw_bytes"`
		ClatNS   struct {
			Percentile map[string]float64 `json:"percentile"`
		} `json:"clat_ns"`
	}
	var report struct {
		Jobs []struct {
			Name  string    `json:"jobname"`
			Error int       `json:"error"`
			Read  direction `json:"read"`
			Write direction `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(data, &report); err != nil {
		return nil, fmt.Errorf("fio JSON: %w", err)
	}
	if len(report.Jobs) == 0 {
		return nil, fmt.Errorf("fio JSON: no jobs")
	}
	out := map[string]fioResult{}
	for _, j := range report.Jobs {
		if j.Error != 0 {
			return nil, fmt.Errorf("fio job %s: error %d", j.Name, j.Error)
		}
		d := j.Read
		if d.TotalIOs == 0 {
			d = j.Write
		}
		if d.TotalIOs == 0 {
			return nil, fmt.Errorf("fio job %s: no I/O completed", j.Name)
		}
		p50, ok50 := d.ClatNS.Percentile["50.000000"]
		p99, ok99 := d.ClatNS.Percentile["99.000000"]
		if !ok50 || !ok99 {
			return nil, fmt.Errorf("fio job %s: no 50th/99th clat percentiles", j.Name)
		}
		if _, dup := out[j.Name]; dup {
			return nil, fmt.Errorf("fio JSON: job %s twice (group_reporting off?)", j.Name)
		}
		out[j.Name] = fioResult{IOPS: d.IOPS, MiBps: d.BWBytes / (1 << 20), P50us: p50 / 1e3, P99us: p99 / 1e3}
	}
	return out, nil
}

// diskStat is the part of a /sys/block/DEV/stat line (the kernel's
// Documentation/block/stat.rst) the benchmark uses.
type diskStat struct {
	requests float64 // read + write I/Os completed
	bytes    float64 // read + write sectors, in bytes
}

func parseDiskStat(line string) (diskStat, error) {
	f := strings.Fields(line)
	if len(f) < 7 {
		return diskStat{}, fmt.Errorf("disk stat %q: want at least 7 fields", line)
	}
	var n [7]float64
	for i := range n {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return diskStat{}, fmt.Errorf("disk stat %q: field %d: %w", line, i+1, err)
		}
		n[i] = float64(v)
	}
	// Fields 1, 3, 5, 7: read I/Os, read sectors, write I/Os, write
	// sectors; a sector here is always 512 bytes.
	return diskStat{requests: n[0] + n[4], bytes: (n[2] + n[6]) * 512}, nil
}

// userHZ is the unit of the times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture's user ABI).
const userHZ = 100

// parseProcCPU returns utime+stime in seconds from a /proc/PID/stat line:
// every thread of the process, live or ended, so a VMM's vCPU threads
// (their time in the guest included) and its I/O threads.
func parseProcCPU(stat string) (float64, error) {
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start after the last ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("proc stat %q: no ')'", stat)
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the name, want 13", len(f))
	}
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	var ticks float64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc stat: utime/stime %q: %w", s, err)
		}
		ticks += float64(v)
	}
	return ticks / userHZ, nil
}

func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcCPU(string(b))
}

// fioWindow is what one fio job cost, counted over its whole run (ramp
// included): in a VM from the guest's barrier before the job's first
// request to the one after its last, on the host over fio's life.
type fioWindow struct {
	cpuSeconds float64 // the VMM process's (host: fio's) utime+stime
	disk       diskStat
	counters   map[string]float64 // KVM's exit counters over vCPUs (VMs only)
}

// windowBetween is the window from the snapshots at two barriers.
func windowBetween(begin, end fioSnapshot) fioWindow {
	w := fioWindow{
		cpuSeconds: end.cpuSeconds - begin.cpuSeconds,
		disk:       diskStat{requests: end.disk.requests - begin.disk.requests, bytes: end.disk.bytes - begin.disk.bytes},
		counters:   map[string]float64{},
	}
	for name, n := range end.counters {
		if b, ok := begin.counters[name]; ok {
			w.counters[name] = n - b
		}
	}
	return w
}

// fioSnapshot is the state at one barrier.
type fioSnapshot struct {
	cpuSeconds float64
	disk       diskStat
	counters   map[string]float64
}

// cpuPerGiB is host CPU seconds per GiB the disk moved.
func (w fioWindow) cpuPerGiB() (float64, bool) {
	if w.disk.bytes <= 0 {
		return 0, false
	}
	return w.cpuSeconds / (w.disk.bytes / (1 << 30)), true
}

// perRequest is a counter's count per disk request; false where the
// window has no such counter or no requests.
func (w fioWindow) perRequest(counter string) (float64, bool) {
	n, ok := w.counters[counter]
	if !ok || w.disk.requests <= 0 {
		return 0, false
	}
	return n / w.disk.requests, true
}

// perVirtioRequest is a request telemetry counter (ns) per request govmm
// timed; false where the window has none.
func (w fioWindow) perVirtioRequest(counter string) (float64, bool) {
	n, ok := w.counters[counter]
	if !ok || w.counters["virtio_requests"] <= 0 {
		return 0, false
	}
	return n / w.counters["virtio_requests"], true
}

func TestParseFio(t *testing.T) {
	// Real fio 3.33 output from the benchmark's guest (govmm, 2 vCPUs,
	// 2 s jobs on a busy host): every job of blkJobs, among them a QD1
	// psync randread and a QD32 libaio randwrite of two clones.
	data, err := os.ReadFile("testdata/fio-3.33.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseFio(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(blkJobs) {
		t.Fatalf("jobs %v, want the %d of blkJobs", got, len(blkJobs))
	}
	want := map[string]fioResult{
		"randread-4k-qd1":   {IOPS: 2479.041916, MiBps: 10154155.0 / (1 << 20), P50us: 224.256, P99us: 4751.36},
		"randwrite-4k-qd32": {IOPS: 1899.901381, MiBps: 7907218.0 / (1 << 20), P50us: 20054.016, P99us: 128450.56},
		"read-1m-qd8":       {IOPS: 635.036496, MiBps: 669966076.0 / (1 << 20), P50us: 7700.48, P99us: 58458.112},
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("no job %s in %v", name, got)
			continue
		}
		if g != w {
			t.Errorf("%s = %+v, want %+v", name, g, w)
		}
	}

	for _, tc := range []struct{ name, json, want string }{
		{"not JSON", `GOVMM`, "fio JSON"},
		{"no jobs", `{"jobs":[]}`, "no jobs"},
		{"failed job", `{"jobs":[{"jobname":"a","error":5}]}`, "error 5"},
		{"no I/O", `{"jobs":[{"jobname":"a","read":{"total_ios":0},"write":{"total_ios":0}}]}`, "no I/O"},
		{"no percentiles", `{"jobs":[{"jobname":"a","read":{"total_ios":3,"clat_ns":{}}}]}`, "percentiles"},
		{"twice", `{"jobs":[{"jobname":"a","read":{"total_ios":3,"clat_ns":{"percentile":{"50.000000":1,"99.000000":2}}}},{"jobname":"a","read":{"total_ios":3,"clat_ns":{"percentile":{"50.000000":1,"99.000000":2}}}}]}`, "twice"},
	} {
		if _, err := parseFio([]byte(tc.json)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one naming %q", tc.name, err, tc.want)
		}
	}
}

func TestDiskStatAndProcCPU(t *testing.T) {
	// A 6.x kernel's line: 17 fields (discard and flush included).
	d, err := parseDiskStat("    5491        0    43928     2212        7        1      120       30        0     2240     2242        0        0        0        0        2        0\n")
	if err != nil {
		t.Fatal(err)
	}
	if d != (diskStat{requests: 5498, bytes: (43928 + 120) * 512}) {
		t.Errorf("disk stat = %+v", d)
	}
	for _, bad := range []string{"", "1 2 3", "1 2 x 4 5 6 7"} {
		if _, err := parseDiskStat(bad); err == nil {
			t.Errorf("disk stat %q: no error", bad)
		}
	}

	// A command name with a space and a ')': utime 250, stime 130 ticks.
	cpu, err := parseProcCPU("4242 (qemu) sys) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 5 0 100 0 0")
	if err != nil {
		t.Fatal(err)
	}
	if cpu != 3.8 {
		t.Errorf("cpu = %v s, want 3.8", cpu)
	}
	for _, bad := range []string{"4242 qemu S 1", "4242 (qemu) S 1 2 3", "4242 (q) S 1 4242 4242 0 -1 4194560 1000 0 0 0 x 130 0"} {
		if _, err := parseProcCPU(bad); err == nil {
			t.Errorf("proc stat %q: no error", bad)
		}
	}
	if cpu, err := procCPU(os.Getpid()); err != nil || cpu < 0 {
		t.Errorf("procCPU(self) = %v, %v", cpu, err)
	}
}

func TestFioWindowArithmetic(t *testing.T) {
	begin := fioSnapshot{cpuSeconds: 10, disk: diskStat{requests: 100, bytes: 1 << 20}, counters: map[string]float64{"exits": 1000, "halt_exits": 5}}
	end := fioSnapshot{cpuSeconds: 13, disk: diskStat{requests: 4100, bytes: 1<<20 + 2<<30}, counters: map[string]float64{"exits": 9000, "io_exits": 7}}
	w := windowBetween(begin, end)
	if got, ok := w.cpuPerGiB(); !ok || got != 1.5 {
		t.Errorf("cpuPerGiB = %v, %v; want 3 s / 2 GiB = 1.5", got, ok)
	}
	if got, ok := w.perRequest("exits"); !ok || got != 2 {
		t.Errorf("exits per request = %v, %v; want 8000/4000 = 2", got, ok)
	}
	// A counter missing from either end is not a zero.
	for _, c := range []string{"halt_exits", "io_exits", "mmio_exits"} {
		if got, ok := w.perRequest(c); ok {
			t.Errorf("%s per request = %v, want none", c, got)
		}
	}
	if _, ok := (fioWindow{cpuSeconds: 1}).cpuPerGiB(); ok {
		t.Error("cpuPerGiB with no bytes moved")
	}
	if _, ok := (fioWindow{counters: map[string]float64{"exits": 5}}).perRequest("exits"); ok {
		t.Error("perRequest with no requests")
	}
}
