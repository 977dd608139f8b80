package exittrace

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/internal/testenv"
)

func TestAppendMicros(t *testing.T) {
	for _, tc := range []struct {
		ns   int64
		want string
	}{
		{0, "0.000"}, {1, "0.001"}, {999, "0.999"}, {1000, "1.000"}, {1234567, "1234.567"}, {-1500, "-1.500"}, {120, "0.120"},
	} {
		if got := string(appendMicros(nil, tc.ns)); got != tc.want {
			t.Errorf("appendMicros(%d) = %q, want %q", tc.ns, got, tc.want)
		}
	}
}

// A trace of two vCPUs and a queue is valid trace-event JSON with a
// named track each, exits named by their rows, and an arrow from each
// notify to each interrupt raised in it.
func TestWriteValidTrace(t *testing.T) {
	reg := exitstats.NewRegistry()
	io, hlt := reg.Kind("IO:serial"), reg.Kind("MMIO:virtio-blk.notify")
	tr := New(4, reg)
	tr.Symbolize(func(rip uint64) string {
		if rip == 0xffffffff81000002 {
			return `io_serial_out+0x11"`
		}
		return ""
	})
	b := tr.base
	v0, v1 := tr.NewVCPU(0), tr.NewVCPU(1)
	// vCPU 0 laps its ring of 4: the first two exits are dropped.
	for i := int64(0); i < 6; i++ {
		v0.Exit(io, b+1000+i*500, 100, 400, 0xffffffff81000000+uint64(i))
	}
	v1.Exit(hlt, b+2000, 3000, 2000, 0)
	q := tr.NewQueue("virtio-blk", 0)
	// Notify 1 raises two interrupts; notify 2 none; an interrupt with
	// no notify (console input, say); one linked to a notify that is no
	// longer in the ring.
	q.notifies.record(event{start: b + 5000, dur: 4000, a: 1})
	q.notifies.record(event{start: b + 10000, dur: 500, a: 2})
	q.irqs.record(event{start: b + 6000, dur: 300, a: 1})
	q.irqs.record(event{start: b + 8000, dur: 300, a: 1})
	q.irqs.record(event{start: b + 12000, dur: 300})
	q.irqs.record(event{start: b + 13000, dur: 300, a: 99})

	var buf bytes.Buffer
	w, err := tr.Write(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if w.Events != 4+1+2+4 || w.Dropped != 2 {
		t.Errorf("Write reports %+v, want 11 events and 2 dropped", w)
	}
	sum, err := testenv.CheckTrace(buf.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	want := map[string]int{"vCPU 0": 4, "vCPU 1": 1, "virtio-blk q0 notify": 2, "virtio-blk q0 interrupts": 4}
	for name, n := range want {
		if sum.Tracks[name] != n {
			t.Errorf("track %q has %d slices, want %d (all: %v)", name, sum.Tracks[name], n, sum.Tracks)
		}
	}
	if len(sum.Tracks) != len(want) {
		t.Errorf("tracks %v, want %v", sum.Tracks, want)
	}
	if sum.Names["IO:serial"] != 4 || sum.Names["MMIO:virtio-blk.notify"] != 1 {
		t.Errorf("slice names %v", sum.Names)
	}
	if sum.Flows != 2 {
		t.Errorf("%d flows, want 2 (notify 1 to each of its interrupts)", sum.Flows)
	}
	var doc struct {
		OtherData struct {
			Dropped map[string]uint64 `json:"dropped"`
		} `json:"otherData"`
		TraceEvents []map[string]any `json:"traceEvents"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OtherData.Dropped["vCPU 0"] != 2 || doc.OtherData.Dropped["vCPU 1"] != 0 {
		t.Errorf("otherData.dropped = %v", doc.OtherData.Dropped)
	}
	// The oldest exit kept is the third: its RIP, time and time in guest.
	for _, ev := range doc.TraceEvents {
		if ev["ph"] == "X" && ev["tid"] == 1.0 {
			args := ev["args"].(map[string]any)
			if ev["ts"] != 2.0 || ev["dur"] != 0.1 || args["rip"] != "0xffffffff81000002" || args["guest_us"] != 0.4 || args["sym"] != `io_serial_out+0x11"` {
				t.Errorf("first exit of vCPU 0: %v", ev)
			}
			break
		}
	}
}

