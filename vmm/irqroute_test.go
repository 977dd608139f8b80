package vmm

import (
	"testing"

	"github.com/govmm/govmm/kvm"
)

func TestDefaultIRQRoutes(t *testing.T) {
	routes := defaultIRQRoutes()
	if len(routes) != 40 {
		t.Fatalf("%d default routes, want KVM's 40", len(routes))
	}
	has := func(gsi, chip, pin uint32) bool {
		want := kvm.IRQChipRoute(gsi, chip, pin)
		for _, r := range routes {
			if r == want {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		gsi, chip, pin uint32
	}{
		{0, irqchipIOAPIC, 0}, {0, irqchipPICMaster, 0},
		{4, irqchipIOAPIC, 4}, {4, irqchipPICMaster, 4},
		{9, irqchipIOAPIC, 9}, {9, irqchipPICSlave, 1},
		{23, irqchipIOAPIC, 23},
	} {
		if !has(c.gsi, c.chip, c.pin) {
			t.Errorf("no route GSI %d -> chip %d pin %d", c.gsi, c.chip, c.pin)
		}
	}
}

// TestGSIRouter programs MSI routes on a real VM: the whole table (the
// irqchip's routes plus the MSIs) must be one KVM accepts.
func TestGSIRouter(t *testing.T) {
	needKVM(t)
	sys, err := kvm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	r := newGSIRouter(vm, true)
	a, err := r.NewVector()
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.NewVector()
	if err != nil {
		t.Fatal(err)
	}
	if ga, gb := a.(*irqfdVector).gsi, b.(*irqfdVector).gsi; ga != firstMSIGSI || gb != firstMSIGSI+1 {
		t.Errorf("GSIs %d, %d; want %d, %d", ga, gb, firstMSIGSI, firstMSIGSI+1)
	}
	if err := b.SetMessage(0xfee00000, 0x4041); err != nil {
		t.Fatal(err)
	}
	if err := a.SetMessage(0xfee00000, 0x4040); err != nil {
		t.Fatal(err)
	}
	if len(r.msi) != 2 {
		t.Errorf("%d MSI routes", len(r.msi))
	}
	// No vCPU: the MSI goes nowhere, but the path must work.
	if err := a.Fire(); err != nil {
		t.Error(err)
	}
	if err := a.Close(); err != nil {
		t.Error(err)
	}
	if len(r.msi) != 1 {
		t.Errorf("closed vector keeps its route: %d routes", len(r.msi))
	}
	b.Close()

	s := newGSIRouter(vm, false)
	v, err := s.NewVector()
	if err != nil {
		t.Fatal(err)
	}
	v.SetMessage(0xfee00000, 0x4040)
	// No vCPU has that APIC: dropped, as on hardware.
	if err := v.Fire(); err != nil && sys.CheckExtension(kvm.CapSignalMSI) != 0 {
		t.Errorf("KVM_SIGNAL_MSI to no destination: %v", err)
	}
}
