package exitstats

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// countRIPs feeds a stream to a fresh counter, as the vCPU thread would
// (the test is the only writer), and returns its slots and the exact
// counts.
func countRIPs(stream []uint64) ([]RIPCount, map[uint64]uint64) {
	var c ripCounter
	exact := map[uint64]uint64{}
	for _, rip := range stream {
		c.add(rip)
		exact[rip]++
	}
	var s ripSlots
	c.load(&s)
	return s.list(), exact
}

// checkBounds asserts what space-saving guarantees for any stream of N:
// counts add up to N; each slot's count is an upper bound and count
// minus overcount a lower bound; every RIP seen more than N/TopRIPs times
// holds a slot; a full counter's least count is at most N/TopRIPs.
func checkBounds(t *testing.T, got []RIPCount, exact map[uint64]uint64, n uint64) {
	t.Helper()
	var sum uint64
	held := map[uint64]bool{}
	for _, r := range got {
		sum += r.Count
		held[r.RIP] = true
		if e := exact[r.RIP]; r.Count < e || r.Count-r.Overcount > e {
			t.Errorf("RIP %#x: count %d overcount %d, but it ran %d times", r.RIP, r.Count, r.Overcount, e)
		}
		if r.Overcount > r.Count {
			t.Errorf("RIP %#x: overcount %d above count %d", r.RIP, r.Overcount, r.Count)
		}
	}
	if sum != n {
		t.Errorf("counts add up to %d, want %d exits", sum, n)
	}
	for rip, e := range exact {
		if e*TopRIPs > n && !held[rip] {
			t.Errorf("RIP %#x ran %d of %d times (more than 1/%d) but holds no slot", rip, e, n, TopRIPs)
		}
	}
	if len(got) == TopRIPs && got[len(got)-1].Count*TopRIPs > n {
		t.Errorf("least count %d above N/K = %d/%d", got[len(got)-1].Count, n, TopRIPs)
	}
	if len(got) > TopRIPs || len(got) > len(exact) {
		t.Errorf("%d slots for %d distinct RIPs", len(got), len(exact))
	}
}

func TestRIPCounterExactWhenFewRIPs(t *testing.T) {
	var stream []uint64
	for i := range 1000 {
		stream = append(stream, uint64(0x1000+i%TopRIPs*3)) // K distinct RIPs
	}
	stream = append(stream, 0, 0) // RIP 0 is a RIP like any other
	got, exact := countRIPs(stream)
	checkBounds(t, got, exact, uint64(len(stream)))
	// One RIP too many: RIP 0 came last and took over the least counted
	// slot, inheriting its count; every other slot is exact.
	if len(got) != TopRIPs {
		t.Fatalf("%d slots, want %d", len(got), TopRIPs)
	}
	for _, r := range got {
		if r.RIP == 0 {
			if r.Exact() || r.Count-r.Overcount != 2 {
				t.Errorf("RIP 0: %+v, want an inexact count with a lower bound of 2", r)
			}
		} else if !r.Exact() || r.Count != exact[r.RIP] {
			t.Errorf("RIP %#x: %+v, want exactly %d", r.RIP, r, exact[r.RIP])
		}
	}
	// Most counted first.
	for i := 1; i < len(got); i++ {
		if got[i-1].Count < got[i].Count {
			t.Errorf("slots out of order: %+v", got)
		}
	}
}

