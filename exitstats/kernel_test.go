package exitstats

import (
	"bytes"
	"strings"
	"testing"

	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/kvm"
)

// kvmVM is a VM with one vCPU that has run a two-instruction real-mode
// guest (OUT, then HLT), so its exit counters are not zero.
type kvmVM struct {
	vm   *kvm.VM
	vcpu *kvm.VCPU
}

func newKVMVM(t *testing.T) kvmVM {
	t.Helper()
	sys, vm, mem := testenv.KVMWithMemory(t, 1<<16)
	if sys.CheckExtension(kvm.CapBinaryStatsFD) == 0 {
		t.Skip("KVM_CAP_BINARY_STATS_FD missing on this kernel")
	}
	const entry = 0x1000
	copy(mem[entry:], []byte{0xe6, 0x10, 0xf4}) // out 0x10, al; hlt
	v, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	sregs, err := v.GetSregs()
	if err != nil {
		t.Fatal(err)
	}
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	if err := v.SetSregs(sregs); err != nil {
		t.Fatal(err)
	}
	regs, err := v.GetRegs()
	if err != nil {
		t.Fatal(err)
	}
	regs.RIP = entry
	if err := v.SetRegs(regs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []kvm.ExitReason{kvm.ExitIO, kvm.ExitHLT} {
		if err := v.RunOnce(); err != nil {
			t.Fatal(err)
		}
		if got := v.Run.ExitReason; got != want {
			t.Fatalf("exit %v, want %v", got, want)
		}
	}
	return kvmVM{vm: vm, vcpu: v}
}

// newKernelStats opens the stats fds of a VM and its vCPU.
func newKernelStats(t *testing.T, k kvmVM) *KernelStats {
	t.Helper()
	vmStats, err := k.vm.StatsFD()
	if err != nil {
		t.Fatal(err)
	}
	vcpuStats, err := k.vcpu.StatsFD()
	if err != nil {
		vmStats.Close()
		t.Fatal(err)
	}
	ks := NewKernelStats(vmStats, []*kvm.StatsFile{vcpuStats})
	t.Cleanup(func() {
		if err := ks.Close(); err != nil {
			t.Error(err)
		}
	})
	return ks
}

func TestKernelStatsFromKVM(t *testing.T) {
	ks := newKernelStats(t, newKVMVM(t))
	s, err := ks.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.VCPUs) != 1 || s.VCPUs[0].ID != 0 || len(s.VCPUs[0].Stats) == 0 {
		t.Fatalf("vCPUs in the snapshot: %+v", s.VCPUs)
	}
	if len(s.VM) == 0 {
		t.Error("no VM-wide statistics")
	}
	var exits *KernelStat
	for i, st := range s.VCPUs[0].Stats {
		if st.Name == "exits" {
			exits = &s.VCPUs[0].Stats[i]
		}
		if st.IsHistogram() && len(st.Values) != st.Size {
			t.Errorf("%s: %d buckets, descriptor says %d", st.Name, len(st.Values), st.Size)
		}
	}
	if exits == nil {
		t.Fatalf("no \"exits\" among %d vCPU statistics", len(s.VCPUs[0].Stats))
	}
	if exits.Type != kvm.StatCumulative || exits.Value() < 2 {
		t.Errorf("exits = %d (%v), want a counter of at least the guest's 2 exits", exits.Value(), exits.Type)
	}
	if total, ok := s.VCPUTotal("exits"); !ok || total != exits.Value() {
		t.Errorf("VCPUTotal(exits) = %d, %v", total, ok)
	}

	var out bytes.Buffer
	if err := WriteKernelTable(&out, ks); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	lines := strings.Split(out.String(), "\n")
	if lines[0] != kernelTableTitle || !strings.HasPrefix(lines[1], "type") {
		t.Errorf("table starts %q", lines[:2])
	}
	found := false
	for _, l := range lines[2:] {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "exits" {
			found = true
		}
	}
	if !found {
		t.Errorf("table lacks an exits line:\n%s", out.String())
	}
}

func TestWriteKernelTableWithoutStats(t *testing.T) {
	var out bytes.Buffer
	if err := WriteKernelTable(&out, nil); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "not available") {
		t.Errorf("output %q, want one line saying the stats are not available", got)
	}
}

// A hand-made snapshot of two vCPUs: zero and non-cumulative stats are left
// out, vCPU columns appear, VM-wide counters get their own block.
func TestKernelSnapshotWriteTable(t *testing.T) {
	cum := func(name string, unit kvm.StatUnit, exp int16, v uint64) KernelStat {
		return KernelStat{StatDesc: kvm.StatDesc{Name: name, Type: kvm.StatCumulative, Unit: unit, Exponent: exp, Size: 1}, Values: []uint64{v}}
	}
	gauge := KernelStat{StatDesc: kvm.StatDesc{Name: "blocking", Type: kvm.StatInstant, Unit: kvm.UnitBoolean, Size: 1}, Values: []uint64{1}}
	s := KernelSnapshot{
		VM: []KernelStat{cum("remote_tlb_flush", kvm.UnitNone, 0, 3), cum("mmu_flooded", kvm.UnitNone, 0, 0)},
		VCPUs: []KernelVCPU{
			{ID: 0, Stats: []KernelStat{cum("exits", kvm.UnitNone, 0, 10), cum("halt_wait_ns", kvm.UnitSeconds, -9, 500), cum("pf_fixed", kvm.UnitNone, 0, 0), gauge}},
			{ID: 1, Stats: []KernelStat{cum("exits", kvm.UnitNone, 0, 5), cum("halt_wait_ns", kvm.UnitSeconds, -9, 0), cum("pf_fixed", kvm.UnitNone, 0, 0), gauge}},
		},
	}
	var out bytes.Buffer
	if err := s.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	want := kernelTableTitle + `
type          unit  total  vCPU 0  vCPU 1
exits         -        15      10       5
halt_wait_ns  ns      500     500       0

` + kernelTableTitle + `, VM-wide
type              unit  value
remote_tlb_flush  -         3
`
	if out.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestUnitLabel(t *testing.T) {
	tests := []struct {
		d    kvm.StatDesc
		want string
	}{
		{kvm.StatDesc{Unit: kvm.UnitNone}, "-"},
		{kvm.StatDesc{Unit: kvm.UnitSeconds, Exponent: -9}, "ns"},
		{kvm.StatDesc{Unit: kvm.UnitSeconds, Exponent: -6}, "us"},
		{kvm.StatDesc{Unit: kvm.UnitSeconds}, "s"},
		{kvm.StatDesc{Unit: kvm.UnitBytes}, "bytes"},
		{kvm.StatDesc{Unit: kvm.UnitBytes, Pow2: true, Exponent: 10}, "KiB"},
		{kvm.StatDesc{Unit: kvm.UnitBytes, Pow2: true, Exponent: 12}, "bytes*2^12"},
		{kvm.StatDesc{Unit: kvm.UnitCycles}, "cycles"},
		{kvm.StatDesc{Unit: kvm.UnitBoolean}, "bool"},
		{kvm.StatDesc{Unit: 9}, "StatUnit(9)"},
	}
	for _, tt := range tests {
		if got := unitLabel(tt.d); got != tt.want {
			t.Errorf("unitLabel(%+v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestKernelStatsNilAndClose(t *testing.T) {
	var ks *KernelStats
	if s, err := ks.Snapshot(); err != nil || len(s.VCPUs) != 0 {
		t.Errorf("nil Snapshot = %+v, %v", s, err)
	}
	if err := ks.Close(); err != nil {
		t.Error(err)
	}
}
