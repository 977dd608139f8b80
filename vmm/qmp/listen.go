package qmp

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// maxSocketPath is sun_path's capacity less the terminating NUL.
const maxSocketPath = 107

// listenPrivate creates a listening unix socket at path that only the owner
// can connect to, whatever the process umask.
//
// bind(2) creates the socket file with the umask applied, and changing the
// umask is process-wide, so it would race with every other goroutine that
// creates files. Instead the socket is bound inside a fresh 0700 directory
// next to path, chmod'ed to 0600 there (nobody else can reach it yet), and
// hard-linked into place. link(2) fails if path exists, so taking the name
// is atomic: two servers cannot both believe they own it.
//
// It returns the listener and the socket's identity, so Close removes the
// file only while it is still ours.
func listenPrivate(path string) (*net.UnixListener, os.FileInfo, error) {
	if len(path) > maxSocketPath {
		return nil, nil, fmt.Errorf("qmp: socket path %s is longer than %d bytes", path, maxSocketPath)
	}
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".qmp")
	if err != nil {
		return nil, nil, fmt.Errorf("qmp: listen %s: %w", path, err)
	}
	tmp := filepath.Join(tmpDir, "s")
	// Each by name: RemoveAll needs a descriptor to list the directory,
	// and at a tight open-files limit left it behind (an audit).
	defer func() {
		os.Remove(tmp)
		os.Remove(tmpDir)
	}()
	// MkdirTemp's 0700 passes through the umask: under 0277 the
	// directory was unwritable and bind failed (an audit).
	if err := os.Chmod(tmpDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("qmp: listen %s: %w", path, err)
	}
	if len(tmp) > maxSocketPath {
		return nil, nil, fmt.Errorf("qmp: listen %s: temporary socket path %s is longer than %d bytes", path, tmp, maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("qmp: listen %s: %w", path, err)
	}
	// The listener's own name goes away below; Close removes path instead.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		ln.Close()
		return nil, nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(fmt.Errorf("qmp: listen %s: %w", path, err))
	}
	for tries := 0; ; tries++ {
		err := os.Link(tmp, path)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || tries >= 3 {
			return fail(fmt.Errorf("qmp: listen %s: %w", path, err))
		}
		if err := removeStale(path); err != nil {
			return fail(err)
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("qmp: listen %s: %w", path, err))
	}
	return ln, fi, nil
}

// removeStale removes path if it is a socket nobody listens on: what a
// crashed VMM leaves behind. Anything else at path is an error; the server
// never deletes a file it cannot prove dead.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // gone meanwhile: try the link again
	}
	if err != nil {
		return fmt.Errorf("qmp: listen %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("qmp: listen %s: file exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("qmp: listen %s: socket is in use", path)
	}
	// Only a refused connection proves that nobody listens; a full backlog
	// (EAGAIN) or a permission error means somebody might.
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("qmp: listen %s: probing existing socket: %w", path, err)
	}
	// The file probed, not one put there meanwhile: a govmm starting at
	// the same moment over the same stale socket may have removed it and
	// linked its live one in its place, which this would have deleted,
	// leaving that govmm running unreachable (found by an audit; 15 of
	// 200 simultaneous starts). What is left between this look and the
	// removal is microseconds, not the dial's.
	if now, err := os.Lstat(path); err != nil || !os.SameFile(fi, now) {
		return nil // changed: try the link again
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("qmp: listen %s: removing stale socket: %w", path, err)
	}
	return nil
}
