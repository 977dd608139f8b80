package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fatalRecorder is a testing.TB whose Fatalf records instead of stopping.
type fatalRecorder struct {
	testing.TB
	fatal []string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.fatal = append(r.fatal, fmt.Sprintf(format, args...))
}

// Where /dev/kvm exists, a missing kernel fails a boot test rather than
// skipping it.
func TestNeedLinuxFailsWithKVM(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm on this machine: NeedLinux skips here, by design")
	}
	have := filepath.Join(t.TempDir(), "initrd")
	if err := os.WriteFile(have, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := &fatalRecorder{TB: t}
	NeedLinux(missing, filepath.Join(t.TempDir(), "vmlinux"), have)
	if len(missing.fatal) != 1 || !strings.Contains(missing.fatal[0], "cannot boot Linux") {
		t.Errorf("missing kernel: Fatalf calls %q, want one", missing.fatal)
	}
	present := &fatalRecorder{TB: t}
	NeedLinux(present, have, have)
	if len(present.fatal) != 0 {
		t.Errorf("files present: %q", present.fatal)
	}
}

func TestLinuxGuestPaths(t *testing.T) {
	kernel, initrd := LinuxGuest("../..", "bzImage")
	if PVMHost() {
		if kernel != "../../../shared/guest/bzImage" || initrd != "../../guests/out/rootfs.cpio.gz" {
			t.Errorf("PVM host: %s, %s", kernel, initrd)
		}
	} else if kernel != "../../guests/out/debian/vmlinuz" || initrd != "../../guests/out/debian/rootfs.cpio.gz" {
		t.Errorf("not a PVM host: %s, %s", kernel, initrd)
	}
}
