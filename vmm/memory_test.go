package vmm

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/kvm"
	"github.com/govmm/govmm/vcpu"
	"github.com/govmm/govmm/vmm/boot"
)

// vmFlags returns the VmFlags line of /proc/self/smaps for the mapping
// that starts at b.
func vmFlags(t *testing.T, b []byte) []string {
	t.Helper()
	start := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&b[0])))
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, start) {
			in = true
		}
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok && in {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("no mapping at %s in /proc/self/smaps", start)
	return nil
}

func hasFlag(flags []string, f string) bool {
	for _, g := range flags {
		if g == f {
			return true
		}
	}
	return false
}

// Guest RAM is madvised MADV_HUGEPAGE ("hg" in smaps' VmFlags) unless
// NoHugePages (--mem-hugepages=false) says otherwise.
func TestMemoryHugePageAdvice(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage/enabled"); err != nil {
		t.Skipf("this kernel has no transparent huge pages: %v", err)
	}
	for _, tc := range []struct {
		cfg  MemoryConfig
		want bool
	}{{MemoryConfig{}, true}, {MemoryConfig{NoHugePages: true}, false}} {
		m, err := newMemory(64<<20, tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		flags := vmFlags(t, m.b)
		m.close()
		if got := hasFlag(flags, "hg"); got != tc.want {
			t.Errorf("%+v: MADV_HUGEPAGE flag hg %v, want %v (VmFlags %v)", tc.cfg, got, tc.want, flags)
		}
	}
}

// Anonymous guest RAM starts on a 2 MiB boundary whatever its size, so
// KVM can map the guest's 2 MiB pages with the host's: Linux aligned the
// mapping only for sizes in whole 2 MiB, and --mem 1001M got no 2 MiB KVM
// mapping at all (an audit). Each mapping is touched end to end and
// unmapped whole.
func TestMemoryAligned(t *testing.T) {
	for _, size := range []uint64{4096, 1001 << 20, 64<<20 + 4096, 64 << 20, 3<<20 + 12<<10} {
		m, err := newMemory(size, MemoryConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if a := uintptr(unsafe.Pointer(&m.b[0])); a%hugeAlign != 0 || m.Size() != size {
			t.Errorf("--mem %d KiB: mapped at %#x, %d bytes; want a multiple of 2 MiB and the size", size>>10, a, m.Size())
		}
		m.b[0], m.b[size-1] = 1, 1
		if err := m.close(); err != nil {
			t.Errorf("--mem %d KiB: close: %v", size>>10, err)
		}
	}
}

// --mem-path refuses what is not a hugetlbfs directory with an error that
// names it.
func TestMemPathErrors(t *testing.T) {
	for _, tc := range []struct {
		name, dir, want string
	}{
		{"missing", filepath.Join(t.TempDir(), "nope"), "no such file"},
		{"not hugetlbfs", t.TempDir(), "not a hugetlbfs mount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := newMemory(4<<20, MemoryConfig{Path: tc.dir})
			if err == nil {
				m.close()
				t.Fatalf("mapped guest memory in %s", tc.dir)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.dir) {
				t.Errorf("error %q, want it to name %s and say %q", err, tc.dir, tc.want)
			}
		})
	}
	dir, page := hugetlbfs(t, 0)
	t.Run("not a multiple of the huge page size", func(t *testing.T) {
		m, err := newMemory(page+4096, MemoryConfig{Path: dir})
		if err == nil {
			m.close()
			t.Fatal("mapped guest memory of a partial huge page")
		}
		if !strings.Contains(err.Error(), "not a multiple of its huge page size") {
			t.Errorf("error %q, want it to name the huge page size", err)
		}
	})
	t.Run("pool too small", func(t *testing.T) {
		// Another test process growing the pool meanwhile would let
		// the mapping succeed.
		lockHugePages(t)
		free := meminfo(t, "HugePages_Free")
		size := (free + 1) * page
		if size > MaxMemSize {
			t.Skipf("%d free huge pages: more than the largest guest", free)
		}
		m, err := newMemory(size, MemoryConfig{Path: dir})
		if err == nil {
			m.close()
			t.Fatalf("mapped %d huge pages with %d free", free+1, free)
		}
		if !strings.Contains(err.Error(), "HugePages_Free minus HugePages_Rsvd") {
			t.Errorf("error %q, want it to point at the huge page pool", err)
		}
	})
	// With enough pages in the pool, a mount's own size= limit is what
	// refuses: the error said the pool was short.
	t.Run("mount size limit", func(t *testing.T) {
		_, page := hugetlbfs(t, 2)
		small := t.TempDir()
		if err := unix.Mount("none", small, "hugetlbfs", 0, fmt.Sprintf("size=%d", page)); err != nil {
			t.Skipf("cannot mount hugetlbfs: %v", err)
		}
		defer unix.Unmount(small, unix.MNT_DETACH)
		m, err := newMemory(2*page, MemoryConfig{Path: small})
		if err == nil {
			m.close()
			t.Fatal("mapped 2 huge pages on a mount limited to 1")
		}
		if !strings.Contains(err.Error(), "size= limit leaves 1 of the 2 huge pages") {
			t.Errorf("error %q, want it to point at the mount's size= limit", err)
		}
	})
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 0 {
		t.Errorf("failed attempts left %v (%v) in %s", entries, err, dir)
	}
}

