package vmm

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vmm/boot"
)

// Memory is guest RAM: one host mapping, laid out in guest-physical space
// as boot.RAMRegions says: the bytes below boot.LowRAMTop (all of RAM below
// 3.5 GiB, 3 GiB from there on) at address 0, index == address, and any
// beyond at boot.PCIHoleEnd (4 GiB), as QEMU's pc machine splits RAM around
// the 32-bit PCI hole. By default
// it is anonymous and private, and pages are only backed once touched
// (MAP_NORESERVE), so a large --mem costs this mapping nothing until the
// guest uses it (KVM's own tracking per guest page is another matter: on
// the PVM hosts, creating a 1 TiB VM took 4.6 s and 2.6 GiB of kernel
// memory, and a guest's kernel takes ~1.6% for its page structures). With a backing file (--mem-path) it is a shared mapping of an
// unlinked file on hugetlbfs.
type Memory struct {
	b []byte
	// low and high are b split at the PCI hole: low is at guest address
	// 0, high (empty below 3.5 GiB) at boot.PCIHoleEnd. Slice looks
	// at these rather than at the regions list: it is on every virtqueue
	// access.
	low, high []byte
	// shared is set for a file-backed mapping, whose pages belong to the
	// file: MADV_DONTNEED drops only the mapping's view of them, so
	// zeroing RAM clears them instead.
	shared bool
}

// MemoryConfig says how guest RAM is backed.
type MemoryConfig struct {
	// NoHugePages leaves anonymous guest RAM out of transparent huge
	// pages. By default govmm madvises it MADV_HUGEPAGE, as QEMU does:
	// with THP in "madvise" mode (the common distribution default) the
	// guest then gets 2 MiB pages where the host has them, and takes
	// fewer, cheaper page faults.
	NoHugePages bool
	// Path, when set, is a directory on hugetlbfs: guest RAM is a shared
	// mapping of an unlinked file created there, made of the mount's
	// huge pages, reserved from the pool when the VM is built.
	Path string
}

func newMemory(size uint64, cfg MemoryConfig) (*Memory, error) {
	if cfg.Path != "" {
		return newFileMemory(size, cfg.Path)
	}
	b, err := mapAligned(size)
	if err != nil {
		return nil, fmt.Errorf("map %d MiB of guest memory: %w", size>>20, err)
	}
	m := newSplitMemory(b, false)
	if !cfg.NoHugePages {
		// A kernel without THP refuses the advice (EINVAL): RAM then
		// stays in small pages, which is no reason to fail.
		if err := unix.Madvise(b, unix.MADV_HUGEPAGE); err != nil && !errors.Is(err, unix.EINVAL) {
			m.close()
			return nil, fmt.Errorf("madvise guest memory MADV_HUGEPAGE: %w", err)
		}
	}
	return m, nil
}

// hugeAlign is where anonymous guest RAM starts: KVM maps a 2 MiB page
// of the guest with one 2 MiB page of the host only where the guest's and
// the host's addresses are both 2 MiB aligned, and Linux aligns a large
// anonymous mapping only when its length is a multiple of 2 MiB: with
// --mem 1001M KVM mapped none of the guest's RAM with 2 MiB pages (nine
// times the page faults; found by an audit). QEMU aligns its RAM too.
const hugeAlign = 2 << 20

// mapAligned maps size bytes of anonymous memory starting at a multiple
// of hugeAlign: it maps hugeAlign more and unmaps what lies outside.
func mapAligned(size uint64) ([]byte, error) {
	n := uintptr(size) + hugeAlign
	p, err := unix.MmapPtr(-1, 0, nil, n, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, err
	}
	head := -uintptr(p) & (hugeAlign - 1)
	start := unsafe.Add(p, head)
	if head > 0 {
		unix.MunmapPtr(p, head)
	}
	if tail := n - head - uintptr(size); tail > 0 {
		unix.MunmapPtr(unsafe.Add(start, size), tail)
	}
	return unsafe.Slice((*byte)(start), size), nil
}

// newFileMemory maps size bytes of a new, unlinked file in dir, which must
// be on hugetlbfs. Without MAP_NORESERVE the mapping reserves its huge
// pages at once, so a short pool is an error here rather than a SIGBUS in
// the middle of the guest's run.
func newFileMemory(size uint64, dir string) (*Memory, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil, fmt.Errorf("--mem-path %s: %w", dir, err)
	}
	if st.Type != unix.HUGETLBFS_MAGIC {
		return nil, fmt.Errorf("--mem-path %s: not a hugetlbfs mount (file system magic %#x)", dir, st.Type)
	}
	page := uint64(st.Bsize)
	if page == 0 || size%page != 0 {
		return nil, fmt.Errorf("--mem-path %s: guest memory of %d KiB is not a multiple of its huge page size (%d KiB)", dir, size>>10, page>>10)
	}
	f, err := createUnlinked(dir)
	if err != nil {
		return nil, fmt.Errorf("--mem-path %s: create the guest memory file: %w", dir, err)
	}
	defer f.Close() // the mapping keeps the file
	if err := f.Truncate(int64(size)); err != nil {
		return nil, fmt.Errorf("--mem-path %s: size the guest memory file to %d MiB: %w", dir, size>>20, err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		if errors.Is(err, unix.ENOMEM) && st.Blocks > 0 && st.Bfree < size/page {
			// A mount with size= has a pool of its own (f_blocks is 0
			// without one).
			return nil, fmt.Errorf("--mem-path %s: map %d MiB: %w (the mount's size= limit leaves %d of the %d huge pages it needs)", dir, size>>20, err, st.Bfree, size/page)
		}
		if errors.Is(err, unix.ENOMEM) {
			return nil, fmt.Errorf("--mem-path %s: map %d MiB: %w (are there %d huge pages free and not reserved? see HugePages_Free minus HugePages_Rsvd in /proc/meminfo, vm.nr_hugepages)", dir, size>>20, err, size/page)
		}
		return nil, fmt.Errorf("--mem-path %s: map %d MiB: %w", dir, size>>20, err)
	}
	return newSplitMemory(b, true), nil
}

