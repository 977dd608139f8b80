package vmm

import (
	"testing"

	"github.com/govmm/govmm/guests/tiny"
	"github.com/govmm/govmm/kvm"
)

// XSAVE layout (Intel SDM vol. 1, 13.4): the header's XSTATE_BV at byte
// 512, the upper halves of YMM0-15 (component 2) at byte 576.
const (
	xsaveXStateBV = 512 / 4
	xsaveYMMHi    = 576 / 4
	xstateAVX     = 1 << 2
)

// A reset puts the AVX state back as it was at power-on: KVM_SET_FPU
// reaches only x87 and SSE, so the upper halves of the YMM registers used
// to survive a reset in place.
func TestResetRestoresXSave(t *testing.T) {
	needKVM(t)
	vm, err := New(Config{Raw: &RawGuest{Code: tiny.HaltLoop16(), LoadAddr: tiny.LoadAddr}, MemSize: 2 << 20, CPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	k := vm.kcpus[0]
	if vm.kvm.CheckExtension(kvm.CapXSave) <= 0 {
		t.Skip("no KVM_CAP_XSAVE: KVM_SET_FPU is the whole FPU state")
	}
	boot, err := k.GetXSave()
	if err != nil {
		t.Fatal(err)
	}
	// What a guest leaves behind: YMM0's upper half set.
	used := *boot
	used.Region[xsaveXStateBV] |= xstateAVX
	for i := range 4 {
		used.Region[xsaveYMMHi+i] = 0xdeadbeef
	}
	if err := k.SetXSave(&used); err != nil {
		t.Skipf("KVM does not take AVX state for this guest: %v", err)
	}
	if got, err := k.GetXSave(); err != nil || got.Region[xsaveYMMHi] != 0xdeadbeef {
		t.Skipf("the AVX state did not stick (%v): no AVX for this guest", err)
	}
	if err := vm.restoreBootState(); err != nil {
		t.Fatal(err)
	}
	after, err := k.GetXSave()
	if err != nil {
		t.Fatal(err)
	}
	if after.Region[xsaveYMMHi] != boot.Region[xsaveYMMHi] || after.Region[xsaveXStateBV] != boot.Region[xsaveXStateBV] {
		t.Errorf("after a reset YMM0's upper half is %#x (XSTATE_BV %#x), at power-on %#x (%#x)",
			after.Region[xsaveYMMHi], after.Region[xsaveXStateBV], boot.Region[xsaveYMMHi], boot.Region[xsaveXStateBV])
	}
}
