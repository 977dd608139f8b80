package exitstats

import (
	"math"
	"math/rand/v2"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/govmm/govmm/internal/monotime"
)

// A reader running beside a busy writer must never see a half-done update:
// within a row the sum must match the count, and across rows the snapshot
// must fall between two whole Record calls.
func TestSnapshotNeverTorn(t *testing.T) {
	r := NewRegistry()
	a, b := r.Kind("IO:a"), r.Kind("MMIO:b")
	v := r.NewVCPU(0)
	const pairs = 200000
	const na, nb, ng = 3, 1000003, 11

	var done atomic.Bool
	go func() {
		defer done.Store(true)
		for i := range pairs {
			v.Record(a, na)
			v.RecordGuest(ng)
			v.Record(b, nb)
			// Real exits are microseconds apart; leave readers similar gaps
			// now and then so they are not starved by a loop no vCPU runs.
			if i%256 == 0 {
				time.Sleep(time.Microsecond)
			}
		}
	}()

	check := func(s VCPUSnapshot) {
		t.Helper()
		sa, _ := s.Row("IO:a")
		sb, _ := s.Row("MMIO:b")
		g := s.Guest
		for _, c := range []struct {
			name string
			s    Stats
			ns   uint64
		}{{"IO:a", sa, na}, {"MMIO:b", sb, nb}, {GuestName, g, ng}} {
			if c.s.Sum != c.s.Count*c.ns || c.s.SumSq != float64(c.s.Count)*float64(c.ns*c.ns) {
				t.Fatalf("torn %s: %+v", c.name, c.s)
			}
			if c.s.Count > 0 && (c.s.Min != c.ns || c.s.Max != c.ns) {
				t.Fatalf("torn %s: %+v", c.name, c.s)
			}
		}
		// Calls go a, guest, b: a leads by at most one and guest sits between.
		if !(sa.Count >= g.Count && g.Count >= sb.Count && sa.Count-sb.Count <= 1) {
			t.Fatalf("torn across rows: a %d, guest %d, b %d", sa.Count, g.Count, sb.Count)
		}
	}
	snaps := 0
	for !done.Load() {
		check(r.Snapshot().VCPUs[0])
		snaps++
	}
	final := r.Snapshot().VCPUs[0]
	check(final)
	if sa, _ := final.Row("IO:a"); sa.Count != pairs {
		t.Errorf("final count = %d, want %d", sa.Count, pairs)
	}
	t.Logf("%d snapshots checked", snaps)
}

// RecordExit charges both rows in one write section: a reader must never
// see the guest row of an exit without its exit row.
// Each exit adds exactly one to the counts of the row's top RIPs, so
// they must always add up to the row's count.
func TestRecordExitNeverTorn(t *testing.T) {
	r := NewRegistry()
	r.TrackRIPs()
	a := r.Kind("IO:a")
	v := r.NewVCPU(0)
	const exits, na, ng = 200000, 7, 1000003

	var done atomic.Bool
	go func() {
		defer done.Store(true)
		for i := range exits {
			// A few hot RIPs and a stream of cold ones that evict.
			rip := uint64(i % 5)
			if i%3 == 0 {
				rip = uint64(1000 + i)
			}
			v.RecordExit(a, rip, ng, na)
			if i%256 == 0 {
				time.Sleep(time.Microsecond)
			}
		}
	}()
	check := func(s VCPUSnapshot) {
		t.Helper()
		sa, _ := s.Row("IO:a")
		if sa.Count != s.Guest.Count || sa.Sum != sa.Count*na || s.Guest.Sum != s.Guest.Count*ng {
			t.Fatalf("torn: IO:a %+v, guest %+v", sa, s.Guest)
		}
		if len(s.Rows) == 0 {
			return
		}
		var rips uint64
		for _, r := range s.Rows[0].TopRIPs {
			rips += r.Count
		}
		if rips != sa.Count {
			t.Fatalf("torn: top RIPs count %d exits, the row %d", rips, sa.Count)
		}
	}
	for !done.Load() {
		check(r.Snapshot().VCPUs[0])
	}
	final := r.Snapshot().VCPUs[0]
	check(final)
	if final.Guest.Count != exits {
		t.Errorf("final count = %d, want %d", final.Guest.Count, exits)
	}
}

// RecordExit charges exactly what Record and RecordGuest would.
func TestRecordExitIsRecordPlusGuest(t *testing.T) {
	r := NewRegistry()
	k := r.Kind("IO:serial")
	one, two := r.NewVCPU(0), r.NewVCPU(1)
	for i, ns := range []uint64{0, 1, 99, 100, 12345, 1 << 40} {
		one.RecordExit(k, 0, ns*3+uint64(i), ns)
		two.RecordGuest(ns*3 + uint64(i))
		two.Record(k, ns)
	}
	one.RecordExit(999, 0, 5, 6) // an unknown Kind goes to KindOther
	two.RecordGuest(5)
	two.Record(999, 6)
	s := r.Snapshot()
	a, b := s.VCPUs[0], s.VCPUs[1]
	a.ID, b.ID = 0, 0
	if !reflect.DeepEqual(a, b) {
		t.Errorf("RecordExit gave\n%+v\nRecord+RecordGuest gave\n%+v", a, b)
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	r := NewRegistry()
	k := r.Kind("IO:serial")
	v := r.NewVCPU(0)
	r.TrackRIPs()
	tracked := r.NewVCPU(1)
	// More RIPs than slots, so that evictions are measured too.
	var n uint64
	ripOf := func() uint64 { n++; return 0x1000 + n%(3*TopRIPs) }
	var nilV *VCPU
	tests := []struct {
		name string
		f    func()
	}{
		{"Record", func() { v.Record(k, 1234) }},
		{"RecordGuest", func() { v.RecordGuest(5678) }},
		{"RecordExit", func() { v.RecordExit(k, 0x1000, 5678, 1234) }},
		{"RecordExit tracking RIPs", func() { tracked.RecordExit(k, ripOf(), 5678, 1234) }},
		{"Record unregistered", func() { v.Record(999, 1) }},
		{"Record nil", func() { nilV.Record(k, 1) }},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", tt.name, n)
		}
	}
}