// newSplitMemory wraps the mapping b of guest RAM, split around the hole.
func newSplitMemory(b []byte, shared bool) *Memory {
	n := boot.LowRAMTop(uint64(len(b)))
	return &Memory{b: b, low: b[:n:n], high: b[n:], shared: shared}
}

// createUnlinked creates a file in dir that has no name, so nothing is
// left behind however govmm ends: O_TMPFILE where the file system has it,
// otherwise a new file unlinked at once.
func createUnlinked(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), dir+"/(guest memory)"), nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "govmm-mem-")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// register maps guest RAM into vm, one memory slot per region (slot ids
// 0 and 1).
func (m *Memory) register(vm *kvm.VM) error {
	for i, r := range boot.RAMRegions(m.Size()) {
		if err := vm.SetUserMemoryRegion(uint32(i), r.GuestAddr, m.b[r.Offset:r.Offset+r.Size]); err != nil {
			return err
		}
	}
	return nil
}

// Size is the guest RAM size in bytes, both regions together.
func (m *Memory) Size() uint64 { return uint64(len(m.b)) }

// Slice returns n bytes of guest memory at gpa, or an error when the
// range is not all inside one region of RAM: in the PCI hole, across its
// edges or past the end. Devices use it for every guest address, so a
// range in low RAM costs the two comparisons it did before the split.
// gpa == len(low) goes there too: an empty range at the end of low RAM
// stays valid, as it was at the end of RAM.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	if low := uint64(len(m.low)); gpa <= low {
		if n > low-gpa {
			return nil, m.outside(gpa, n)
		}
		return m.low[gpa : gpa+n : gpa+n], nil
	}
	// Below PCIHoleEnd, off wraps around to a huge value and fails the
	// same test as an address past the end.
	off, high := gpa-boot.PCIHoleEnd, uint64(len(m.high))
	if high == 0 || off > high || n > high-off {
		return nil, m.outside(gpa, n)
	}
	return m.high[off : off+n : off+n], nil
}

func (m *Memory) outside(gpa, n uint64) error {
	return fmt.Errorf("guest range %#x+%#x outside RAM (%#x bytes, %s)", gpa, n, m.Size(), m.layout())
}

// layout names the guest-physical ranges RAM occupies, for errors.
func (m *Memory) layout() string {
	s := fmt.Sprintf("%#x-%#x", 0, len(m.low))
	if len(m.high) > 0 {
		s += fmt.Sprintf(" and %#x-%#x", uint64(boot.PCIHoleEnd), boot.PCIHoleEnd+uint64(len(m.high)))
	}
	return s
}

func (m *Memory) close() error {
	if m.b == nil {
		return nil
	}
	var err error
	if m.shared {
		err = unix.Munmap(m.b) // unix.Mmap's
	} else {
		err = unix.MunmapPtr(unsafe.Pointer(&m.b[0]), uintptr(len(m.b))) // mapAligned's
	}
	m.b, m.low, m.high = nil, nil, nil
	return err
}

// ReleaseMemory gives the host an ended VM's private guest RAM back
// (MADV_DONTNEED; --mem-path pages stay the file's), so that the reports
// written after the run do not add their memory to the guest's. Run
// returns with requests still in hand (it aborts the queues, it does not
// wait for them): those are waited for first, or a disk write in flight
// read the zeroed pages and wrote zeros to the image instead of the
// guest's data (found in review). A device that writes guest RAM later
// (net's receive, until Close) only touches pages anew.
func (v *VM) ReleaseMemory() {
	v.waitNotifies()
	if !v.mem.shared {
		unix.Madvise(v.mem.b, unix.MADV_DONTNEED)
	}
}

// Resident returns how many bytes of guest RAM are backed by host memory:
// the part of the VMM's RSS that is the guest's, not the VMM's own.
func (m *Memory) Resident() (uint64, error) {
	vec, page, err := m.residency()
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range vec {
		n += uint64(v & 1)
	}
	return n * uint64(page), nil
}

// residency says which pages of guest RAM are backed: the low bit of
// vec[i] for the i-th page of the host's base page size.
func (m *Memory) residency() (vec []byte, page int, err error) {
	page = unix.Getpagesize()
	vec = make([]byte, (len(m.b)+page-1)/page)
	if err := mincore(m.b, vec); err != nil {
		return nil, 0, fmt.Errorf("mincore guest memory: %w", err)
	}
	return vec, page, nil
}
