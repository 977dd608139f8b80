package virtio

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// directIO is the O_DIRECT side of a disk opened with cache=none
// (BlockConfig.Direct): the guest's reads and writes go between guest
// memory and the host's disk without a copy in the host's page cache, as
// QEMU's cache.direct=on. O_DIRECT wants the file offset, the length and
// every buffer aligned; a request that is not still succeeds:
//
//   - buffers in the wrong place (an address or a length not aligned)
//     go through an aligned bounce buffer, still with O_DIRECT;
//   - an offset or a total length that is not a multiple of offAlign
//     (sector-sized I/O on a disk with 4 KiB logical blocks) goes through
//     the page cache on the image's ordinary descriptor. The kernel keeps
//     the two coherent: a direct read or write first writes back and
//     drops the cached pages it covers. Such buffered I/O never shares a
//     page with a direct request that does not also cover its sectors,
//     because offAlign is at least a page whenever it is above a sector.
type directIO struct {
	f  *os.File // the image opened again with O_DIRECT
	fd int
	// memAlign is what buffer addresses must be multiples of, offAlign
	// what offsets and lengths (each buffer's and the total) must be.
	memAlign, offAlign int
	bounces            sync.Pool // *[]byte, blkIOChunk aligned bytes

	// What took a slower path, for tests and curious users.
	bounced  atomic.Uint64 // transfers through a bounce buffer
	buffered atomic.Uint64 // transfers through the page cache
}

// openDirect opens the image f (already open and locked) again with
// O_DIRECT, through /proc/self/fd so that it is the same file whatever
// happened to its path since.
func openDirect(f *os.File, readOnly bool) (*directIO, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	df, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), flag|unix.O_DIRECT, 0)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("cache=none: its file system does not support O_DIRECT: %w", err)
		}
		return nil, fmt.Errorf("cache=none: open with O_DIRECT: %w", err)
	}
	d := &directIO{f: df, fd: int(df.Fd())}
	d.memAlign, d.offAlign = dioAlignment(d.fd)
	if d.offAlign > SectorSize {
		d.offAlign = max(d.offAlign, os.Getpagesize())
	}
	size := blkIOChunk
	d.bounces.New = func() any {
		b := alignedBuffer(size, max(d.memAlign, os.Getpagesize()))
		return &b
	}
	return d, nil
}

// dioAlignment is the alignment O_DIRECT I/O on fd needs: of buffer
// addresses, and of offsets and lengths. statx knows it for files (Linux
// 6.1 and later, and for block devices from 6.11); otherwise a block
// device's logical block size, otherwise 4096, which is right for any
// file system on disks of 512-byte or 4 KiB sectors.
func dioAlignment(fd int) (mem, off int) {
	var st unix.Statx_t
	if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN|unix.STATX_TYPE, &st) == nil {
		if st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_mem_align > 0 && st.Dio_offset_align > 0 {
			return int(st.Dio_mem_align), int(st.Dio_offset_align)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			if n, err := unix.IoctlGetInt(fd, unix.BLKSSZGET); err == nil && n > 0 {
				return n, n
			}
		}
	}
	return 4096, 4096
}

// Close closes the O_DIRECT descriptor.
func (d *directIO) Close() error { return d.f.Close() }

// dioPath is how one transfer goes.
type dioPath int

const (
	dioDirect   dioPath = iota // straight between guest memory and the disk
	dioBounce                  // through an aligned bounce buffer
	dioBuffered                // through the page cache
)

// path picks the way for iov at off.
func (d *directIO) path(iov [][]byte, off int64) dioPath {
	if off%int64(d.offAlign) != 0 {
		return dioBuffered
	}
	total, aligned := 0, true
	for _, b := range iov {
		total += len(b)
		aligned = aligned && len(b)%d.offAlign == 0 && (len(b) == 0 || addressOf(b)%uintptr(d.memAlign) == 0)
	}
	switch {
	case total%d.offAlign != 0:
		return dioBuffered
	case !aligned:
		return dioBounce
	}
	return dioDirect
}

// bounce reads the image at off into iov, or writes iov there, through
// an aligned buffer; the iov's total length is a multiple of offAlign and
// at most blkIOChunk.
func (d *directIO) bounce(iov [][]byte, off int64, write bool) (int, error) {
	d.bounced.Add(1)
	p := d.bounces.Get().(*[]byte)
	defer d.bounces.Put(p)
	total := 0
	for _, b := range iov {
		total += len(b)
	}
	buf := (*p)[:total]
	if write {
		copied := 0
		for _, b := range iov {
			copied += copy(buf[copied:], b)
		}
		return unix.Pwrite(d.fd, buf, off)
	}
	n, err := unix.Pread(d.fd, buf, off)
	if n > 0 {
		copied := 0
		for _, b := range iov {
			if copied == n {
				break
			}
			copied += copy(b, buf[copied:n])
		}
	}
	return n, err
}

// rw is one preadv or pwritev of iov at off on the image, the way b's
// cache mode and iov's alignment want it.
func (b *Block) rw(iov [][]byte, off int64, write bool) (int, error) {
	d := b.direct
	if d == nil {
		return vectorIO(b.fd, iov, off, write)
	}
	var n int
	var err error
	switch d.path(iov, off) {
	case dioDirect:
		n, err = vectorIO(d.fd, iov, off, write)
	case dioBounce:
		n, err = d.bounce(iov, off, write)
	default:
		return b.viaPageCache(iov, off, write)
	}
	if refusedDirect(err) {
		return b.viaPageCache(iov, off, write)
	}
	return n, err
}

// refusedDirect reports whether O_DIRECT refused a transfer for its
// alignment after all (EINVAL: the alignment the device believed was
// wrong), which then goes through the page cache (viaPageCache). This is
// the one place that decides it, for rw and for AIO's completions
// (finishAIO) alike.
func refusedDirect(err error) bool { return errors.Is(err, unix.EINVAL) }

// viaPageCache is one transfer of a cache=none disk through the page
// cache, which takes any alignment.
func (b *Block) viaPageCache(iov [][]byte, off int64, write bool) (int, error) {
	b.direct.buffered.Add(1)
	return vectorIO(b.fd, iov, off, write)
}

func vectorIO(fd int, iov [][]byte, off int64, write bool) (int, error) {
	if write {
		return unix.Pwritev(fd, iov, off)
	}
	return unix.Preadv(fd, iov, off)
}
