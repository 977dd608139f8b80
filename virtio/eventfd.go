package virtio

import (
	"encoding/binary"
	"os"
	"syscall"

	"github.com/govmm/govmm/internal/nbsys"
	"golang.org/x/sys/unix"
)

// eventfdReader reads a non-blocking eventfd in Go's poller: the wait is
// the poller's, the read a raw system call (internal/nbsys says why). One
// goroutine reads it at a time.
type eventfdReader struct {
	f    *os.File
	rc   syscall.RawConn
	read func(fd uintptr) bool // made once: a closure per Read would allocate
	buf  [8]byte
	err  error
}

// newEventfdReader reads f, an eventfd opened EFD_NONBLOCK.
func newEventfdReader(f *os.File) (*eventfdReader, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &eventfdReader{f: f, rc: rc}
	r.read = func(fd uintptr) bool {
		_, r.err = nbsys.Read(int(fd), r.buf[:])
		return r.err != unix.EAGAIN
	}
	return r, nil
}

// Read waits until the eventfd is signalled, or f's read deadline passes
// (os.ErrDeadlineExceeded), and returns its counter, which the read
// clears.
func (r *eventfdReader) Read() (uint64, error) {
	if err := r.rc.Read(r.read); err != nil {
		return 0, err
	}
	if r.err != nil {
		return 0, r.err
	}
	return binary.LittleEndian.Uint64(r.buf[:]), nil
}