// The checker itself refuses what breaks the format.
func TestCheckTraceRefuses(t *testing.T) {
	meta := `{"ph":"M","name":"thread_name","pid":1,"tid":1,"args":{"name":"vCPU 0"}}`
	for _, tc := range []struct{ name, events, want string }{
		{"no tid", `{"ph":"X","name":"a","pid":1,"ts":1,"dur":1}`, "required"},
		{"no dur", meta + `,{"ph":"X","name":"a","pid":1,"tid":1,"ts":1}`, "dur"},
		{"unnamed track", `{"ph":"X","name":"a","pid":1,"tid":2,"ts":1,"dur":1}`, "thread_name"},
		{"backwards", meta + `,{"ph":"X","name":"a","pid":1,"tid":1,"ts":5,"dur":1},{"ph":"X","name":"a","pid":1,"tid":1,"ts":4,"dur":0}`, "before"},
		{"overlap", meta + `,{"ph":"X","name":"a","pid":1,"tid":1,"ts":1,"dur":2},{"ph":"X","name":"a","pid":1,"tid":1,"ts":2.5,"dur":1}`, "ends"},
		{"unfinished flow", meta + `,{"ph":"X","name":"a","pid":1,"tid":1,"ts":1,"dur":2},{"ph":"s","name":"n","cat":"c","id":1,"pid":1,"tid":1,"ts":1.5}`, "one start and one finish"},
		{"flow outside", meta + `,{"ph":"X","name":"a","pid":1,"tid":1,"ts":1,"dur":2},{"ph":"s","name":"n","cat":"c","id":1,"pid":1,"tid":1,"ts":1.5},{"ph":"f","bp":"e","name":"n","cat":"c","id":1,"pid":1,"tid":1,"ts":9}`, "no slice"},
		{"too fine", meta + `,{"ph":"X","name":"a","pid":1,"tid":1,"ts":1.0001,"dur":2}`, "bad ts"},
	} {
		_, err := testenv.CheckTrace([]byte(`{"traceEvents":[` + tc.events + `]}`))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one saying %q", tc.name, err, tc.want)
		}
	}
}

// The notify and interrupt hooks link an interrupt to the notify being
// served, and nil tracks (tracing off) do nothing.
func TestQueueLinksInterruptsToNotify(t *testing.T) {
	tr := New(16, exitstats.NewRegistry())
	q := tr.NewQueue("virtio-rng", 0)
	n := q.BeginNotify()
	irq := q.BeginInterrupt()
	q.EndInterrupt(irq)
	q.EndNotify(n)
	q.EndInterrupt(q.BeginInterrupt()) // outside any notify
	notifies, _ := q.notifies.snapshot()
	irqs, _ := q.irqs.snapshot()
	if len(notifies) != 1 || len(irqs) != 2 || notifies[0].a == 0 || irqs[0].a != notifies[0].a || irqs[1].a != 0 {
		t.Fatalf("notifies %+v, interrupts %+v: want the first interrupt linked to the notify, the second to none", notifies, irqs)
	}
	if irqs[0].start < notifies[0].start || irqs[0].start+irqs[0].dur > notifies[0].start+notifies[0].dur {
		t.Errorf("interrupt %+v outside its notify %+v", irqs[0], notifies[0])
	}

	var off *Trace
	if off.NewVCPU(0) != nil || off.NewQueue("x", 0) != nil {
		t.Fatal("a nil trace hands out tracks")
	}
	var nq *Queue
	nq.EndNotify(nq.BeginNotify())
	nq.EndInterrupt(nq.BeginInterrupt())
	if _, err := off.Write(&bytes.Buffer{}); err == nil {
		t.Error("Write of a nil trace: no error")
	}
}
