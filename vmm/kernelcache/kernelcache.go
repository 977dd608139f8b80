package kernelcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/govmm/govmm/internal/atomicfile"
)

// An entry is a 64-byte header, then the ELF:
//
//	magic [16]byte   "govmm-kcache-v1\n"
//	key   [32]byte   SHA-256 of the bzImage (also the file's name)
//	size  uint64 LE  length of the ELF
//	crc   uint32 LE  CRC-32C of the ELF
//	      [4]byte    zero
const headerSize = 64

var (
	magic    = []byte("govmm-kcache-v1\n")
	crcTable = crc32.MakeTable(crc32.Castagnoli)
)

// Key names a bzImage: the SHA-256 of all of its bytes.
type Key [sha256.Size]byte

// KeyOf reads a bzImage from r and returns its key. It reads through a
// small buffer: the image never sits in the heap whole.
func KeyOf(r io.Reader) (Key, error) {
	h := sha256.New()
	var k Key
	if _, err := io.CopyBuffer(h, r, make([]byte, 64<<10)); err != nil {
		return k, err
	}
	h.Sum(k[:0])
	return k, nil
}

// Cache is a directory of unpacked kernels. Its methods are safe for
// concurrent use, also by several govmm processes sharing the directory.
type Cache struct {
	dir          string
	uid          int // the effective user, the only one trusted to write entries
	hits, misses atomic.Uint64
}

// New returns the cache in dir. Nothing is created until the first Put.
func New(dir string) *Cache { return &Cache{dir: dir, uid: os.Geteuid()} }

// Dir is the cache's directory.
func (c *Cache) Dir() string { return c.dir }

// Hits and Misses count the Gets that found a usable entry and those that
// did not.
func (c *Cache) Hits() uint64   { return c.hits.Load() }
func (c *Cache) Misses() uint64 { return c.misses.Load() }

func (c *Cache) path(key Key) string {
	return filepath.Join(c.dir, hex.EncodeToString(key[:])+".elf")
}

// Entry is a cached ELF whose checksum matched: read it with ReadAt, Size
// bytes long, and Close it.
type Entry struct {
	*io.SectionReader
	f *os.File
}

func (e *Entry) Close() error { return e.f.Close() }

// Get returns the ELF cached for key, at most maxSize bytes, checked
// against its checksum. An error wrapping fs.ErrNotExist means there is
// none; any other says why the one there was not used (not trusted, torn,
// corrupt, too large). Either way it is a miss, and the caller unpacks the
// bzImage.
func (c *Cache) Get(key Key, maxSize int64) (*Entry, error) {
	e, err := c.get(key, maxSize)
	if err != nil {
		c.misses.Add(1)
		return nil, err
	}
	c.hits.Add(1)
	return e, nil
}

func (c *Cache) get(key Key, maxSize int64) (*Entry, error) {
	if err := c.checkDir(); err != nil {
		return nil, err
	}
	path := c.path(key)
	// O_NOFOLLOW: a link planted in place of an entry is refused, not
	// followed; O_NONBLOCK: a FIFO cannot hang the open.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("entry %s is a symbolic link: not used", path)
		}
		return nil, err
	}
	e, err := c.check(f, key, maxSize)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("entry %s: %w", path, err)
	}
	return e, nil
}

// check verifies the entry open in f: owned by us, a regular file, a
// header for key, and the ELF's checksum.
func (c *Cache) check(f *os.File, key Key, maxSize int64) (*Entry, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if err := c.owned(fi); err != nil {
		return nil, err
	}
	if fi.Size() < headerSize || fi.Size()-headerSize > maxSize {
		return nil, fmt.Errorf("%d bytes: not an entry of at most %d bytes", fi.Size(), maxSize)
	}
	hdr := make([]byte, headerSize)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	size := binary.LittleEndian.Uint64(hdr[48:])
	switch {
	case !bytes.Equal(hdr[:16], magic):
		return nil, errors.New("bad magic")
	case !bytes.Equal(hdr[16:48], key[:]):
		return nil, errors.New("header names another bzImage")
	case size != uint64(fi.Size()-headerSize):
		return nil, fmt.Errorf("header says %d bytes of ELF, the file holds %d (torn write?)", size, fi.Size()-headerSize)
	}
	elf := io.NewSectionReader(f, headerSize, int64(size))
	crc := crc32.New(crcTable)
	if _, err := io.CopyBuffer(crc, io.NewSectionReader(f, headerSize, int64(size)), make([]byte, 64<<10)); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if crc.Sum32() != binary.LittleEndian.Uint32(hdr[56:]) {
		return nil, errors.New("checksum mismatch (corrupted)")
	}
	return &Entry{SectionReader: elf, f: f}, nil
}

