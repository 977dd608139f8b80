package kernelcache

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func testKey(s string) Key {
	k, err := KeyOf(strings.NewReader(s))
	if err != nil {
		panic(err)
	}
	return k
}

// elfBytes stands in for an unpacked kernel.
var elfBytes = bytes.Repeat([]byte("\x7fELF kernel text "), 10000)

func readAll(t *testing.T, e *Entry) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(e, 0, e.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMissPutHit(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "cache", "govmm"))
	key := testKey("bzImage 1")
	if _, err := c.Get(key, 1<<30); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Get on an empty cache: %v, want not-exist", err)
	}
	if err := c.Put(key, elfBytes); err != nil {
		t.Fatal(err)
	}
	e, err := c.Get(key, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got := readAll(t, e); !bytes.Equal(got, elfBytes) {
		t.Fatalf("cached ELF differs: %d bytes, want %d", len(got), len(elfBytes))
	}
	if _, err := c.Get(testKey("bzImage 2"), 1<<30); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("another bzImage's key: %v, want not-exist", err)
	}
	if c.Hits() != 1 || c.Misses() != 2 {
		t.Errorf("%d hits, %d misses; want 1 and 2", c.Hits(), c.Misses())
	}
	fi, err := os.Stat(c.Dir())
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("cache directory mode %v (%v), want 0700", fi.Mode(), err)
	}
	names, _ := filepath.Glob(filepath.Join(c.Dir(), "*"))
	dot, _ := filepath.Glob(filepath.Join(c.Dir(), ".*"))
	if len(names) != 1 || len(dot) != 0 {
		t.Errorf("cache holds %q and %q, want one entry and no temporary file", names, dot)
	}
}

// Every way an entry can be damaged or planted is a miss with a reason,
// never a kernel handed out.
func TestBadEntriesAreMisses(t *testing.T) {
	key := testKey("bzImage")
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, c *Cache, path string)
		want  string
	}{
		{"flipped byte", func(t *testing.T, _ *Cache, path string) {
			b, _ := os.ReadFile(path)
			b[len(b)/2] ^= 1
			os.WriteFile(path, b, 0o600)
		}, "checksum mismatch"},
		{"truncated", func(t *testing.T, _ *Cache, path string) { os.Truncate(path, headerSize+100) }, "torn write"},
		{"empty", func(t *testing.T, _ *Cache, path string) { os.Truncate(path, 0) }, "not an entry"},
		{"bad magic", func(t *testing.T, _ *Cache, path string) {
			f, _ := os.OpenFile(path, os.O_WRONLY, 0)
			f.WriteAt([]byte("GOVMM"), 0)
			f.Close()
		}, "bad magic"},
		{"other bzImage's entry", func(t *testing.T, c *Cache, path string) {
			other := testKey("another bzImage")
			if err := c.Put(other, elfBytes); err != nil {
				t.Fatal(err)
			}
			os.Rename(c.path(other), path)
		}, "names another bzImage"},
		{"group-writable entry", func(t *testing.T, _ *Cache, path string) { os.Chmod(path, 0o620) }, "lets others write"},
		{"world-writable directory", func(t *testing.T, c *Cache, _ string) { os.Chmod(c.Dir(), 0o777) }, "lets others write"},
		{"symbolic link", func(t *testing.T, c *Cache, path string) {
			real := filepath.Join(t.TempDir(), "elf")
			os.Rename(path, real)
			os.Symlink(real, path)
		}, "symbolic link"},
		{"another user's entry", func(t *testing.T, _ *Cache, path string) {
			if os.Geteuid() != 0 {
				t.Skip("giving a file away needs root")
			}
			os.Chown(path, 65534, 65534)
		}, "not trusted"},
		{"larger than the guest", func(t *testing.T, _ *Cache, path string) {}, "at most 1000 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(t.TempDir())
			if err := c.Put(key, elfBytes); err != nil {
				t.Fatal(err)
			}
			tc.spoil(t, c, c.path(key))
			max := int64(1 << 30)
			if tc.name == "larger than the guest" {
				max = 1000
			}
			e, err := c.Get(key, max)
			if err == nil {
				e.Close()
				t.Fatal("a spoiled entry was used")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			if c.Hits() != 0 || c.Misses() != 1 {
				t.Errorf("%d hits, %d misses; want one miss", c.Hits(), c.Misses())
			}
			// A fresh Put repairs what it can: everything but the
			// directory's mode, which Put refuses too.
			if tc.name == "world-writable directory" {
				if err := c.Put(key, elfBytes); err == nil {
					t.Error("Put into a world-writable directory succeeded")
				}
				return
			}
			if err := c.Put(key, elfBytes); err != nil {
				t.Fatal(err)
			}
			e, err = c.Get(key, 1<<30)
			if err != nil {
				t.Fatalf("after a new Put: %v", err)
			}
			defer e.Close()
			if !bytes.Equal(readAll(t, e), elfBytes) {
				t.Error("repaired entry differs")
			}
		})
	}
}

