// Package atomicfile writes a file whole or not at all.
package atomicfile

import (
	"io/fs"
	"os"
	"path/filepath"
)

// Write writes chunks, one after another, to a temporary file beside
// path and renames it over path, so a reader sees the old file or the
// new one, never half of it. The temporary file is created exclusively
// under a random name (a fixed one could be a symlink planted to make us
// write elsewhere), given perm, and removed on every failure.
func Write(path string, perm fs.FileMode, chunks ...[]byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
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
	for _, b := range chunks {
		if _, err := f.Write(b); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
