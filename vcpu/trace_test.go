package vcpu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/govmm/govmm/exittrace"
	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/internal/testenv"
)

// With tracing on and statistics off, every exit of a port loop is on the
// vCPU's track: one IO:test slice per OUT, at a RIP inside the loop, the
// HLT last, and the slices one after another.
func TestTraceWithoutStats(t *testing.T) {
	const outs = 50
	code := tiny.PortLoop16(testPort, outs)
	v, _ := newGuestVCPU(t, code, false)
	tr := exittrace.New(256, v.cfg.Registry)
	v.cfg.Stats, v.cfg.Trace = nil, tr.NewVCPU(0)
	if reason, err := v.Run(); reason != Halted || err != nil {
		t.Fatalf("Run = %v, %v; want halted", reason, err)
	}
	var buf bytes.Buffer
	if _, err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	sum, err := testenv.CheckTrace(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Names["IO:test"] != outs || sum.Names["HLT"] != 1 {
		t.Errorf("slices by name %v, want %d IO:test and 1 HLT (INTR from preemption may add some)", sum.Names, outs)
	}
	var doc struct {
		TraceEvents []struct {
			Ph, Name string
			Args     struct{ RIP string }
		}
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	last := ""
	for _, ev := range doc.TraceEvents {
		if ev.Ph != "X" || ev.Name == "INTR" {
			continue
		}
		var rip uint64
		if _, err := fmt.Sscanf(ev.Args.RIP, "0x%x", &rip); err != nil || rip < tiny.LoadAddr || rip > tiny.LoadAddr+uint64(len(code)) {
			t.Errorf("%s exit at RIP %q, outside the loop", ev.Name, ev.Args.RIP)
		}
		last = ev.Name
	}
	if last != "HLT" {
		t.Errorf("last exit %q, want HLT", last)
	}
}
