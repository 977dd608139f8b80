// Package regfile opens input files that must be regular files.
package regfile

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// Open opens path for reading, which must be a regular file, and returns
// its size. Nothing is read, so callers can check sizes first. O_NONBLOCK
// keeps a FIFO from blocking the open until it is refused; it changes
// nothing for a regular file.
func Open(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s: not a regular file", path)
	}
	return f, st.Size(), nil
}

// Stamp is what a write to a file changes: its size and the time of its
// last data change. Not the inode's change time, which a rename over it
// or its removal moves too.
type Stamp struct {
	Size  int64
	MTime time.Time
}

// StampOf returns f's stamp now.
func StampOf(f *os.File) (Stamp, error) {
	fi, err := f.Stat()
	if err != nil {
		return Stamp{}, err
	}
	return Stamp{Size: fi.Size(), MTime: fi.ModTime()}, nil
}

// Same reports whether two stamps of a file say it was not written in
// between.
func (s Stamp) Same(o Stamp) bool { return s.Size == o.Size && s.MTime.Equal(o.MTime) }
