package exitstats

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
)

// MaxKinds bounds the number of rows, KindOther included. The bound lets each
// VCPU keep its counters in one fixed array, so Record indexes it without a
// map lookup or a lock.
const MaxKinds = 256

// Kind is a row of the table: an exit reason, optionally subdivided by the
// device that handled it ("IO:serial", "MMIO:virtio-blk", "HLT", "SHUTDOWN",
// "INTR", ...). Get one from Registry.Kind.
type Kind uint16

// KindOther is the row that collects exits whose kind could not be given a row
// of its own: registrations past MaxKinds, reserved names, and kinds the
// registry never handed out.
const KindOther Kind = 0

// Reserved row names. Registry.Kind maps GuestName and TotalName to KindOther
// so that no exit row can be confused with the lines the table adds itself.
const (
	OtherName = "OTHER"
	GuestName = "TIMEINGUEST"
	TotalName = "TOTAL"
)

// kindTable is immutable once published: registration replaces it whole, so
// lookups read it without a lock.
type kindTable struct {
	byName map[string]Kind
	names  []string // indexed by Kind
}

// Registry maps row names to Kinds and keeps track of the VCPUs whose
// counters use those Kinds. A nil *Registry is valid and records nothing,
// which lets a VMM run with statistics off without testing for it everywhere.
type Registry struct {
	// kinds is replaced, never modified, so Kind and Name need no lock.
	kinds atomic.Pointer[kindTable]
	// n is len(kinds.Load().names) as one word, so Record can bound a Kind
	// with a single load instead of chasing the table pointer.
	n atomic.Uint32
	// kindMu serializes registrations; lookups of known names do not take it.
	kindMu sync.Mutex

	// vcpuMu guards vcpus and rips. Only NewVCPU, TrackRIPs and Snapshot
	// take it, never Record.
	vcpuMu sync.Mutex
	vcpus  []*VCPU
	rips   bool // VCPUs created from now on track their top guest RIPs
}

// NewRegistry returns a registry holding only the OTHER row.
func NewRegistry() *Registry {
	r := &Registry{}
	r.kinds.Store(&kindTable{
		byName: map[string]Kind{OtherName: KindOther},
		names:  []string{OtherName},
	})
	r.n.Store(1)
	return r
}

// Kind returns the row for name, registering it on first use. The same name
// always yields the same Kind. Once MaxKinds rows exist, new names share
// KindOther; so do the empty name and the reserved names. Safe for concurrent
// use; meant to be called while setting up a VM, not per exit.
func (r *Registry) Kind(name string) Kind {
	if r == nil || name == "" || name == GuestName || name == TotalName {
		return KindOther
	}
	if k, ok := r.kinds.Load().byName[name]; ok {
		return k
	}
	r.kindMu.Lock()
	defer r.kindMu.Unlock()
	t := r.kinds.Load()
	if k, ok := t.byName[name]; ok {
		return k
	}
	if len(t.names) >= MaxKinds {
		return KindOther
	}
	k := Kind(len(t.names))
	nt := &kindTable{
		byName: make(map[string]Kind, len(t.byName)+1),
		names:  append(t.names[:len(t.names):len(t.names)], name),
	}
	for n, kk := range t.byName {
		nt.byName[n] = kk
	}
	nt.byName[name] = k
	// Publish the table before the count: a Record that sees the new count
	// must find a row the next Snapshot will name.
	r.kinds.Store(nt)
	r.n.Store(uint32(len(nt.names)))
	return k
}

// Name returns the name of row k, or OtherName for a Kind this registry never
// handed out (Record charges such exits to KindOther).
func (r *Registry) Name(k Kind) string {
	if r == nil {
		return OtherName
	}
	t := r.kinds.Load()
	if int(k) >= len(t.names) {
		return OtherName
	}
	return t.names[k]
}

// NewVCPU returns the counters for vCPU id and adds them to every later
// Snapshot of r. On a nil registry it returns nil, whose Record is a no-op.
func (r *Registry) NewVCPU(id int) *VCPU {
	if r == nil {
		return nil
	}
	v := &VCPU{id: id, reg: r}
	r.vcpuMu.Lock()
	if r.rips {
		v.rips = new([MaxKinds]ripCounter)
	}
	r.vcpus = append(r.vcpus, v)
	r.vcpuMu.Unlock()
	return v
}

// TrackRIPs makes every VCPU created after it also find, per row, the
// TopRIPs guest RIPs that caused most of its exits (Row.TopRIPs), from the
// rip each RecordExit passes.
func (r *Registry) TrackRIPs() {
	if r == nil {
		return
	}
	r.vcpuMu.Lock()
	r.rips = true
	r.vcpuMu.Unlock()
}

// Snapshot returns the counters of every VCPU created by r, ordered by ID.
// It may run concurrently with Record on any vCPU and never delays it.
func (r *Registry) Snapshot() Snapshot {
	if r == nil {
		return Snapshot{}
	}
	r.vcpuMu.Lock()
	vcpus := slices.Clone(r.vcpus)
	r.vcpuMu.Unlock()

	// Reading outside the lock keeps a slow reader from holding up NewVCPU.
	s := Snapshot{VCPUs: make([]VCPUSnapshot, 0, len(vcpus))}
	for _, v := range vcpus {
		s.VCPUs = append(s.VCPUs, v.Snapshot())
	}
	slices.SortStableFunc(s.VCPUs, func(a, b VCPUSnapshot) int { return cmp.Compare(a.ID, b.ID) })
	return s
}
