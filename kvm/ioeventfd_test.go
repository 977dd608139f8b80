package kvm

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestIOEventFDAssignDeassign(t *testing.T) {
	s := openKVM(t)
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	const addr = 0xc0005000
	if err := vm.IOEventFD(efd, addr, 2, false, nil); err != nil {
		t.Fatal(err)
	}
	// The same registration twice is the kernel's to refuse.
	if err := vm.IOEventFD(efd, addr, 2, false, nil); err == nil {
		t.Error("duplicate ioeventfd accepted")
	}
	if err := vm.IOEventFDDeassign(efd, addr, 2, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := vm.IOEventFDDeassign(efd, addr, 2, false, nil); err == nil {
		t.Error("deassigning an unregistered ioeventfd succeeded")
	}
	// Free again: it can be registered anew.
	if err := vm.IOEventFD(efd, addr, 2, false, nil); err != nil {
		t.Errorf("re-register after deassign: %v", err)
	}
}
