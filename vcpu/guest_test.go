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
// tiny.LoadAddr, with a portCounter on testPort and exit statistics on.
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
	cfg := Config{IO: io, MMIO: devices.NewBus("mmio"), Stats: reg.NewVCPU(0), Registry: reg, SyncRegs: true}
	return New(k, cfg, vm.CheckExtension(kvm.CapSyncRegs)), dev
}
