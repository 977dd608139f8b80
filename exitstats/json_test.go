package exitstats

import (
	"encoding/json"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func TestJSONRoundTrip(t *testing.T) {
	r := NewRegistry()
	serial, hlt := r.Kind("IO:serial"), r.Kind("HLT")
	for id := range 3 {
		v := r.NewVCPU(id)
		for i := range 10 * (id + 1) {
			v.Record(serial, uint64(1000+i*37))
			v.RecordGuest(uint64(3 + i*i*1001))
		}
		if id != 1 {
			v.Record(hlt, 1e9)
		}
	}
	// An empty vCPU and an extreme one must survive too.
	r.NewVCPU(3)
	r.NewVCPU(4).Record(serial, math.MaxUint64)

	tests := []struct {
		name string
		snap Snapshot
	}{
		{"registry", r.Snapshot()},
		{"empty", Snapshot{}},
		{"no rows", Snapshot{VCPUs: []VCPUSnapshot{{ID: 7, Rows: []Row{}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.snap)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ReadJSON(strings.NewReader(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.snap) {
				t.Errorf("round trip changed the snapshot\n got %+v\nwant %+v\njson %s", got, tt.snap, b)
			}
		})
	}
}

func TestJSONFields(t *testing.T) {
	r := NewRegistry()
	v := r.NewVCPU(0)
	v.Record(r.Kind("HLT"), 2)
	v.Record(r.Kind("HLT"), 4)
	v.RecordGuest(6)
	b, err := json.Marshal(r.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		VCPUs []struct {
			ID    int              `json:"id"`
			Rows  []map[string]any `json:"rows"`
			Guest map[string]any   `json:"guest"`
		} `json:"vcpus"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.VCPUs) != 1 || len(doc.VCPUs[0].Rows) != 1 {
		t.Fatalf("json %s", b)
	}
	want := map[string]any{
		"name": "HLT", "count": 2.0, "min_ns": 2.0, "max_ns": 4.0, "sum_ns": 6.0,
		"sum_sq_ns2": 20.0, "avg_ns": 3.0, "stddev_ns": 1.0, "share": 0.5,
		"buckets": []any{2.0},             // both in bucket 0; the zeros after it left out
		"hist":    []any{[]any{7.0, 2.0}}, // histogram bucket 0 is [0, 7 ns]
		// Of two durations the median is the smaller, the rest the larger.
		"p50_us": 0.002, "p90_us": 0.004, "p99_us": 0.004, "p999_us": 0.004,
	}
	if got := doc.VCPUs[0].Rows[0]; !reflect.DeepEqual(got, want) {
		t.Errorf("row json = %v, want %v", got, want)
	}
	if g := doc.VCPUs[0].Guest; g["count"] != 1.0 || g["avg_ns"] != 6.0 {
		t.Errorf("guest json = %v", g)
	}
}

func TestReadJSONDerivesShares(t *testing.T) {
	in := `{"vcpus":[{"id":1,"rows":[
		{"name":"a","count":1,"sum_ns":10,"share":0.9,"avg_ns":123},
		{"name":"b","count":1,"sum_ns":30,"share":0.1}],
		"guest":{"count":1,"sum_ns":60},"guest_share":5}]}`
	s, err := ReadJSON(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	v := s.VCPUs[0]
	if v.Rows[0].Name != "b" || !near(v.Rows[0].Share, 0.3) || !near(v.Rows[1].Share, 0.1) || !near(v.GuestShare, 0.6) {
		t.Errorf("shares not derived: %+v", v)
	}
}

func TestReadJSONErrors(t *testing.T) {
	tests := []string{
		"",
		"not json",
		`{"vcpus":[{"id":"zero"}]}`,
		`{"vcpus":[{"rows":[{"count":-1}]}]}`,
		`{"vcpus":[{"guest":{"sum_ns":1e30}}]}`,
		`{"vcpus":[{"rows":[{"buckets":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1]}]}]}`,
		`{"vcpus":[{"guest":{"buckets":[-1]}}]}`,
	}
	for _, in := range tests {
		if _, err := ReadJSON(strings.NewReader(in)); err == nil {
			t.Errorf("ReadJSON(%q) succeeded", in)
		}
	}
}

// A table saved before the histogram existed reads, without percentiles.
func TestReadJSONWithoutHistogram(t *testing.T) {
	in := `{"vcpus":[{"id":0,"rows":[{"name":"HLT","count":2,"min_ns":5,"max_ns":9,"sum_ns":14,"buckets":[2]}]}]}`
	s, err := ReadJSON(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	row, _ := s.VCPUs[0].Row("HLT")
	if _, ok := row.Percentile(50); ok || row.Count != 2 {
		t.Errorf("row %+v: want count 2 and no percentiles", row)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "p50_us") {
		t.Errorf("percentiles made up for a row without a histogram: %s", b)
	}
}

// The percentiles in the JSON are those of the row, in microseconds.
func TestJSONPercentiles(t *testing.T) {
	r := NewRegistry()
	k := r.Kind("IO:x")
	v := r.NewVCPU(0)
	for i := range 1000 {
		v.Record(k, uint64(1000+i*10)) // 1 us to 11 us
	}
	b, err := json.Marshal(r.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		VCPUs []struct {
			Rows []map[string]any `json:"rows"`
		} `json:"vcpus"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	row := doc.VCPUs[0].Rows[0]
	for key, exact := range map[string]float64{"p50_us": 5.99, "p90_us": 9.99, "p99_us": 10.89, "p999_us": 10.98} {
		got, ok := row[key].(float64)
		if !ok || math.Abs(got-exact) > exact/32+0.004 {
			t.Errorf("%s = %v, want %v within 1/32 + 4 ns", key, row[key], exact)
		}
	}
}

// A histogram in the JSON is checked: each error for its own reason.
func TestReadJSONHistErrors(t *testing.T) {
	row := func(fields string) string { return `{"vcpus":[{"rows":[{` + fields + `}]}]}` }
	tests := []struct{ in, want string }{
		{row(`"count":1,"max_ns":9,"hist":[[8,1]]`), "not a bucket bound"},
		{row(`"count":2,"max_ns":20,"hist":[[13,1],[7,1]]`), "out of order"},
		{row(`"count":2,"max_ns":20,"hist":[[7,1],[7,1]]`), "out of order"},
		{row(`"count":1,"max_ns":7,"hist":[[7,2]]`), "count is 1"},
		{row(`"count":1,"max_ns":7,"hist":[[7,1,1]]`), "not an [upper bound, count] pair"},
		{row(`"count":1,"min_ns":100,"max_ns":200,"hist":[[7,1]]`), "outside min"},
		{row(`"count":1,"min_ns":1,"max_ns":5,"hist":[[13,1]]`), "outside min"},
		{row(`"count":1,"min_ns":9,"max_ns":8,"hist":[[13,1]]`), "outside min"},
		{row(`"count":1,"hist":[[18446744073709551616,1]]`), "cannot unmarshal"},
	}
	for _, tt := range tests {
		_, err := ReadJSON(strings.NewReader(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ReadJSON(%s) = %v, want an error with %q", tt.in, err, tt.want)
		}
	}
}

// A snapshot read from JSON (a file for govmm stat --diff, a QMP reply)
// is refused for more vCPUs or rows than govmm has before they are
// decoded: every row holds a 3 KiB histogram, and 1 MiB of "{}"s cost
// 6 GB (an audit).
func TestReadJSONBoundsVCPUsAndRows(t *testing.T) {
	many := func(n int, item string) string { return strings.TrimSuffix(strings.Repeat(item+",", n), ",") }
	for _, tc := range []struct {
		name, in, want string
	}{
		{"vcpus", `{"vcpus":[` + many(1<<18, "{}") + `]}`, "262144 vCPUs, at most 254"},
		{"rows", `{"vcpus":[{},{"rows":[` + many(1<<18, "{}") + `]}]}`, "vCPU 1: 262144 rows, at most 256"},
		{"keys in capitals", `{"VCPUS":[` + many(1<<18, "{}") + `]}`, "262144 vCPUs, at most 254"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := ReadJSON(strings.NewReader(tc.in))
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
				t.Errorf("refusing %d KiB of JSON allocated %d MiB", len(tc.in)>>10, n>>20)
			}
		})
	}
	// At the bounds: read.
	in := `{"vcpus":[{"rows":[` + many(MaxKinds, `{"name":"x","count":1}`) + `]},` + many(MaxVCPUs-1, "{}") + `]}`
	if s, err := ReadJSON(strings.NewReader(in)); err != nil || len(s.VCPUs) != MaxVCPUs || len(s.VCPUs[0].Rows) != MaxKinds {
		t.Errorf("a table at the bounds: %d vCPUs, %v", len(s.VCPUs), err)
	}
}

// So is the kernel table (govmm stat's live view decodes it from every
// reply): too many vCPUs or statistics are refused before they are
// decoded, at a bounded cost (found in review: 3 MiB of "{}" took
// 349 MiB).
func TestKernelSnapshotJSONBounded(t *testing.T) {
	many := func(n int) string { return strings.TrimSuffix(strings.Repeat("{},", n), ",") }
	for _, tc := range []struct{ in, want string }{
		{`{"VCPUs":[{"Stats":[` + many(1<<20) + `]}]}`, "vCPU 0: 1048576 statistics"},
		{`{"VM":[` + many(1<<20) + `]}`, "1048576 VM statistics"},
		{`{"VCPUs":[` + many(1<<20) + `]}`, "1048576 vCPUs"},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		var s KernelSnapshot
		err := json.Unmarshal([]byte(tc.in), &s)
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one saying %q", err, tc.want)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
			t.Errorf("refusing %d KiB allocated %d MiB", len(tc.in)>>10, n>>20)
		}
	}
	var s KernelSnapshot
	if err := json.Unmarshal([]byte(`{"VM":[{"Name":"x","Values":[1]}],"VCPUs":[{"ID":0,"Stats":[{"Name":"y","Values":[2]}]}]}`), &s); err != nil ||
		s.VM[0].Value() != 1 || s.VCPUs[0].Stats[0].Value() != 2 {
		t.Errorf("a small table: %+v, %v", s, err)
	}
}
