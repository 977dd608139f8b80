package exitstats

import (
	"fmt"
	"sync"
	"testing"
)

func TestRegistryKinds(t *testing.T) {
	r := NewRegistry()
	names := []string{"IO:serial", "MMIO:virtio-blk", "HLT", "SHUTDOWN", "INTR"}
	kinds := make(map[Kind]string)
	for _, n := range names {
		k := r.Kind(n)
		if k == KindOther {
			t.Errorf("Kind(%q) = KindOther", n)
		}
		if prev, dup := kinds[k]; dup {
			t.Errorf("Kind(%q) = Kind(%q) = %d", n, prev, k)
		}
		kinds[k] = n
	}
	for k, n := range kinds {
		if got := r.Kind(n); got != k {
			t.Errorf("second Kind(%q) = %d, want %d", n, got, k)
		}
		if got := r.Name(k); got != n {
			t.Errorf("Name(%d) = %q, want %q", k, got, n)
		}
	}

	tests := []struct {
		name string
		want Kind
	}{
		{OtherName, KindOther},
		{"", KindOther},
		{GuestName, KindOther},
		{TotalName, KindOther},
	}
	for _, tt := range tests {
		if got := r.Kind(tt.name); got != tt.want {
			t.Errorf("Kind(%q) = %d, want %d", tt.name, got, tt.want)
		}
	}
	for _, k := range []Kind{KindOther, 200, MaxKinds, 65535} {
		if got := r.Name(k); got != OtherName {
			t.Errorf("Name(%d) = %q, want %q", k, got, OtherName)
		}
	}
}

func TestRegistryCap(t *testing.T) {
	r := NewRegistry()
	seen := make(map[Kind]bool)
	for i := range MaxKinds + 20 {
		name := fmt.Sprintf("row%d", i)
		k := r.Kind(name)
		if i < MaxKinds-1 {
			if k == KindOther || seen[k] || k >= MaxKinds {
				t.Fatalf("Kind(%q) = %d: not a fresh row", name, k)
			}
			seen[k] = true
			continue
		}
		if k != KindOther {
			t.Errorf("Kind(%q) past the cap = %d, want KindOther", name, k)
		}
	}
	if got := r.Kind("row0"); got != 1 {
		t.Errorf("Kind(row0) after the cap = %d, want 1", got)
	}

	v := r.NewVCPU(0)
	v.Record(r.Kind("row1000"), 5)
	v.Record(r.Kind("row3"), 7)
	snap := v.Snapshot()
	if s, _ := snap.Row(OtherName); s.Count != 1 || s.Sum != 5 {
		t.Errorf("OTHER row = %+v, want one exit of 5 ns", s)
	}
	if s, _ := snap.Row("row3"); s.Count != 1 || s.Sum != 7 {
		t.Errorf("row3 = %+v, want one exit of 7 ns", s)
	}
}

func TestRegistryConcurrentKind(t *testing.T) {
	r := NewRegistry()
	const workers, names = 8, 100
	got := make([][]Kind, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			got[w] = make([]Kind, names)
			for i := range names {
				// Workers register in different orders to race on new names.
				j := (i + w*13) % names
				got[w][j] = r.Kind(fmt.Sprintf("n%d", j))
			}
		})
	}
	wg.Wait()
	for w := 1; w < workers; w++ {
		for i := range names {
			if got[w][i] != got[0][i] {
				t.Fatalf("worker %d got Kind %d for n%d, worker 0 got %d", w, got[w][i], i, got[0][i])
			}
		}
	}
	for i := range names {
		if n := r.Name(got[0][i]); n != fmt.Sprintf("n%d", i) {
			t.Errorf("Name(%d) = %q, want n%d", got[0][i], n, i)
		}
	}
}

func TestUnregisteredKindIsOther(t *testing.T) {
	r := NewRegistry()
	r.Kind("HLT")
	v := r.NewVCPU(3)
	for _, k := range []Kind{2, 255, MaxKinds, 65535} {
		v.Record(k, 1)
	}
	snap := v.Snapshot()
	if len(snap.Rows) != 1 || snap.Rows[0].Name != OtherName || snap.Rows[0].Count != 4 {
		t.Errorf("rows = %+v, want only OTHER with 4 exits", snap.Rows)
	}
}

func TestNilIsNoOp(t *testing.T) {
	var r *Registry
	if k := r.Kind("HLT"); k != KindOther {
		t.Errorf("nil Kind = %d", k)
	}
	if n := r.Name(3); n != OtherName {
		t.Errorf("nil Name = %q", n)
	}
	v := r.NewVCPU(0)
	if v != nil {
		t.Fatalf("nil registry gave a VCPU")
	}
	v.Record(1, 10)
	v.RecordGuest(10)
	if id := v.ID(); id != -1 {
		t.Errorf("nil ID = %d", id)
	}
	if s := v.Snapshot(); len(s.Rows) != 0 {
		t.Errorf("nil VCPU snapshot = %+v", s)
	}
	if s := r.Snapshot(); len(s.VCPUs) != 0 {
		t.Errorf("nil registry snapshot = %+v", s)
	}
}

func TestSnapshotOrderAndOmission(t *testing.T) {
	r := NewRegistry()
	hlt := r.Kind("HLT")
	r.Kind("never")
	for _, id := range []int{2, 0, 1} {
		r.NewVCPU(id).Record(hlt, uint64(id+1))
	}
	s := r.Snapshot()
	for i, v := range s.VCPUs {
		if v.ID != i {
			t.Errorf("VCPUs[%d].ID = %d", i, v.ID)
		}
		if len(v.Rows) != 1 || v.Rows[0].Name != "HLT" {
			t.Errorf("vCPU %d rows = %+v, want HLT only", v.ID, v.Rows)
		}
	}
}