// Streams built to hurt a space-saving counter: its bounds must hold
// whatever the order.
func TestRIPCounterAdversarial(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	heavy := func(n int, at func(i int) bool) []uint64 {
		var s []uint64
		for i := range n {
			if at(i) {
				s = append(s, 0xaaaa)
			} else {
				s = append(s, uint64(1_000_000+i)) // each cold RIP once
			}
		}
		return s
	}
	const n = 20000
	streams := map[string][]uint64{
		"all distinct": heavy(n, func(int) bool { return false }),
		// K+1 RIPs in turn: every arrival evicts the one due next.
		"round robin K+1": func() []uint64 {
			var s []uint64
			for i := range n {
				s = append(s, uint64(i%(TopRIPs+1)))
			}
			return s
		}(),
		// Just above 1/K, spread evenly among cold RIPs that evict.
		"heavy just above 1/K": heavy(n, func(i int) bool { return i%(TopRIPs-1) == 0 }),
		// The heavy hitter comes only at the end, after the slots are
		// full of inflated counts.
		"heavy last": heavy(n, func(i int) bool { return i >= n-n/TopRIPs-1 }),
		// Several heavy hitters in bursts.
		"bursts": func() []uint64 {
			var s []uint64
			for i := range n {
				switch {
				case i/500%4 == 0:
					s = append(s, 1)
				case i%7 == 0:
					s = append(s, 2)
				case i%11 == 0:
					s = append(s, 3)
				default:
					s = append(s, uint64(100+rng.IntN(5000)))
				}
			}
			return s
		}(),
		// Zipf-like: a few hot call sites and a long tail, as in a guest.
		"zipf": func() []uint64 {
			z := rand.NewZipf(rand.New(rand.NewPCG(3, 4)), 1.2, 1, 10000)
			var s []uint64
			for range n {
				s = append(s, z.Uint64())
			}
			return s
		}(),
	}
	for name, stream := range streams {
		t.Run(name, func(t *testing.T) {
			got, exact := countRIPs(stream)
			checkBounds(t, got, exact, uint64(len(stream)))
		})
	}
}

// Random small streams against the exact counts.
func TestRIPCounterRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 500 {
		n := 1 + rng.IntN(300)
		distinct := 1 + rng.IntN(3*TopRIPs)
		stream := make([]uint64, n)
		for i := range stream {
			stream[i] = uint64(rng.IntN(distinct))
		}
		got, exact := countRIPs(stream)
		checkBounds(t, got, exact, uint64(n))
		if t.Failed() {
			t.Fatalf("stream %v", stream)
		}
	}
}

// The all-vCPU row merges the vCPUs' lists: its counts stay upper bounds
// and count minus overcount lower bounds.
func TestMergeRIPsBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 200 {
		var lists [][]RIPCount
		exact := map[uint64]uint64{}
		for range 1 + rng.IntN(4) {
			stream := make([]uint64, rng.IntN(400))
			distinct := 1 + rng.IntN(2*TopRIPs)
			for i := range stream {
				stream[i] = uint64(rng.IntN(distinct))
			}
			got, ex := countRIPs(stream)
			lists = append(lists, got)
			for rip, e := range ex {
				exact[rip] += e
			}
		}
		m := mergeRIPs(lists)
		if len(m) > TopRIPs {
			t.Fatalf("merged %d RIPs, at most %d", len(m), TopRIPs)
		}
		for _, r := range m {
			if e := exact[r.RIP]; r.Count < e || r.Count-r.Overcount > e {
				t.Fatalf("RIP %#x: count %d overcount %d, but it ran %d times; lists %v", r.RIP, r.Count, r.Overcount, e, lists)
			}
		}
	}
	// Lists that never evicted are exact, and merge exactly.
	m := mergeRIPs([][]RIPCount{{{RIP: 1, Count: 5}, {RIP: 2, Count: 1}}, {{RIP: 2, Count: 3}, {RIP: 3, Count: 1}}, nil})
	want := []RIPCount{{RIP: 1, Count: 5}, {RIP: 2, Count: 4}, {RIP: 3, Count: 1}}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("merged %+v, want %+v", m, want)
	}
}

