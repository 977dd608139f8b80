package vcpu

import (
	"sync/atomic"
	"testing"

	"github.com/govmm/govmm/devices"
	"github.com/govmm/govmm/exitstats"
	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/internal/testenv"
	"github.com/govmm/govmm/kvm"
)

// testPort is where the tiny guests' OUT loops write.
const testPort = 0x10

// portCounter counts guest accesses to testPort; reads return in.
type portCounter struct {
	n  atomic.Uint64
	in atomic.Uint32 // the byte reads return
}

func (c *portCounter) Read(off uint64, data []byte) {
	v := c.in.Load()
	for i := range data {
		data[i] = byte(v)
	}
	c.n.Add(1)
}

func (c *portCounter) Write(off uint64, data []byte) { c.n.Add(1) }

// newGuestVCPU builds a one-vCPU VM running code in real mode at
// tiny.LoadAddr, with a portCounter on testPort and exit statistics on
// (the top RIPs too).
// With irqchip the VM has an in-kernel irqchip, so HLT waits in KVM
// instead of exiting. It skips the test where /dev/kvm is absent.
func newGuestVCPU(t *testing.T, code []byte, irqchip bool) (*VCPU, *portCounter) {
	t.Helper()
	sys, vm, mem := testenv.KVMWithMemory(t, 2<<20)
	copy(mem[tiny.LoadAddr:], code)
	if irqchip {
		// Where the vmm package puts them, out of the guest's way.
		if err := vm.SetTSSAddr(0xfffbd000); err != nil {
			t.Fatal(err)
		}
		if err := vm.SetIdentityMapAddr(0xfffbc000); err != nil {
			t.Fatal(err)
		}
		if err := vm.CreateIRQChip(); err != nil {
			t.Fatal(err)
		}
	}
	k, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if err := k.SetCPUID(cpuid); err != nil {
		t.Fatal(err)
	}
	s, err := k.GetSregs()
	if err != nil {
		t.Fatal(err)
	}
	for _, seg := range []*kvm.Segment{&s.CS, &s.DS, &s.ES, &s.FS, &s.GS, &s.SS} {
		seg.Base, seg.Selector = 0, 0
	}
	if err := k.SetSregs(s); err != nil {
		t.Fatal(err)
	}
	if err := k.SetRegs(kvm.Regs{RIP: tiny.LoadAddr, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	io := devices.NewBus("io")
	dev := &portCounter{}
	if _, err := io.Register("test", testPort, 1, dev); err != nil {
		t.Fatal(err)
	}
	reg := exitstats.NewRegistry()
	reg.TrackRIPs()
	cfg := Config{IO: io, MMIO: devices.NewBus("mmio"), Stats: reg.NewVCPU(0), Registry: reg, SyncRegs: true}
	return New(k, cfg, vm.CheckExtension(kvm.CapSyncRegs)), dev
}

// Each exit is charged to the RIP of the instruction that made it: the
// top RIPs of the port's row are exactly IOSites16's three I/O
// instructions, each with its exact count.
func TestExitRIPs(t *testing.T) {
	const outs, pairs = 10, 3
	v, dev := newGuestVCPU(t, tiny.IOSites16(testPort, outs, pairs), false)
	if reason, err := v.Run(); reason != Halted || err != nil {
		t.Fatalf("Run = %v, %v; want halted", reason, err)
	}
	if n := dev.n.Load(); n != outs+2*pairs {
		t.Fatalf("%d port accesses, want %d", n, outs+2*pairs)
	}
	row, ok := rowNamed(v.cfg.Registry.Snapshot().VCPUs[0], "IO:test")
	if !ok {
		t.Fatal("no IO:test row")
	}
	// An OUT that KVM's emulator ran exits with RIP past it; one on the
	// VT-x fast path, and every IN, with RIP on it.
	want := []struct {
		name     string
		at, len  uint64
		count    uint64
		onlyAtIt bool
	}{
		{"out imm8", tiny.OutImmAt, tiny.OutImmLen, outs, false},
		{"in", tiny.InAt, 0, pairs, true},
		{"out dx", tiny.OutDXAt, tiny.OutDXLen, pairs, false},
	}
	if len(row.TopRIPs) != len(want) {
		t.Fatalf("top RIPs %+v, want the %d I/O instructions", row.TopRIPs, len(want))
	}
	t.Logf("top RIPs %+v", row.TopRIPs)
	for _, w := range want {
		found := false
		for _, r := range row.TopRIPs {
			if r.RIP != w.at && (w.onlyAtIt || r.RIP != w.at+w.len) {
				continue
			}
			found = true
			if r.Count != w.count || !r.Exact() {
				t.Errorf("%s at %#x: %+v, want exactly %d exits", w.name, w.at, r, w.count)
			}
		}
		if !found {
			t.Errorf("%s at %#x: not among the top RIPs %+v", w.name, w.at, row.TopRIPs)
		}
	}
}

func rowNamed(v exitstats.VCPUSnapshot, name string) (exitstats.Row, bool) {
	for _, r := range v.Rows {
		if r.Name == name {
			return r, true
		}
	}
	return exitstats.Row{}, false
}

// A vCPU stopped and rearmed (a machine reset) enters the guest at once:
// the Stop's immediate_exit used to make its first entry return EINTR
// before the guest ran, an INTR exit in the table for every reset.
func TestRearmRecordsNoExit(t *testing.T) {
	v, dev := newGuestVCPU(t, tiny.IOSites16(testPort, 10, 3), false)
	v.Stop()
	if reason, err := v.Run(); reason != Stopped || err != nil {
		t.Fatalf("Run after Stop = %v, %v; want stopped", reason, err)
	}
	v.Stop() // once more after Run returned, as a VM's end and its reset both ask
	v.Rearm()
	if reason, err := v.Run(); reason != Halted || err != nil {
		t.Fatalf("Run after Rearm = %v, %v; want halted", reason, err)
	}
	if n := dev.n.Load(); n != 16 {
		t.Fatalf("%d port accesses, want 16", n)
	}
	if row, ok := rowNamed(v.cfg.Registry.Snapshot().VCPUs[0], "INTR"); ok && row.Count > 0 {
		t.Errorf("%d INTR exits at %+v after a rearm: the guest never ran into one", row.Count, row.TopRIPs)
	}
}