// Zeroing file-backed RAM (a reset) must clear the file's pages:
// MADV_DONTNEED alone would map the old contents back in. A memfd (shmem)
// stands in for hugetlbfs where no hugetlbfs can be had.
func TestZeroSharedMemory(t *testing.T) {
	const size = 4 << 20
	fd, err := unix.MemfdCreate("govmm-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Skipf("memfd_create: %v", err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	b, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	m := newSplitMemory(b, true)
	defer m.close()
	checkZeroes(t, m)
}

// The same on hugetlbfs, as --mem-path maps it; and the pool still holds
// every page for the guest afterwards. Removing the pages from the file
// (MADV_REMOVE) gave up their reservation: another process could then
// take them, and the guest hung in its next boot on the first page it
// touched (found by an audit).
func TestZeroHugetlbfsMemory(t *testing.T) {
	dir, page := hugetlbfs(t, 2)
	m, err := newMemory(2*page, MemoryConfig{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	if !m.shared {
		t.Fatal("hugetlbfs memory not marked shared")
	}
	// Pages in use or reserved for use, the guest's among them; hugetlbfs
	// (the lock it takes) keeps other tests' pages out of the count.
	committed := func() uint64 {
		return meminfo(t, "HugePages_Total") - meminfo(t, "HugePages_Free") + meminfo(t, "HugePages_Rsvd")
	}
	before := committed()
	m.b[0] = 1 // one page in use, the other only reserved
	if err := m.zero(); err != nil {
		t.Fatal(err)
	}
	// Counted before reading m again: a read would take pages anew.
	if after := committed(); after != before {
		t.Fatalf("huge pages in use or reserved: %d before zeroing, %d after", before, after)
	}
	checkZeroes(t, m)
}

// checkZeroes fills m, zeroes it as a reset does, and expects zeros.
func checkZeroes(t *testing.T, m *Memory) {
	t.Helper()
	for i := range m.b {
		m.b[i] = byte(i%251 + 1)
	}
	if err := m.zero(); err != nil {
		t.Fatal(err)
	}
	if i := bytes.IndexFunc(m.b, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Fatalf("byte %#x is %#x after zeroing, want all zeros", i, m.b[i])
	}
	// And the memory is still usable afterwards.
	m.b[len(m.b)-1] = 7
	if m.b[len(m.b)-1] != 7 {
		t.Fatal("memory not writable after zeroing")
	}
}

// A reset of a VM whose RAM is on hugetlbfs (and of one with ordinary
// RAM) leaves none of the old boot's memory behind.
func TestResetZeroesGuestRAM(t *testing.T) {
	for _, tc := range []struct {
		name string
		mem  func(t *testing.T) MemoryConfig
	}{
		{"anonymous", func(*testing.T) MemoryConfig { return MemoryConfig{} }},
		{"hugetlbfs", func(t *testing.T) MemoryConfig {
			dir, _ := hugetlbfs(t, 64) // 128 MiB of 2 MiB pages
			return MemoryConfig{Path: dir}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			needKVM(t)
			mem := tc.mem(t)
			vm, err := New(Config{Kernel: needGuest(t, "vmlinux"), Initrd: initramfs, Cmdline: DefaultCmdline, MemSize: 128 << 20, CPUs: 1, Memory: mem})
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Close()
			// Far above the kernel and below the initrd, which sits
			// at the top of RAM: nothing a reset loads lands here.
			const marker = 96 << 20
			copy(vm.mem.b[marker:], "left over from the last boot")
			done, _ := vm.requestReset("test")
			if err := vm.reset(); err != nil { // what Run does on the request
				t.Fatal(err)
			}
			if got := vm.mem.b[marker : marker+28]; !bytes.Equal(got, make([]byte, 28)) {
				t.Fatalf("after the reset RAM at %#x holds %q, want zeros", marker, got)
			}
			<-done
		})
	}
}

// Linux boots on hugetlbfs-backed RAM and uses its huge pages.
func TestBootOnHugetlbfs(t *testing.T) {
	needGuest(t, "vmlinux")
	dir, page := hugetlbfs(t, 128) // 256 MiB of 2 MiB pages
	vm, out, console := bootLinuxWith(t, "vmlinux", 2, "", func(c *Config) {
		c.MemSize = 128 * page
		c.Memory.Path = dir
	})
	if out.Err != nil || out.Reason != vcpu.PowerOff || !readyLine.MatchString(console) {
		t.Fatalf("guest ended %v (%v), want a ready line and power-off; console:\n%s", out.Reason, out.Err, console)
	}
	if !vm.mem.shared {
		t.Error("guest RAM is not the hugetlbfs file's")
	}
}

// faultbench, the workload of make bench-mem, runs in the test
// initramfs and reports both phases.
func TestFaultbenchInGuest(t *testing.T) {
	_, out, console := bootLinux(t, "vmlinux", 1, "govmm.run=faultbench,2,8,3")
	if out.Err != nil || !strings.Contains(console, "GOVMM-RESULT rc=0") ||
		!regexp.MustCompile(`faultbench regions=2 mib=8 forks=3 touch_s=[0-9.]+ fork_s=[0-9.]+`).MatchString(console) {
		t.Fatalf("ended %s (%v), want a faultbench line and rc=0; console:\n%s", out.Words(), out.Err, console)
	}
}

// hugetlbfs mounts a hugetlbfs for the test (root only) and, with pages >
// 0, sees that the pool has that many free huge pages, growing it by that
// many for the test's duration if it has to. A lock file serializes the
// tests of every checkout that do this, so that no two of them count on
// the same free pages. It returns the mount and its page size, or skips
// the test saying why.
// lockHugePages keeps other test processes that use the host's huge page
// pool (hugetlbfs with pages > 0) from changing it until t ends.
func lockHugePages(t *testing.T) {
	t.Helper()
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "govmm-hugepages.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // releases the lock, last
}

func hugetlbfs(t *testing.T, pages uint64) (string, uint64) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting hugetlbfs needs root")
	}
	if pages > 0 {
		lockHugePages(t)
	}
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "hugetlbfs", 0, ""); err != nil {
		t.Skipf("cannot mount hugetlbfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	page := uint64(st.Bsize)
	if free := meminfo(t, "HugePages_Free"); free < pages {
		const knob = "/proc/sys/vm/nr_hugepages"
		grow := pages - free
		total := readUint(t, knob)
		if err := os.WriteFile(knob, []byte(strconv.FormatUint(total+grow, 10)), 0); err != nil {
			t.Skipf("need %d free huge pages, have %d, and cannot grow the pool: %v", pages, free, err)
		}
		t.Cleanup(func() {
			now := readUint(t, knob)
			os.WriteFile(knob, []byte(strconv.FormatUint(now-min(now, grow), 10)), 0)
		})
		if free := meminfo(t, "HugePages_Free"); free < pages {
			t.Skipf("need %d free huge pages; the kernel found only %d (host memory too fragmented?)", pages, free)
		}
	}
	return dir, page
}

// meminfo reads a count from /proc/meminfo.
func meminfo(t *testing.T, key string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			n, err := strconv.ParseUint(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/meminfo", key)
	return 0
}

func readUint(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Slice translates a guest address through the two regions of RAM split
// around the PCI hole, and refuses any range that is not all inside one:
// guest addresses are untrusted. The mapping is address space only; Slice
// touches none of it. RAM of less than 3.5 GiB is not split at all.
func TestMemorySlice(t *testing.T) {
	const (
		low   = boot.LowRAMSplit
		high  = boot.PCIHoleEnd
		top   = boot.LowRAMMax - low + 64<<10 // RAM above 4 GiB
		max   = ^uint64(0)
		whole = 3300 << 20 // below 3.5 GiB: all at 0
	)
	split, err := newMemory(low+top, MemoryConfig{NoHugePages: true})
	if err != nil {
		t.Skipf("cannot reserve 3.5 GiB of address space: %v", err)
	}
	defer split.close()
	unsplit, err := newMemory(whole, MemoryConfig{NoHugePages: true})
	if err != nil {
		t.Skipf("cannot reserve 3300 MiB of address space: %v", err)
	}
	defer unsplit.close()
	small, err := newMemory(64<<20, MemoryConfig{NoHugePages: true})
	if err != nil {
		t.Fatal(err)
	}
	defer small.close()
	for _, tc := range []struct {
		name   string
		m      *Memory
		gpa, n uint64
		off    int64 // index into m.b, or -1: an error
	}{
		{"low", split, 0x1000, 16, 0x1000},
		{"low from 0", split, 0, 16, 0},
		{"low up to the hole", split, low - 16, 16, low - 16},
		{"empty at the hole", split, low, 0, low},
		{"across 3 GiB", split, low - 8, 16, -1},
		{"hole start", split, low, 1, -1},
		{"in the hole", split, 0xfee00000, 4, -1},
		{"hole end", split, high - 1, 1, -1},
		{"across 4 GiB", split, high - 8, 16, -1},
		{"high", split, high, 16, low},
		{"high inside", split, high + 0x1000, 0x1000, low + 0x1000},
		{"high up to the end", split, high + top - 16, 16, low + top - 16},
		{"across the end", split, high + top - 8, 16, -1},
		{"past the end", split, high + top, 1, -1},
		{"far past the end", split, 1 << 40, 16, -1},
		{"low, n overflows", split, 0x1000, max, -1},
		{"low, gpa+n wraps", split, 0x1000, max - 0x800, -1},
		{"high, n overflows", split, high + 16, max, -1},
		{"high, gpa+n wraps", split, high + 16, max - 8, -1},
		{"top of the address space", split, max, 1, -1},
		{"gpa+n wraps to low", split, max - 7, 16, -1},
		{"small", small, 64<<20 - 16, 16, 64<<20 - 16},
		{"small, empty at the end", small, 64 << 20, 0, 64 << 20},
		{"small, past the end", small, 64 << 20, 1, -1},
		{"small, in the hole", small, low, 1, -1},
		{"small, no RAM at 4 GiB", small, high, 16, -1},
		{"small, empty at 4 GiB", small, high, 0, -1},
		{"3300M, past 3 GiB", unsplit, low, 0x1000, low},
		{"3300M, up to the end", unsplit, whole - 16, 16, whole - 16},
		{"3300M, empty at the end", unsplit, whole, 0, whole},
		{"3300M, past the end", unsplit, whole, 1, -1},
		{"3300M, across the end", unsplit, whole - 8, 16, -1},
		{"3300M, no RAM at 4 GiB", unsplit, high, 16, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.m.Slice(tc.gpa, tc.n)
			if tc.off < 0 {
				if err == nil {
					t.Fatalf("Slice(%#x, %#x) = %d bytes, want an error", tc.gpa, tc.n, len(b))
				}
				return
			}
			if err != nil {
				t.Fatalf("Slice(%#x, %#x): %v", tc.gpa, tc.n, err)
			}
			if uint64(len(b)) != tc.n || uint64(cap(b)) != tc.n {
				t.Fatalf("Slice(%#x, %#x): len %d cap %d, want %d", tc.gpa, tc.n, len(b), cap(b), tc.n)
			}
			want := unsafe.Add(unsafe.Pointer(unsafe.SliceData(tc.m.b)), tc.off)
			if got := unsafe.Pointer(unsafe.SliceData(b)); tc.n > 0 && got != want {
				t.Errorf("Slice(%#x, %#x) at %p, want %p (index %#x of the mapping)", tc.gpa, tc.n, got, want, tc.off)
			}
		})
	}
}

// A guest whose RAM would end beyond the CPU's physical address bits is
// refused before KVM sees a memory slot.
func TestCheckPhysBits(t *testing.T) {
	cpuid := func(bits uint32) []kvm.CPUIDEntry {
		return []kvm.CPUIDEntry{{Function: cpuidFeatures}, {Function: cpuidAddrSizes, EAX: 0x3000 | bits}}
	}
	for _, tc := range []struct {
		cpuid []kvm.CPUIDEntry
		mem   uint64
		ok    bool
	}{
		{cpuid(36), 63 << 30, true}, // ends at 64 GiB
		{cpuid(36), 63<<30 + 4096, false},
		{cpuid(39), 511 << 30, true},
		{cpuid(39), 512 << 30, false},
		{cpuid(48), MaxMemSize, true},
		{nil, MaxMemSize, true}, // no leaf: KVM has the last word
	} {
		err := checkPhysBits(tc.cpuid, tc.mem)
		if (err == nil) != tc.ok {
			t.Errorf("%d MiB: %v, want ok=%v", tc.mem>>20, err, tc.ok)
		}
	}
}
