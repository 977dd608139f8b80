package vmm

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/govmm/govmm/vmm/kernelcache"
)

// loadedRAM builds (and closes) a VM for the bzImage and returns a copy of
// its guest RAM as New left it: kernel, initrd and tables loaded.
func loadedRAM(t *testing.T, cache *kernelcache.Cache) []byte {
	t.Helper()
	vm, err := New(Config{Kernel: needGuest(t, "bzImage"), Initrd: initramfs, Cmdline: DefaultCmdline,
		MemSize: 128 << 20, CPUs: 1, KernelCache: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	return bytes.Clone(vm.mem.b)
}

// A bzImage loads the same bytes into guest memory whether its payload is
// unpacked (no cache, a miss) or its ELF read from the cache (a hit), and
// a corrupted entry is a miss that the next load repairs.
func TestKernelCacheLoadsTheSameImage(t *testing.T) {
	want := loadedRAM(t, nil)
	cache := kernelcache.New(filepath.Join(t.TempDir(), "govmm"))
	check := func(what string, hits, misses uint64) {
		t.Helper()
		got := loadedRAM(t, cache)
		if i := firstDiff(got, want); i >= 0 {
			t.Fatalf("%s: guest memory differs from the unpacked load at %#x", what, i)
		}
		if cache.Hits() != hits || cache.Misses() != misses {
			t.Fatalf("%s: %d hits, %d misses; want %d and %d", what, cache.Hits(), cache.Misses(), hits, misses)
		}
	}
	check("first load (miss)", 0, 1)
	entries, err := filepath.Glob(filepath.Join(cache.Dir(), "*.elf"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("cache holds %q (%v), want one entry", entries, err)
	}
	check("second load (hit)", 1, 1)

	b, err := os.ReadFile(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-100] ^= 0xff
	if err := os.WriteFile(entries[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	check("corrupted entry (miss)", 1, 2)
	check("repaired entry (hit)", 2, 2)
}

// firstDiff is the first index where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// A bzImage boots from its cached ELF, and a reset in place loads it from
// the cache again.
func TestBootFromKernelCache(t *testing.T) {
	cache := kernelcache.New(t.TempDir())
	loadedRAM(t, cache) // fills the cache
	console := &syncBuffer{}
	vm, err := New(Config{Kernel: needGuest(t, "bzImage"), Initrd: initramfs,
		Cmdline: DefaultCmdline + " govmm.exit=reboot", MemSize: 512 << 20, CPUs: 2,
		Console: console, KernelCache: cache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	done := make(chan Outcome, 1)
	go func() { done <- vm.Run() }()
	// Two ready lines: a boot, a reset and a boot after it.
	deadline := time.Now().Add(bootTimeout)
	for len(readyLine.FindAllString(console.String(), -1)) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	vm.Stop()
	out := <-done
	if n := len(readyLine.FindAllString(console.String(), -1)); n < 2 || out.Err != nil {
		t.Fatalf("%d boots reached /init, ended %s (%v); console:\n%s", n, out.Words(), out.Err, console)
	}
	if cache.Hits() < 2 || cache.Misses() != 1 {
		t.Errorf("%d hits, %d misses; want the boot and its reset to hit", cache.Hits(), cache.Misses())
	}
}