func TestTopRIPsInSnapshotAndJSON(t *testing.T) {
	r := NewRegistry()
	r.TrackRIPs()
	io := r.Kind("IO:serial")
	a, b := r.NewVCPU(0), r.NewVCPU(1)
	for range 3 {
		a.RecordExit(io, 0xffffffff81034ca8, 10, 20)
	}
	a.RecordExit(io, 0xffffffff81034ca0, 10, 20)
	b.RecordExit(io, 0xffffffff81034ca8, 10, 20)
	s := r.Snapshot()
	s.Symbolize(func(rip uint64) string {
		if rip == 0xffffffff81034ca8 {
			return "io_serial_out+0x2"
		}
		return ""
	})
	want := []RIPCount{{RIP: 0xffffffff81034ca8, Symbol: "io_serial_out+0x2", Count: 3}, {RIP: 0xffffffff81034ca0, Count: 1}}
	if got := s.VCPUs[0].Rows[0].TopRIPs; !reflect.DeepEqual(got, want) {
		t.Errorf("vCPU 0 top RIPs %+v, want %+v", got, want)
	}
	total := s.Total().Rows[0].TopRIPs
	if total[0].Count != 4 || total[0].Symbol != "io_serial_out+0x2" || !total[0].Exact() {
		t.Errorf("all-vCPU top RIP %+v, want io_serial_out+0x2 4 times exactly", total[0])
	}

	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"top_rips":[{"rip":"0xffffffff81034ca8","symbol":"io_serial_out+0x2","count":3,"overcount":0},{"rip":"0xffffffff81034ca0","count":1,"overcount":0}]`) {
		t.Errorf("JSON lacks the top RIPs as documented:\n%s", js)
	}
	back, err := ReadJSON(strings.NewReader(string(js)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Errorf("round trip changed the snapshot\n got %+v\nwant %+v", back, s)
	}
}

// A saved table is user input: bad top RIPs are refused with a reason.
func TestTopRIPsBadJSON(t *testing.T) {
	row := func(rips string) string {
		return `{"vcpus":[{"id":0,"rows":[{"name":"IO:x","count":1,"top_rips":` + rips + `}]}]}`
	}
	many := "[" + strings.Repeat(`{"rip":"0x1","count":1},`, TopRIPs) + `{"rip":"0x1","count":1}]`
	for _, tc := range []struct{ in, want string }{
		{row(`[{"rip":"4096","count":1}]`), `rip "4096": want 0x`},
		{row(`[{"rip":"0xfffffffffffffffff","count":1}]`), "at most 16 hexadecimal digits"},
		{row(`[{"rip":"0x10","count":1,"overcount":2}]`), "overcount 2 above count 1"},
		{row(many), "17 top RIPs, at most 16"},
		{row(`[{"rip":4096,"count":1}]`), "cannot unmarshal number"},
	} {
		if _, err := ReadJSON(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.in, err, tc.want)
		}
	}
}

// The table shows the top three call sites under each row, named where a
// symbol is known, with their share of the row's exits; an upper bound is
// marked.
func TestWriteTableTopRIPs(t *testing.T) {
	s := Snapshot{VCPUs: []VCPUSnapshot{{ID: 0, Rows: []Row{
		{Name: "IO:serial", Stats: Stats{Count: 8, Sum: 800, Min: 100, Max: 100}, TopRIPs: []RIPCount{
			{RIP: 0xffffffff8123ed70, Symbol: "io_serial_out+0x2", Count: 5},
			{RIP: 0xffffffff8123ed60, Symbol: "io_serial_in+0x5", Count: 2, Overcount: 1},
			{RIP: 0x1000, Count: 1},
			{RIP: 0x2000, Count: 1},
		}},
		{Name: "HLT", Stats: Stats{Count: 1, Sum: 10, Min: 10, Max: 10}},
	}}}}
	var out strings.Builder
	if err := s.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	want := []string{"62.5% io_serial_out+0x2", "<=25.0% io_serial_in+0x5", "12.5% 0x1000"}
	if len(lines) < 9 || !strings.HasPrefix(lines[2], "IO:serial ") || !strings.HasPrefix(lines[6], "HLT ") {
		t.Fatalf("table:\n%s", out.String())
	}
	for i, w := range want {
		if got := strings.Join(strings.Fields(lines[3+i]), " "); got != w || !strings.HasPrefix(lines[3+i], "  ") {
			t.Errorf("line %d = %q, want %q indented", 3+i, lines[3+i], w)
		}
	}
	t.Logf("\n%s", out.String())
}
