package vmm

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
)

// A machine reset (system_reset, a guest reboot) keeps the KVM VM, its
// vCPUs and devices, and puts them back in the state New left them in:
// each vCPU's registers, MSRs, LAPIC and MP state, the in-kernel PIC,
// IOAPIC and PIT as they were before the first run, devices reset, guest
// RAM dropped (zero pages) and the kernel, initrd and tables loaded again.
// There is no KVM ioctl that resets a vCPU: what New set up is read back
// once, before the guest runs, and written again on every reset.

// vcpuBootState is one vCPU's state before the guest first ran.
type vcpuBootState struct {
	regs   kvm.Regs
	sregs  kvm.Sregs
	fpu    kvm.FPU
	msrs   []kvm.MSR // every MSR of KVM's index list that it let us read
	events kvm.VCPUEvents
	mp     uint32
	lapic  *kvm.LAPICState // nil without an in-kernel irqchip
	xcrs   *kvm.XCRs       // nil without KVM_CAP_XCRS
	xsave  *kvm.XSave      // nil without KVM_CAP_XSAVE
	debug  *kvm.DebugRegs  // nil without KVM_CAP_DEBUGREGS
}

// unlistedMSRs are MSRs through which a guest hands the host a page of
// its memory, missing from KVM_GET_MSR_INDEX_LIST, that must be reset
// too: PVM's VIF page (kvm_pvm, ../shared/guest/HOST-ABI.md). Left
// registered, the host keeps using the old kernel's page after a reset
// and the new kernel never gets going (measured: no exit at all after the
// reset). Where KVM does not know an MSR, reading it fails and it is
// skipped.
var unlistedMSRs = []uint32{0x4b564d10}

// machineBootState is the whole machine's.
type machineBootState struct {
	vcpus  []vcpuBootState
	chips  []kvm.IRQChipState // PIC slave, PIC master, IOAPIC: restore order; nil without irqchip
	pit    *kvm.PITState2
	loaded bool // New has loaded the guest image once; what loads now is a reset
}

// saveBootState records the state a reset returns to. It runs after the
// vCPUs are set up and before the guest image is loaded (which a reset
// repeats), so vCPU 0's entry registers come from the loader both times.
func (v *VM) saveBootState(irqchip bool) error {
	msrIndex, err := v.sys.MSRIndexList()
	if err != nil {
		return err
	}
	for _, m := range unlistedMSRs {
		if !slices.Contains(msrIndex, m) {
			msrIndex = append(msrIndex, m)
		}
	}
	for _, k := range v.kcpus {
		var s vcpuBootState
		if s.regs, err = k.GetRegs(); err != nil {
			return err
		}
		if s.sregs, err = k.GetSregs(); err != nil {
			return err
		}
		if s.fpu, err = k.GetFPU(); err != nil {
			return err
		}
		if s.events, err = k.GetVCPUEvents(); err != nil {
			return err
		}
		if s.mp, err = k.MPState(); err != nil {
			return err
		}
		if s.msrs, err = readAllMSRs(k, msrIndex); err != nil {
			return err
		}
		if irqchip {
			l, err := k.GetLAPIC()
			if err != nil {
				return err
			}
			s.lapic = &l
		}
		if v.kvm.CheckExtension(kvm.CapXCRs) > 0 {
			x, err := k.GetXCRs()
			if err != nil {
				return err
			}
			s.xcrs = &x
		}
		if v.kvm.CheckExtension(kvm.CapXSave) > 0 {
			if s.xsave, err = k.GetXSave(); err != nil {
				return err
			}
		}
		if v.kvm.CheckExtension(kvm.CapDebugRegs) > 0 {
			d, err := k.GetDebugRegs()
			if err != nil {
				return err
			}
			s.debug = &d
		}
		v.boot.vcpus = append(v.boot.vcpus, s)
	}
	if irqchip {
		// Saved in the order restoreBootState restores them (see there).
		for _, chip := range []uint32{kvm.IRQChipPICSlave, kvm.IRQChipPICMaster, kvm.IRQChipIOAPIC} {
			c, err := v.kvm.GetIRQChip(chip)
			if err != nil {
				return err
			}
			v.boot.chips = append(v.boot.chips, c)
		}
		p, err := v.kvm.GetPIT2()
		if err != nil {
			return err
		}
		v.boot.pit = &p
	}
	return nil
}

