package testenv

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
)

// KVMWithMemory opens /dev/kvm, creates a VM and gives it size bytes of
// zeroed guest RAM at guest physical 0 (slot 0), all closed when the test
// ends. It skips the test where /dev/kvm is absent. The tests of the
// packages below vmm build their tiny guests on it.
func KVMWithMemory(t testing.TB, size int) (*kvm.System, *kvm.VM, []byte) {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); errors.Is(err, os.ErrNotExist) {
		t.Skip("no /dev/kvm on this machine")
	}
	sys, err := kvm.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	vm, err := sys.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	// KVM wants page-aligned guest memory, which only mmap promises.
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	if err := vm.SetUserMemoryRegion(0, 0, mem); err != nil {
		t.Fatal(err)
	}
	return sys, vm, mem
}
