package kvm

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine file descriptor.
type VM struct {
	fd  int
	sys *System
}

// Close closes the VM fd. vCPU fds keep the VM alive until they close too.
func (vm *VM) Close() error { return unix.Close(vm.fd) }

// CheckExtension asks the VM fd, whose answer can differ from the system's.
func (vm *VM) CheckExtension(c Cap) int {
	r, err := ioctl(vm.fd, reqCheckExtension, uintptr(c))
	if err != nil {
		return 0
	}
	return int(r)
}

// SetUserMemoryRegion maps mem at guest physical address gpa in slot.
func (vm *VM) SetUserMemoryRegion(slot uint32, gpa uint64, mem []byte) error {
	if len(mem) == 0 {
		return fmt.Errorf("memory slot %d: empty region", slot)
	}
	r := UserspaceMemoryRegion{Slot: slot, GuestPhysAddr: gpa, MemorySize: uint64(len(mem)), UserspaceAddr: addressOf(mem)}
	if _, err := ioctlPtr(vm.fd, reqSetUserMemRegion, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION slot %d at %#x (+%#x): %w", slot, gpa, len(mem), err)
	}
	return nil
}

// SetTSSAddr places the three pages Intel VMX needs for real-mode emulation.
func (vm *VM) SetTSSAddr(addr uint32) error {
	if _, err := ioctl(vm.fd, reqSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("KVM_SET_TSS_ADDR: %w", err)
	}
	return nil
}

// SetIdentityMapAddr places the EPT identity-map page.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	if _, err := ioctlPtr(vm.fd, reqSetIdentityMapAddr, unsafe.Pointer(&addr)); err != nil {
		return fmt.Errorf("KVM_SET_IDENTITY_MAP_ADDR: %w", err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC, IOAPIC and local APICs.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctl(vm.fd, reqCreateIRQChip, 0); err != nil {
		return fmt.Errorf("KVM_CREATE_IRQCHIP: %w", err)
	}
	return nil
}

// CreatePIT2 creates the in-kernel i8254 PIT.
func (vm *VM) CreatePIT2() error {
	var c pitConfig
	if _, err := ioctlPtr(vm.fd, reqCreatePIT2, unsafe.Pointer(&c)); err != nil {
		return fmt.Errorf("KVM_CREATE_PIT2: %w", err)
	}
	return nil
}

// IRQLine sets the level of an in-kernel irqchip input (a GSI).
func (vm *VM) IRQLine(gsi uint32, high bool) error {
	l := irqLevel{IRQ: gsi}
	if high {
		l.Level = 1
	}
	if _, err := ioctlPtr(vm.fd, reqIRQLine, unsafe.Pointer(&l)); err != nil {
		return fmt.Errorf("KVM_IRQ_LINE %d: %w", gsi, err)
	}
	return nil
}

// GetIRQChip reads the state of in-kernel interrupt controller chip
// (IRQChipPICMaster, IRQChipPICSlave, IRQChipIOAPIC).
func (vm *VM) GetIRQChip(chip uint32) (IRQChipState, error) {
	s := IRQChipState{ChipID: chip}
	if _, err := ioctlPtr(vm.fd, reqGetIRQChip, unsafe.Pointer(&s)); err != nil {
		return s, fmt.Errorf("KVM_GET_IRQCHIP %d: %w", chip, err)
	}
	return s, nil
}

// SetIRQChip writes the state of the chip s.ChipID.
func (vm *VM) SetIRQChip(s IRQChipState) error {
	if _, err := ioctlPtr(vm.fd, reqSetIRQChip, unsafe.Pointer(&s)); err != nil {
		return fmt.Errorf("KVM_SET_IRQCHIP %d: %w", s.ChipID, err)
	}
	return nil
}

// GetPIT2 reads the in-kernel PIT's state.
func (vm *VM) GetPIT2() (PITState2, error) {
	var s PITState2
	if _, err := ioctlPtr(vm.fd, reqGetPIT2, unsafe.Pointer(&s)); err != nil {
		return s, fmt.Errorf("KVM_GET_PIT2: %w", err)
	}
	return s, nil
}

// SetPIT2 writes the in-kernel PIT's state.
func (vm *VM) SetPIT2(s PITState2) error {
	if _, err := ioctlPtr(vm.fd, reqSetPIT2, unsafe.Pointer(&s)); err != nil {
		return fmt.Errorf("KVM_SET_PIT2: %w", err)
	}
	return nil
}