// readAllMSRs reads every MSR of index that KVM lets user space read,
// skipping the ones it refuses (KVM stops a batch at the first refusal).
func readAllMSRs(k *kvm.VCPU, index []uint32) ([]kvm.MSR, error) {
	all := make([]kvm.MSR, len(index))
	for i, idx := range index {
		all[i].Index = idx
	}
	var out []kvm.MSR
	for len(all) > 0 {
		n, err := k.ReadMSRs(all)
		if err != nil {
			return nil, err
		}
		out = append(out, all[:n]...)
		all = all[min(n+1, len(all)):] // past the refused one
	}
	return out, nil
}

// writeAllMSRs writes msrs, skipping any KVM refuses (a read-only MSR).
func writeAllMSRs(k *kvm.VCPU, msrs []kvm.MSR) error {
	for len(msrs) > 0 {
		n, err := k.WriteMSRs(msrs)
		if err != nil {
			return err
		}
		msrs = msrs[min(n+1, len(msrs)):]
	}
	return nil
}

// restoreBootState puts every vCPU and the in-kernel irqchip and PIT back
// as saveBootState found them. The vCPUs must not be running.
func (v *VM) restoreBootState() error {
	for i, k := range v.kcpus {
		s := &v.boot.vcpus[i]
		// sregs carry the APIC base, which must be right before the
		// LAPIC page is written; MSRs before registers, since writing
		// EFER-related MSRs could otherwise undo the sregs' mode.
		if err := k.SetSregs(s.sregs); err != nil {
			return err
		}
		if err := writeAllMSRs(k, s.msrs); err != nil {
			return err
		}
		if err := k.SetSregs(s.sregs); err != nil {
			return err
		}
		if err := k.SetRegs(s.regs); err != nil {
			return err
		}
		if err := k.SetFPU(s.fpu); err != nil {
			return err
		}
		if s.xcrs != nil {
			if err := k.SetXCRs(*s.xcrs); err != nil {
				return err
			}
		}
		// After XCR0, which bounds the components it may load: the
		// AVX and later state KVM_SET_FPU does not reach.
		if s.xsave != nil {
			if err := k.SetXSave(s.xsave); err != nil {
				return err
			}
		}
		if s.debug != nil {
			if err := k.SetDebugRegs(*s.debug); err != nil {
				return err
			}
		}
		if s.lapic != nil {
			if err := k.SetLAPIC(*s.lapic); err != nil {
				return err
			}
		}
		if err := k.SetMPState(s.mp); err != nil {
			return err
		}
		if err := k.SetVCPUEvents(s.events); err != nil {
			return err
		}
	}
	// The slave PIC before the master: restoring a PIC makes KVM compute
	// the cascade (the master's IRQ 2) from the slave as it is then, and
	// the old guest's slave may hold a latched IRQ (a power button press
	// Linux never took from the 8259). Restored first, the master kept
	// IRQ 2 pending and the next boot took vector 7 at its first sti.
	for _, c := range v.boot.chips { // slave, master, IOAPIC
		if err := v.kvm.SetIRQChip(c); err != nil {
			return err
		}
	}
	if v.boot.pit != nil {
		if err := v.kvm.SetPIT2(*v.boot.pit); err != nil {
			return err
		}
	}
	return nil
}

// zero makes guest RAM read zeros. Private anonymous RAM drops its pages
// (MADV_DONTNEED), giving the host the memory back. The huge pages of a
// --mem-path file are cleared in place instead: dropping them would only
// lose the mapping's view of the file, and removing them from the file
// (MADV_REMOVE) gives up their reservation too, so a pool that another
// process drained meanwhile leaves the guest faulting for ever on a page
// that never comes (found by an audit: the guest hung after a reset).
// QEMU keeps guest RAM's pages across a reset as well.
func (m *Memory) zero() error {
	if m.shared {
		return m.clearResident()
	}
	if err := unix.Madvise(m.b, unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("drop guest memory: %w", err)
	}
	return nil
}

// clearResident zeroes the pages of RAM that are backed; the others read
// zeros already, and touching them would only spend time.
func (m *Memory) clearResident() error {
	vec, page, err := m.residency()
	if err != nil {
		return fmt.Errorf("clear guest memory: %w", err)
	}
	for i, v := range vec {
		if v&1 != 0 {
			clear(m.b[i*page : min((i+1)*page, len(m.b))])
		}
	}
	return nil
}
