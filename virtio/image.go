package virtio

import (
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openImage opens a disk image, which must be a regular file or a block
// device, takes the locks QEMU takes on it, and returns its size in bytes.
// O_NONBLOCK keeps a FIFO from blocking the open until it is refused; it
// is cleared once the file is known to be a disk.
func openImage(path string, readOnly bool) (*os.File, int64, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("virtio-blk: open disk image: %w", err)
	}
	fail := func(err error) (*os.File, int64, error) {
		f.Close()
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("virtio-blk: %s: %w", path, err))
	}
	if m := fi.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		return fail(fmt.Errorf("virtio-blk: %s is a %s: a disk must be a regular file or a block device", path, fileKind(m)))
	}
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		return fail(fmt.Errorf("virtio-blk: %s: %w", path, err))
	}
	if err := lockImage(int(f.Fd()), readOnly); err != nil {
		return fail(fmt.Errorf("virtio-blk: %s: %w", path, err))
	}
	// Seek rather than Stat: a block device's Stat size is 0.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fail(fmt.Errorf("virtio-blk: size of %s: %w", path, err))
	}
	return f, size, nil
}

// fileKind names a file type for an error message.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeCharDevice != 0:
		return "character device"
	}
	return "special file"
}

// QEMU's image locking (block/file-posix.c, raw_apply_lock_bytes and
// raw_check_lock_bytes), so that QEMU and govmm refuse each other's
// images as they refuse their own. Each block-layer permission i has two
// bytes: a read lock on permLockBase+i says "I use permission i", one on
// sharedLockBase+i says "nobody else may". The locks are open file
// description (OFD) locks, which conflict between two descriptors of one
// process too.
const (
	permLockBase   = 100
	sharedLockBase = 200

	permConsistentRead = 0 // BLK_PERM_CONSISTENT_READ's bit
	permWrite          = 1 // BLK_PERM_WRITE's bit
)

// permNames are QEMU's names of the permissions govmm locks, for errors.
var permNames = [...]string{permConsistentRead: "consistent read", permWrite: "write"}

// lockImage takes what a QEMU 7.2 virtio-blk device without share-rw
// takes: it uses consistent read (and write, unless readOnly) and shares
// everything but write. Like QEMU it locks first and checks second, so
// two openers racing both see each other rather than both getting in.
func lockImage(fd int, readOnly bool) error {
	use := []int{permConsistentRead, permWrite}
	if readOnly {
		use = use[:1]
	}
	unshared := []int{permWrite}
	for _, off := range append(offsets(permLockBase, use), offsets(sharedLockBase, unshared)...) {
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart, Start: off, Len: 1}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
			return fmt.Errorf("lock byte %d: %w", off, err)
		}
	}
	// Someone who forbids sharing a permission we use, or uses one we do
	// not share, holds a lock we could not upgrade to a write lock
	// (QEMU's qemu_lock_fd_test). Our own locks on fd do not count.
	check := func(base int64, perms []int, what string) error {
		for _, p := range perms {
			lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: base + int64(p), Len: 1}
			if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
				return fmt.Errorf("test lock byte %d: %w", lk.Start, err)
			}
			if lk.Type != unix.F_UNLCK {
				return fmt.Errorf("in use by another VM (QEMU or govmm): failed to get %s%q lock", what, permNames[p])
			}
		}
		return nil
	}
	if err := check(sharedLockBase, use, ""); err != nil {
		return err
	}
	return check(permLockBase, unshared, "shared ")
}

// ImageInUse reports whether the file at path is a disk image a VM
// (QEMU or govmm) has open: one holds a lock on its consistent-read byte.
// A file that cannot be opened is not reported in use.
func ImageInUse(path string) bool {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: permLockBase + permConsistentRead, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}

// offsets are the lock bytes of perms above base.
func offsets(base int64, perms []int) []int64 {
	var offs []int64
	for _, p := range perms {
		offs = append(offs, base+int64(p))
	}
	return offs
}
