package kvm

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// System is an open /dev/kvm.
type System struct {
	fd       int
	mmapSize int // size of each vCPU's kvm_run mapping
}

// Open opens /dev/kvm and checks the API version.
func Open() (*System, error) {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/kvm: %w", err)
	}
	s := &System{fd: fd}
	v, err := ioctl(fd, reqGetAPIVersion, 0)
	if err != nil || v != APIVersion {
		s.Close()
		return nil, fmt.Errorf("/dev/kvm: API version %d (%v), want %d", v, err, APIVersion)
	}
	n, err := ioctl(fd, reqGetVCPUMmapSize, 0)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	s.mmapSize = int(n)
	return s, nil
}

// Close closes /dev/kvm; VMs created from it stay usable.
func (s *System) Close() error { return unix.Close(s.fd) }

// CheckExtension returns KVM_CHECK_EXTENSION for c on /dev/kvm: 0 when the
// capability is absent, otherwise a capability-specific positive value.
func (s *System) CheckExtension(c Cap) int {
	r, err := ioctl(s.fd, reqCheckExtension, uintptr(c))
	if err != nil {
		return 0
	}
	return int(r)
}

// SupportedCPUID returns the CPUID entries KVM can expose to a guest.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	c := &cpuid2{NEnt: maxCPUIDEntries}
	if _, err := ioctlPtr(s.fd, reqGetSupportedCPUID, unsafe.Pointer(c)); err != nil {
		return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
	}
	if c.NEnt > maxCPUIDEntries {
		return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %d entries", c.NEnt)
	}
	return append([]CPUIDEntry(nil), c.Entries[:c.NEnt]...), nil
}

// MSRIndexList returns the MSRs KVM saves and restores for a vCPU.
func (s *System) MSRIndexList() ([]uint32, error) {
	var l struct {
		N       uint32
		Indices [1024]uint32
	}
	l.N = uint32(len(l.Indices))
	if _, err := ioctlPtr(s.fd, reqGetMSRIndexList, unsafe.Pointer(&l)); err != nil {
		return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %w", err)
	}
	if l.N > uint32(len(l.Indices)) {
		return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %d entries", l.N)
	}
	return append([]uint32(nil), l.Indices[:l.N]...), nil
}

// CreateVM creates a VM of the default type.
func (s *System) CreateVM() (*VM, error) {
	var fd uintptr
	var err error
	// A signal (Go's preemption SIGURG) can interrupt VM creation before
	// anything was created; retrying is what QEMU does too. Only here:
	// KVM_RUN's EINTR is information for the vCPU loop.
	for {
		fd, err = ioctl(s.fd, reqCreateVM, 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	unix.CloseOnExec(int(fd))
	return &VM{fd: int(fd), sys: s}, nil
}
