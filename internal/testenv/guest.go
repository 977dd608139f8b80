package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// PVMHost reports whether this host's KVM is PVM (module kvm_pvm), where a
// stock kernel runs only inside KVM's instruction emulator and the boot
// tests boot the shared patched kernel instead.
func PVMHost() bool {
	_, err := os.Stat("/sys/module/kvm_pvm")
	return err == nil
}

// LinuxGuest returns the kernel the boot tests boot as name ("vmlinux" or
// "bzImage") and the initramfs to boot it with; root is the repository
// root relative to the test's package directory. On a PVM host that is
// the shared kernel in ../shared/guest beside the repository with the
// busybox initramfs; elsewhere Debian's kernel (a bzImage, whatever name
// asks for) with the same initramfs plus its modules, both of which `make
// guests` fetches and builds on such a host.
func LinuxGuest(root, name string) (kernel, initrd string) {
	if PVMHost() {
		return filepath.Join(root, "..", "shared", "guest", name), filepath.Join(root, "guests", "out", "rootfs.cpio.gz")
	}
	deb := filepath.Join(root, "guests", "out", "debian")
	return filepath.Join(deb, "vmlinuz"), filepath.Join(deb, "rootfs.cpio.gz")
}

// NeedLinux skips the test where there is no /dev/kvm, and fails it where
// there is one but the kernel or the initramfs is missing: a boot test
// that skipped there would let the suite pass without booting Linux.
func NeedLinux(t testing.TB, kernel, initrd string) {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); errors.Is(err, os.ErrNotExist) {
		t.Skip("no /dev/kvm on this machine")
	}
	for _, p := range []string{kernel, initrd} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("this host has /dev/kvm but the boot tests cannot boot Linux: %v (run `make guests`; on a PVM host the kernel comes from ../shared/guest)", err)
		}
	}
}

// BenchInitramfs is the benchmark initramfs `make guests` builds beside
// LinuxGuest's: the same tree plus Debian's fio and iperf3 with their
// libraries (guests/Makefile, bench.cpio); root as for LinuxGuest.
func BenchInitramfs(root string) string {
	return filepath.Join(root, "guests", "out", "bench.cpio")
}
