// Package atomicfile writes a file whole or not at all.
package atomicfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Write writes chunks, one after another, to a temporary file beside
// path and renames it over path, so a reader sees the old file or the
// new one, never half of it (see WriteFunc).
func Write(path string, perm fs.FileMode, chunks ...[]byte) error {
	return WriteFunc(path, perm, func(w io.Writer) error {
		for _, b := range chunks {
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// WriteFunc writes what write produces to a temporary file beside path
// and renames it over path, whatever path is now (a link is replaced,
// not followed). The temporary file is created exclusively under a
// random name (a fixed one could be a symlink planted to make us write
// elsewhere), given perm, and removed on every failure, write's included.
func WriteFunc(path string, perm fs.FileMode, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		// Named after path: the temporary name means nothing to a user.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return &fs.PathError{Op: "create", Path: path, Err: err}
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil { // CreateTemp made it 0600
		return err
	}
	if err := buffered(f, write); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Save is for the files a user names on govmm's command line (the exit
// table, the exit trace): /dev/stdout, /dev/stderr and a descriptor
// handed over (/dev/fd/N) are written through it (Stream); a FIFO or
// device at path (a pipe to jq)
// is written to as the stream it is; anything else is replaced whole by
// WriteFunc, 0644 (what govmm saves is no secret).
func Save(path string, write func(io.Writer) error) error {
	if f := Stream(path); f != nil {
		return buffered(f, write)
	}
	// Opening without O_CREAT or O_TRUNC changes nothing in a regular
	// file; a FIFO's open waits for its reader, as a shell's > would.
	if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOCTTY, 0); err == nil {
		if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
			err := buffered(f, write)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		}
		f.Close()
	}
	return WriteFunc(path, 0o644, write)
}

// CheckSave reports, before any work is done whose result Save would
// lose, why Save could not write path: it names a directory, or its
// directory is missing or not writable (Save creates a temporary file
// there), or it is a socket. A stream (Stream), FIFO or device is written
// as it is and passes; so does a path whose directory Save can write.
func CheckSave(path string) error {
	if Stream(path) != nil {
		return nil
	}
	if _, ok := descriptorOf(path); ok {
		return &fs.PathError{Op: "save", Path: path, Err: fmt.Errorf("not a descriptor handed to govmm open for writing (%w)", syscall.EBADF)}
	}
	if fi, err := os.Stat(path); err == nil {
		switch {
		case fi.IsDir():
			return &fs.PathError{Op: "save", Path: path, Err: syscall.EISDIR}
		case fi.Mode()&fs.ModeSocket != 0:
			// It cannot be opened, so Save replaced it: another VM's
			// QMP socket became a JSON file (found by an audit).
			return &fs.PathError{Op: "save", Path: path, Err: errors.New("is a socket")}
		case !fi.Mode().IsRegular():
			return nil
		}
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return &fs.PathError{Op: "save", Path: dir, Err: syscall.ENOTDIR}
	}
	// A temporary file made and removed, as Save will: access(2) said
	// yes for a working directory that had been removed, and the report
	// was lost after the run (found by an audit).
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return &fs.PathError{Op: "save into", Path: dir, Err: err}
	}
	f.Close()
	return os.Remove(f.Name())
}

// Stream returns the open descriptor path names, if it names one:
// /dev/stdout, /dev/stderr, and /dev/fd/N or /proc/self/fd/N for N of 1
// and up (a shell's "5> log" hands govmm descriptor 5), else nil. Those
// are links to the descriptor, and a shell's redirection makes it a
// regular file: reopened by name, it would be written from its start,
// over what went before; replaced, the link would be (and a temporary
// file cannot be made in /proc/self/fd: the report was lost after the
// run; found by an audit). Written through the descriptor, the output
// follows what is already there, as the shell's redirection means.
func Stream(path string) *os.File {
	switch path {
	case "/dev/stdout":
		return os.Stdout
	case "/dev/stderr":
		return os.Stderr
	}
	n, ok := descriptorOf(path)
	switch {
	case !ok || n == 0:
		return nil
	case n == 1:
		return os.Stdout
	case n == 2:
		return os.Stderr
	}
	if f, ok := inherited.Load(n); ok {
		return f.(*os.File)
	}
	// Only a descriptor handed over, open for writing: the Go runtime's
	// own (its epoll, its eventfd) passed for one, and the report was lost
	// after the run (found in review). What a shell hands over is not
	// close-on-exec, or the exec would have closed it; everything Go
	// opens is.
	fd, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0)
	if err != nil || fd&unix.FD_CLOEXEC != 0 {
		return nil // CheckSave says why
	}
	fl, err := unix.FcntlInt(uintptr(n), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_ACCMODE == unix.O_RDONLY {
		return nil
	}
	f, _ := inherited.LoadOrStore(n, os.NewFile(uintptr(n), path))
	return f.(*os.File)
}

// inherited holds the File of each descriptor above 2 a path named, made
// once and kept: os.NewFile's finalizer closes the descriptor once its
// File is collected.
var inherited sync.Map // int -> *os.File

// descriptorOf returns N if path is /dev/fd/N or /proc/self/fd/N.
func descriptorOf(path string) (int, bool) {
	rest, ok := strings.CutPrefix(path, "/dev/fd/")
	if !ok {
		rest, ok = strings.CutPrefix(path, "/proc/self/fd/")
	}
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}

func buffered(f *os.File, write func(io.Writer) error) error {
	w := bufio.NewWriterSize(f, 64<<10)
	if err := write(w); err != nil {
		return err
	}
	return w.Flush()
}
