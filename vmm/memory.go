package vmm

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
)

// Memory is guest RAM: one anonymous mapping, guest physical address 0 at
// index 0. Pages are only backed once touched (MAP_NORESERVE), so a large
// --mem costs nothing until the guest uses it.
type Memory struct {
	b []byte
}

func newMemory(size uint64) (*Memory, error) {
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("map %d MiB of guest memory: %w", size>>20, err)
	}
	return &Memory{b: b}, nil
}

func (m *Memory) register(vm *kvm.VM) error { return vm.SetUserMemoryRegion(0, 0, m.b) }

// Size is the guest RAM size in bytes.
func (m *Memory) Size() uint64 { return uint64(len(m.b)) }

// Slice returns n bytes of guest memory at gpa, or an error when any part
// of the range is outside RAM. Devices use it for every guest address.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	size := uint64(len(m.b))
	if gpa > size || n > size-gpa {
		return nil, fmt.Errorf("guest range %#x+%#x outside RAM (%#x bytes)", gpa, n, size)
	}
	return m.b[gpa : gpa+n : gpa+n], nil
}

func (m *Memory) close() error {
	if m.b == nil {
		return nil
	}
	err := unix.Munmap(m.b)
	m.b = nil
	return err
}

// Resident returns how many bytes of guest RAM are backed by host memory:
// the part of the VMM's RSS that is the guest's, not the VMM's own.
func (m *Memory) Resident() (uint64, error) {
	page := uint64(unix.Getpagesize())
	vec := make([]byte, (uint64(len(m.b))+page-1)/page)
	if err := mincore(m.b, vec); err != nil {
		return 0, fmt.Errorf("mincore guest memory: %w", err)
	}
	var n uint64
	for _, v := range vec {
		n += uint64(v & 1)
	}
	return n * page, nil
}
