// Package regfile opens input files that must be regular files.
package regfile

import (
	"fmt"
	"os"
	"syscall"
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
