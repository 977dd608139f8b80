package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/nbsys"
	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/virtio"
)

// Irqchip numbers of KVM routing entries (KVM_IRQCHIP_*).
const (
	irqchipPICMaster = 0
	irqchipPICSlave  = 1
	irqchipIOAPIC    = 2
)

// GSIs: 0-23 are the in-kernel irqchip's pins; MSI vectors get GSIs from
// 24 up, as in kvmtool and Firecracker. The Go routing table holds 1024
// entries (KVM allows 4096 GSIs): 40 of them are the irqchip's.
const (
	firstMSIGSI = 24
	maxGSI      = 1024 - 40 + firstMSIGSI
)

// gsiRouter owns the VM's GSI routing table. KVM_SET_GSI_ROUTING replaces
// the whole table, so the irqchip routes KVM installs by default
// (kvm_setup_default_irq_routing) and every MSI route live here and are
// written together; nothing else in govmm may call SetGSIRouting. It
// implements virtio.MSIController.
type gsiRouter struct {
	vm *kvm.VM
	// irqfd selects the fast path: each vector is a GSI with an MSI route
	// and an irqfd, so an interrupt is one eventfd write that KVM turns
	// into an MSI in the kernel. Without it every interrupt is a
	// KVM_SIGNAL_MSI ioctl and no routes are needed.
	irqfd bool

	mu   sync.Mutex
	next uint32                      // next free GSI
	msi  map[uint32]kvm.RoutingEntry // GSI -> its MSI route, once programmed
}

func newGSIRouter(vm *kvm.VM, irqfd bool) *gsiRouter {
	return &gsiRouter{vm: vm, irqfd: irqfd, next: firstMSIGSI, msi: map[uint32]kvm.RoutingEntry{}}
}

// defaultIRQRoutes is KVM's default x86 table: GSIs 0-15 to both the PIC
// (master for 0-7, slave for 8-15) and the IOAPIC pin of the same number,
// GSIs 16-23 to the IOAPIC only. Legacy devices (the UART, the PIT)
// depend on it once a routing table of our own replaces the default.
func defaultIRQRoutes() []kvm.RoutingEntry {
	var r []kvm.RoutingEntry
	for gsi := uint32(0); gsi < 24; gsi++ {
		r = append(r, kvm.IRQChipRoute(gsi, irqchipIOAPIC, gsi))
		if gsi < 8 {
			r = append(r, kvm.IRQChipRoute(gsi, irqchipPICMaster, gsi))
		} else if gsi < 16 {
			r = append(r, kvm.IRQChipRoute(gsi, irqchipPICSlave, gsi-8))
		}
	}
	return r
}

// commit writes the whole table; mu must be held. Routes are ordered by
// GSI so the table is the same for the same state.
func (r *gsiRouter) commit() error {
	routes := defaultIRQRoutes()
	for gsi := uint32(firstMSIGSI); gsi < r.next; gsi++ {
		if e, ok := r.msi[gsi]; ok {
			routes = append(routes, e)
		}
	}
	return r.vm.SetGSIRouting(routes)
}

// NewVector implements virtio.MSIController.
func (r *gsiRouter) NewVector() (virtio.MSIVector, error) {
	if !r.irqfd {
		return &signalVector{vm: r.vm}, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next >= maxGSI {
		return nil, fmt.Errorf("out of GSIs for MSI (%d in use)", r.next-firstMSIGSI)
	}
	// Non-blocking: a write never waits (KVM drains the counter at
	// once; a full counter would mean the interrupt is pending anyway).
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("irqfd eventfd: %w", err)
	}
	gsi := r.next
	// Bound before the GSI has a route: KVM looks the route up at
	// injection time, and commit refreshes bound irqfds.
	if err := r.vm.IRQFD(efd, gsi); err != nil {
		unix.Close(efd)
		return nil, err
	}
	r.next++
	return &irqfdVector{r: r, gsi: gsi, efd: efd}, nil
}

// irqfdVector is an MSI vector delivered through an irqfd.
type irqfdVector struct {
	r   *gsiRouter
	gsi uint32
	efd int
}

var eventfdOne = binary.LittleEndian.AppendUint64(nil, 1)

func (v *irqfdVector) SetMessage(addr uint64, data uint32) error {
	v.r.mu.Lock()
	defer v.r.mu.Unlock()
	old, had := v.r.msi[v.gsi]
	v.r.msi[v.gsi] = kvm.MSIRoute(v.gsi, addr, data)
	if err := v.r.commit(); err != nil {
		if had {
			v.r.msi[v.gsi] = old
		} else {
			delete(v.r.msi, v.gsi)
		}
		return err
	}
	return nil
}

func (v *irqfdVector) Fire() error {
	_, err := nbsys.Write(v.efd, eventfdOne)
	if errors.Is(err, unix.EAGAIN) {
		return nil // the counter is full: an interrupt is pending anyway
	}
	if err != nil {
		return fmt.Errorf("irqfd write (GSI %d): %w", v.gsi, err)
	}
	return nil
}

// Close releases the eventfd; KVM drops the irqfd when it sees the
// eventfd go away. The GSI stays allocated (GSIs are not reused).
func (v *irqfdVector) Close() error {
	v.r.mu.Lock()
	delete(v.r.msi, v.gsi)
	v.r.mu.Unlock()
	if v.efd < 0 {
		return nil
	}
	err := unix.Close(v.efd)
	v.efd = -1
	return err
}

// signalVector sends each interrupt with KVM_SIGNAL_MSI (--no-irqfd).
type signalVector struct {
	vm   *kvm.VM
	mu   sync.Mutex
	addr uint64
	data uint32
}

func (v *signalVector) SetMessage(addr uint64, data uint32) error {
	v.mu.Lock()
	v.addr, v.data = addr, data
	v.mu.Unlock()
	return nil
}

func (v *signalVector) Fire() error {
	v.mu.Lock()
	addr, data := v.addr, v.data
	v.mu.Unlock()
	err := v.vm.SignalMSI(addr, data)
	if errors.Is(err, unix.EPERM) {
		// KVM's -1: no local APIC matches the message's destination.
		// Hardware drops such a message, and so does the irqfd path.
		return nil
	}
	return err
}

func (v *signalVector) Close() error { return nil }