// Usable says why the cache cannot be used, if it cannot: its directory
// is not one of ours alone. A directory still to be made is usable (Put
// makes it). A boot checks once, so an unusable cache is one warning,
// not Get's and Put's.
func (c *Cache) Usable() error {
	if _, err := os.Stat(c.dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return c.checkDir()
}

// checkDir refuses a cache directory that someone else could write to.
// A symbolic link to the directory is followed (a cache moved to a larger
// disk): what must be ours alone is the directory it leads to. It was
// refused as "not a directory" at every boot (an audit).
func (c *Cache) checkDir() error {
	fi, err := os.Stat(c.dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", c.dir)
	}
	if err := c.owned(fi); err != nil {
		return fmt.Errorf("%s: %w", c.dir, err)
	}
	return nil
}

// owned refuses a file or directory that is not ours alone to write.
func (c *Cache) owned(fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no owner information")
	}
	if int(st.Uid) != c.uid {
		return fmt.Errorf("owned by uid %d, not %d: not trusted", st.Uid, c.uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("mode %v lets others write: not trusted", fi.Mode().Perm())
	}
	return nil
}

// Put stores elf as the entry for key, creating the directory (0700) if
// needed. The entry appears whole or not at all.
func (c *Cache) Put(key Key, elf []byte) error {
	if err := c.makeDir(c.dir); err != nil {
		return err
	}
	if err := c.checkDir(); err != nil {
		return err
	}
	hdr := make([]byte, headerSize)
	copy(hdr, magic)
	copy(hdr[16:], key[:])
	binary.LittleEndian.PutUint64(hdr[48:], uint64(len(elf)))
	binary.LittleEndian.PutUint32(hdr[56:], crc32.Checksum(elf, crcTable))
	c.removeStale(time.Now().Add(-staleAfter))
	return atomicfile.Write(c.path(key), 0o600, hdr, elf)
}

// makeDir makes dir, and the missing directories above it, each 0700
// whatever the umask, and only under a directory of ours: root running
// with a user's HOME made the user's ~/.cache root's, 0700, which locked
// the user out of it, and a umask of 0277 left a directory nobody could
// write, for good (both found by an audit). A dir that exists is left as
// it is (checkDir judges the cache's own).
func (c *Cache) makeDir(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if err := c.makeDir(parent); err != nil {
		return err
	}
	if pfi, err := os.Stat(parent); err != nil {
		return err
	} else if st, ok := pfi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != c.uid {
		return fmt.Errorf("%s not created: %s is not ours (uid %d)", dir, parent, c.uid)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// staleAfter is how old an entry's temporary file must be to be taken for
// one a killed govmm left behind: writing an entry takes well under a
// second, and another govmm may be writing one now.
const staleAfter = time.Hour

// removeStale removes the temporary files of entries (atomicfile's
// ".NAME.elf.*.tmp") of ours last written before cutoff: a govmm killed
// while it wrote an entry left its file, tens of MiB, for ever (an
// audit). Failures only leave them.
func (c *Cache) removeStale(cutoff time.Time) {
	tmps, _ := filepath.Glob(filepath.Join(c.dir, ".*.elf.*.tmp"))
	for _, p := range tmps {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && c.owned(fi) == nil && fi.ModTime().Before(cutoff) {
			os.Remove(p)
		}
	}
}