// A Put that cannot finish leaves nothing behind.
func TestPutFailureLeavesNothing(t *testing.T) {
	c := New(t.TempDir())
	key := testKey("bzImage")
	// A directory where the entry should go: the rename fails.
	if err := os.Mkdir(c.path(key), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(key, elfBytes); err == nil {
		t.Fatal("Put over a directory succeeded")
	}
	dot, _ := filepath.Glob(filepath.Join(c.Dir(), ".*.tmp"))
	if len(dot) != 0 {
		t.Errorf("temporary files left: %q", dot)
	}
}

// A cache path that is a symbolic link to a directory (the cache moved to
// a larger disk) is used; what is checked is the directory it leads to.
func TestSymlinkedCacheDir(t *testing.T) {
	dir := t.TempDir()
	real, link := filepath.Join(dir, "real"), filepath.Join(dir, "link")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	c := New(link)
	key := testKey("bzImage")
	if err := c.Put(key, elfBytes); err != nil {
		t.Fatalf("Put through a symbolic link: %v", err)
	}
	e, err := c.Get(key, 1<<30)
	if err != nil {
		t.Fatalf("Get through a symbolic link: %v", err)
	}
	e.Close()
	if err := os.Chmod(real, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(key, 1<<30); err == nil || !strings.Contains(err.Error(), "lets others write") {
		t.Errorf("a world-writable directory behind the link: %v, want it refused", err)
	}
}

// A temporary file that a govmm killed while writing an entry left is
// removed by a later Put once it is an hour old; a recent one, perhaps
// another govmm's write in progress, is left.
func TestPutRemovesStaleTemporaryFiles(t *testing.T) {
	c := New(t.TempDir())
	old := filepath.Join(c.Dir(), ".abc.elf.123.tmp")
	recent := filepath.Join(c.Dir(), ".def.elf.456.tmp")
	for _, p := range []string{old, recent} {
		if err := os.WriteFile(p, []byte("half an entry"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	then := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, then, then); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(testKey("bzImage"), elfBytes); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file: %v, want it removed", err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("recent temporary file: %v, want it kept", err)
	}
}

// Put creates the cache's missing directories only under a directory of
// ours, and makes them 0700 whatever the umask: root with a user's HOME
// made the user's ~/.cache root's (locking the user out of it), and a
// umask of 0277 left a directory nobody could write (an audit).
func TestPutMakesOnlyOurDirectories(t *testing.T) {
	old := syscall.Umask(0o277)
	defer syscall.Umask(old)
	base := t.TempDir()
	c := New(filepath.Join(base, "a", "b", "govmm"))
	if err := c.Put(testKey("bzImage"), elfBytes); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "a/b", "a/b/govmm"} {
		if fi, err := os.Stat(filepath.Join(base, d)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v (%v), want 0700", d, fi.Mode(), err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("a directory of another user's needs root")
	}
	home := filepath.Join(base, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	c = New(filepath.Join(home, ".cache", "govmm"))
	if err := c.Put(testKey("bzImage"), elfBytes); err == nil || !strings.Contains(err.Error(), "not ours") {
		t.Errorf("Put under another user's directory: %v, want it refused", err)
	}
	if _, err := os.Stat(filepath.Join(home, ".cache")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("another user's .cache: %v, want it not created", err)
	}
}

// Usable: a directory still to be made is, one others may write to is not
// (a boot then warns once and leaves the cache alone, where Get and Put
// each warned).
func TestUsable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "govmm")
	c := New(dir)
	if err := c.Usable(); err != nil {
		t.Errorf("a cache still to be made: %v", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := c.Usable(); err != nil {
		t.Errorf("a cache of ours: %v", err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := c.Usable(); err == nil || !strings.Contains(err.Error(), "lets others write") {
		t.Errorf("a world-writable cache: %v, want it unusable", err)
	}
}
