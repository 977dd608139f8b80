package vmm

import (
	"encoding/binary"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/govmm/govmm/internal/testenv"
)

// heapAllocated is the bytes the Go heap has handed out so far.
func heapAllocated() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// TestBootFilesLargerThanMemory gives New kernels and initrds far larger
// than the guest. A file that cannot fit is refused unread, and a vmlinux
// is read only as far as its segments go (debug info can make it larger
// than the guest): the Go heap never grows by anything like the file.
func TestBootFilesLargerThanMemory(t *testing.T) {
	vmlinux := needGuest(t, "vmlinux")
	bzImage := needGuest(t, "bzImage")
	const (
		memSize = 64 << 20
		huge    = 1 << 30 // sparse: costs no disk
		// Far below huge, far above what New itself allocates.
		heapBudget = 128 << 20
	)
	kernel, err := os.ReadFile(vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	// The first sector of a bzImage: enough for DetectKernel.
	bzHead := make([]byte, 0x206)
	binary.LittleEndian.PutUint16(bzHead[0x1fe:], 0xaa55)
	copy(bzHead[0x202:], "HdrS")

	for _, tc := range []struct {
		name           string
		kernel, initrd string
		mem            uint64
		want           string // "" for success
	}{
		{"initrd of 1 GiB, 64 MiB guest", vmlinux, testenv.SparseFile(t, "initrd", nil, huge), memSize,
			"initrd (1073741824 bytes) does not fit in guest memory"},
		{"bzImage of 1 GiB, 64 MiB guest", testenv.SparseFile(t, "bzImage", bzHead, huge), "", memSize,
			"bzImage of 1073741824 bytes is larger than guest memory (67108864 bytes)"},
		{"vmlinux with 1 GiB of trailing data", testenv.SparseFile(t, "vmlinux", kernel, huge), "", memSize, ""},
		{"1 GiB of zeros as the kernel", testenv.SparseFile(t, "zeros", nil, huge), "", memSize, "not a Linux kernel"},
		// The payload's size trailer (about 14 MiB) is checked against
		// guest memory before anything is decompressed.
		{"bzImage unpacking past guest memory", bzImage, "", 4 << 20, "over the limit of 4194304"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := heapAllocated()
			vm, err := New(Config{Kernel: tc.kernel, Initrd: tc.initrd, MemSize: tc.mem, CPUs: 1})
			grew := heapAllocated() - before
			if vm != nil {
				vm.Close()
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("New: error %v, want one containing %q", err, tc.want)
			}
			if grew > heapBudget {
				t.Errorf("New allocated %d MiB on the heap for a %d MiB guest", grew>>20, tc.mem>>20)
			}
		})
	}
}
