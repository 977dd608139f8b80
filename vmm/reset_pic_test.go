package vmm

import (
	"testing"

	"github.com/govmm/govmm/kvm"
)

// A reset leaves no interrupt pending in the PICs. The chips used to be
// restored master first: KVM recomputes the cascade (master IRQ 2) from
// the slave, which still held the old guest's state, so an IRQ latched in
// the slave (the power button's GSI 9, pressed while Linux ignored the
// 8259) left IRQ 2 pending in the power-on master, whose vector base is 0.
// The next boot took vector 7 (the slave's spurious IRQ, slave now empty)
// at its first sti: "Oops: unexpected #NM exception", panic, reset. Found
// by the chaos harness: every system_reset after a system_powerdown the
// guest ignored booted twice.
func TestResetLeavesNoPICInterrupt(t *testing.T) {
	vm, err := New(Config{Kernel: needGuest(t, "vmlinux"), Initrd: initramfs, Cmdline: DefaultCmdline,
		MemSize: 256 << 20, CPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	// The power-on PICs have every IRQ unmasked: the edge is latched in
	// the slave and cascaded to the master, as a guest would leave it.
	if err := vm.PressPowerButton(); err != nil {
		t.Fatal(err)
	}
	if err := vm.restoreBootState(); err != nil {
		t.Fatal(err)
	}
	for i, chip := range []uint32{kvm.IRQChipPICMaster, kvm.IRQChipPICSlave} {
		c, err := vm.kvm.GetIRQChip(chip)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := vm.boot.chipState(chip)
		// struct kvm_pic_state: last_irr, irr, imr, isr, ...
		if c.Raw[1] != want.Raw[1] || c.Raw[3] != want.Raw[3] {
			t.Errorf("PIC %d after reset: irr %#02x isr %#02x, want %#02x %#02x as at power-on", i, c.Raw[1], c.Raw[3], want.Raw[1], want.Raw[3])
		}
	}
}

// chipState is the saved power-on state of one in-kernel interrupt
// controller (kvm.IRQChip*), false without an irqchip.
func (b *machineBootState) chipState(chip uint32) (kvm.IRQChipState, bool) {
	for _, c := range b.chips {
		if c.ChipID == chip {
			return c, true
		}
	}
	return kvm.IRQChipState{}, false
}
