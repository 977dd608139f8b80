package vmm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// TestVirtioRequestTelemetry boots Linux on a disk that it reads, writes
// and flushes, and checks the request telemetry against the disk's own
// counters (query-blockstats) in every form govmm gives it: the data,
// the JSON of query-exit-stats and --exit-stats-json, the table printed
// at shutdown and /metrics, which is scraped all along while the guest
// works (run with -race too).
func TestVirtioRequestTelemetry(t *testing.T) {
	img := makeDisk(t, map[string]string{"run.sh": blkScript, "in.txt": "hello from the host\n"})
	// One request queue, whose telemetry then covers every request the
	// disk counts (by default a disk has a queue per vCPU).
	vm, con := newDiskVM(t, img, func(c *Config) { c.Disks[0].Queues = 1 })
	metricsURL := serveMetrics(t, vm)
	stop := make(chan struct{})
	scraped := make(chan error, 1)
	go func() {
		var err error
		for {
			select {
			case <-stop:
				scraped <- err
				return
			default:
			}
			resp, e := http.Get(metricsURL)
			if e == nil {
				_, e = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			err = errors.Join(err, e)
		}
	}()
	vm, out, console := runToEnd(t, vm, con)
	close(stop)
	if err := <-scraped; err != nil {
		t.Errorf("scrapes while the guest ran: %v", err)
	}
	if out.Err != nil || !strings.Contains(console, "GOVMM-DISK rc=0") {
		t.Fatalf("guest ended %v (%v); console:\n%s", out.Reason, out.Err, console)
	}
	blocks := (&control{vm: vm}).Blocks()
	if len(blocks) != 1 {
		t.Fatalf("%d disks", len(blocks))
	}
	bs := blocks[0].Stats
	want := map[string]struct{ count, bytes uint64 }{
		"read":  {bs.ReadOps, bs.ReadBytes},
		"write": {bs.WriteOps, bs.WriteBytes},
		"flush": {bs.FlushOps, 0},
	}
	if bs.ReadOps == 0 || bs.WriteOps == 0 || bs.FlushOps == 0 || bs.WriteBytes < 4<<20 {
		t.Fatalf("the guest did not read, write and flush: %+v", bs)
	}
	if bs.FailedReadOps+bs.FailedWriteOps+bs.FailedFlushOps+bs.InvalidReadOps+bs.InvalidWriteOps != 0 {
		t.Fatalf("failed requests, the counts cannot match: %+v", bs)
	}

	// check compares one queue's telemetry, however it was read, with
	// the disk's counters.
	check := func(form string, qs []VirtioQueueStats) {
		t.Helper()
		var blk *VirtioQueueStats
		for i := range qs {
			if qs[i].Device == "virtio-blk" && qs[i].Queue == 0 {
				blk = &qs[i]
			}
		}
		if blk == nil {
			t.Fatalf("%s: no virtio-blk queue 0 in %+v", form, qs)
		}
		seen := map[string]bool{}
		var requests uint64
		for i := range blk.Requests {
			r := &blk.Requests[i]
			seen[r.Op] = true
			requests += r.Count()
			if sum := r.Queue.Sum + r.IO.Sum + r.Completion.Sum; sum != r.Total.Sum || r.Total.Sum == 0 {
				t.Errorf("%s: %s phases add up to %d ns, total %d ns", form, r.Op, sum, r.Total.Sum)
			}
			if w, ok := want[r.Op]; ok && (r.Count() != w.count || r.Bytes.Sum != w.bytes) {
				t.Errorf("%s: %s: %d requests of %d bytes, query-blockstats says %d of %d",
					form, r.Op, r.Count(), r.Bytes.Sum, w.count, w.bytes)
			}
		}
		for op := range want {
			if !seen[op] {
				t.Errorf("%s: no %s requests", form, op)
			}
		}
		// Every request ends with an interrupt, or with the driver
		// wanting none: never more interrupts than requests.
		if blk.Interrupts == 0 || blk.Interrupts > requests {
			t.Errorf("%s: %d interrupts for %d requests", form, blk.Interrupts, requests)
		}
	}
	check("VirtioQueues", vm.VirtioQueues())

	// query-exit-stats and --exit-stats-json: the ExitTable's JSON.
	b, err := json.Marshal(vm.ExitTable())
	if err != nil {
		t.Fatal(err)
	}
	var saved struct {
		VirtioQueues []VirtioQueueStats `json:"virtio_queues"`
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		t.Fatal(err)
	}
	check("JSON", saved.VirtioQueues)
	if !bytes.Contains(b, []byte(`"p99":`)) || !bytes.Contains(b, []byte(`"io_ns":`)) {
		t.Errorf("JSON lacks quantiles or phases: %.2000s", b)
	}

	// The table printed at shutdown.
	var tbl strings.Builder
	WriteRequestTable(&tbl, vm.VirtioQueues())
	for op, w := range want {
		row := regexp.MustCompile(`(?m)^\s*virtio-blk\s+0\s+` + op + `\s+(\d+)\s+\d+(\s+[0-9.]+/[0-9.]+){4}\s*$`)
		m := row.FindStringSubmatch(tbl.String())
		if m == nil || m[1] != strconv.FormatUint(w.count, 10) {
			t.Errorf("table: %s row %q, want count %d:\n%s", op, m, w.count, tbl.String())
		}
	}

	// /metrics.
	body := scrape(t, metricsURL)
	families := parseExposition(t, body)
	for op, w := range want {
		labels := map[string]string{"device": "virtio-blk", "queue": "0", "op": op}
		if n, ok := sampleValue(t, families, "govmm_virtio_request_seconds", labels); !ok || uint64(n) != w.count {
			t.Errorf("metrics: %s: %v requests (found %v), want %d", op, n, ok, w.count)
		}
		if n, ok := sampleValue(t, families, "govmm_virtio_request_bytes", labels); !ok || uint64(n) != w.count {
			t.Errorf("metrics: %s: %v sizes (found %v), want %d", op, n, ok, w.count)
		}
		var phases, total float64
		for _, m := range families["govmm_virtio_request_phase_seconds"].GetMetric() {
			if labelsMatch(m.GetLabel(), labels) {
				phases += m.GetHistogram().GetSampleSum()
			}
		}
		for _, m := range families["govmm_virtio_request_seconds"].GetMetric() {
			if labelsMatch(m.GetLabel(), labels) {
				total = m.GetHistogram().GetSampleSum()
			}
		}
		if total <= 0 || math.Abs(phases-total) > 1e-6*total {
			t.Errorf("metrics: %s: phases sum to %g s, total %g s", op, phases, total)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	t.Logf("\n%s", tbl.String())
}

func labelsMatch(labels []*dto.LabelPair, want map[string]string) bool {
	n := 0
	for _, l := range labels {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(want)
}