// SignalMSI injects one MSI message.
func (vm *VM) SignalMSI(addr uint64, data uint32) error {
	m := msi{AddressLo: uint32(addr), AddressHi: uint32(addr >> 32), Data: data}
	if _, err := ioctlPtr(vm.fd, reqSignalMSI, unsafe.Pointer(&m)); err != nil {
		return fmt.Errorf("KVM_SIGNAL_MSI: %w", err)
	}
	return nil
}

// SetGSIRouting replaces the whole GSI routing table.
func (vm *VM) SetGSIRouting(routes []RoutingEntry) error {
	if len(routes) > maxRoutes {
		return fmt.Errorf("KVM_SET_GSI_ROUTING: %d routes, at most %d", len(routes), maxRoutes)
	}
	t := &irqRouting{NR: uint32(len(routes))}
	copy(t.Entries[:], routes)
	if _, err := ioctlPtr(vm.fd, reqSetGSIRouting, unsafe.Pointer(t)); err != nil {
		return fmt.Errorf("KVM_SET_GSI_ROUTING: %w", err)
	}
	return nil
}

// IRQFD makes a write to eventfd efd raise gsi inside the kernel.
func (vm *VM) IRQFD(efd int, gsi uint32) error {
	f := irqfd{FD: uint32(efd), GSI: gsi}
	if _, err := ioctlPtr(vm.fd, reqIRQFD, unsafe.Pointer(&f)); err != nil {
		return fmt.Errorf("KVM_IRQFD gsi %d: %w", gsi, err)
	}
	return nil
}

// IOEventFD makes a guest write of length size at addr signal eventfd efd
// instead of exiting to user space. pio selects port I/O over MMIO;
// datamatch, when non-nil, restricts it to writes of that value.
func (vm *VM) IOEventFD(efd int, addr uint64, size uint32, pio bool, datamatch *uint64) error {
	return vm.ioEventFD(efd, addr, size, pio, datamatch, 0)
}

// IOEventFDDeassign undoes IOEventFD; the arguments must match the
// assignment exactly.
func (vm *VM) IOEventFDDeassign(efd int, addr uint64, size uint32, pio bool, datamatch *uint64) error {
	return vm.ioEventFD(efd, addr, size, pio, datamatch, ioeventfdDeassign)
}

func (vm *VM) ioEventFD(efd int, addr uint64, size uint32, pio bool, datamatch *uint64, flags uint32) error {
	e := ioeventfd{Addr: addr, Len: size, FD: int32(efd), Flags: flags}
	if pio {
		e.Flags |= ioeventfdPIO
	}
	if datamatch != nil {
		e.Flags |= ioeventfdDatamatch
		e.Datamatch = *datamatch
	}
	if _, err := ioctlPtr(vm.fd, reqIOEventFD, unsafe.Pointer(&e)); err != nil {
		op := "KVM_IOEVENTFD"
		if flags&ioeventfdDeassign != 0 {
			op += " deassign"
		}
		return fmt.Errorf("%s at %#x: %w", op, addr, err)
	}
	return nil
}

// EnableCap enables a VM capability with up to four arguments.
func (vm *VM) EnableCap(c Cap, args ...uint64) error {
	return enableCapOn(vm.fd, c, args)
}

func enableCapOn(fd int, c Cap, args []uint64) error {
	e := enableCap{Cap: uint32(c)}
	if len(args) > len(e.Args) {
		return fmt.Errorf("KVM_ENABLE_CAP %d: %d arguments, at most %d", c, len(args), len(e.Args))
	}
	copy(e.Args[:], args)
	if _, err := ioctlPtr(fd, reqEnableCap, unsafe.Pointer(&e)); err != nil {
		return fmt.Errorf("KVM_ENABLE_CAP %d: %w", c, err)
	}
	return nil
}

// StatsFD returns the VM's binary statistics fd (KVM_GET_STATS_FD).
func (vm *VM) StatsFD() (*StatsFile, error) { return openStats(vm.fd) }

// CreateVCPU creates vCPU id and maps its kvm_run page.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctl(vm.fd, reqCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	unix.CloseOnExec(int(fd))
	mem, run, err := mmapRun(int(fd), vm.sys.mmapSize)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("mmap kvm_run of vCPU %d: %w", id, err)
	}
	return &VCPU{fd: int(fd), ID: id, runMem: mem, Run: run}, nil
}