func BenchmarkRecord(b *testing.B) {
	r := NewRegistry()
	k := r.Kind("IO:serial")
	v := r.NewVCPU(0)
	b.ReportAllocs()
	var ns uint64
	for b.Loop() {
		ns++
		v.Record(k, ns&0xffff)
	}
}

// BenchmarkRecordExit is the whole cost of the exit statistics per exit in
// the vCPU loop (apart from its two clock reads): one RecordExit, without
// and with the top guest RIPs (TrackRIPs). The RIP streams: "rip-2" two
// RIPs taking turns, as the serial row's data and status registers;
// "rip-8" eight, as the PCI config accessors; "rip-distinct" a new RIP on
// every exit, the worst case (an eviction each time).
func BenchmarkRecordExit(b *testing.B) {
	for _, bc := range []struct {
		name  string
		track bool
		rips  uint64 // distinct RIPs in the stream, 0 for all distinct
	}{
		{"rips-off", false, 1},
		{"rip-2", true, 2},
		{"rip-8", true, 8},
		{"rip-distinct", true, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := NewRegistry()
			if bc.track {
				r.TrackRIPs()
			}
			k := r.Kind("IO:serial")
			v := r.NewVCPU(0)
			b.ReportAllocs()
			var ns uint64
			for b.Loop() {
				ns++
				rip := 0xffffffff81000000 + ns
				if bc.rips != 0 {
					rip = 0xffffffff81000000 + ns%bc.rips*7
				}
				v.RecordExit(k, rip, ns&0xfffff, ns&0xffff)
			}
		})
	}
}

// BenchmarkRecordExitSpread is BenchmarkRecordExit with handling times
// drawn at random from 1 us to 1 ms, log-uniform, so that each exit lands
// in a histogram bucket the branch predictor and the cache cannot guess.
func BenchmarkRecordExitSpread(b *testing.B) {
	r := NewRegistry()
	k := r.Kind("IO:serial")
	v := r.NewVCPU(0)
	rng := rand.New(rand.NewPCG(1, 2))
	var durations [4096]uint64
	for i := range durations {
		durations[i] = uint64(math.Exp(math.Log(1e3) + rng.Float64()*math.Log(1e3)))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		v.RecordExit(k, 0, durations[(i+1)%len(durations)]*10, durations[i%len(durations)])
	}
}

func BenchmarkRecordGuest(b *testing.B) {
	v := NewRegistry().NewVCPU(0)
	b.ReportAllocs()
	var ns uint64
	for b.Loop() {
		ns++
		v.RecordGuest(ns & 0xffff)
	}
}

func BenchmarkSnapshot(b *testing.B) {
	r := NewRegistry()
	for i := range 4 {
		v := r.NewVCPU(i)
		for _, n := range []string{"IO:serial", "IO:pci", "MMIO:virtio-blk", "HLT", "INTR", "SHUTDOWN"} {
			v.Record(r.Kind(n), 7000)
		}
		v.RecordGuest(1000)
	}
	b.ReportAllocs()
	for b.Loop() {
		r.Snapshot()
	}
}

// A snapshot counts the run in progress (InGuest), up to the moment it came
// back once it has (Leave), and the guest time plus InGuest never goes
// down when the exit is recorded: a Prometheus counter is built on it.
func TestInGuestProgress(t *testing.T) {
	r := NewRegistry()
	k := r.Kind("IO:test")
	v := r.NewVCPU(0)
	if s := v.Snapshot(); s.InGuest != 0 {
		t.Fatalf("InGuest %d before any run", s.InGuest)
	}
	entered := monotime.Now() - 1e9
	v.Enter(entered)
	if s := v.Snapshot(); s.InGuest < 1e9 {
		t.Errorf("InGuest %d a second into a run, want at least 1e9", s.InGuest)
	}
	left := entered + 15e8
	v.Leave(left)
	before := v.Snapshot()
	if before.InGuest != 15e8 {
		t.Errorf("InGuest %d once the run came back, want 1.5e9", before.InGuest)
	}
	v.RecordExit(k, 0, uint64(left-entered), 100)
	after := v.Snapshot()
	if after.InGuest != 0 || after.Guest.Sum != before.Guest.Sum+before.InGuest {
		t.Errorf("after the exit: guest %d + %d in progress, before %d + %d", after.Guest.Sum, after.InGuest, before.Guest.Sum, before.InGuest)
	}
	if tot := r.Snapshot().Total(); tot.InGuest != 0 {
		t.Errorf("total InGuest %d outside the guest", tot.InGuest)
	}
}
