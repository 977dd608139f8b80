package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/govmm/govmm/internal/atomicfile"
	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// Files are what a confined govmm may still open by path once its VM is
// built. Everything else on the file system is refused (EACCES), whatever
// the user's permissions: a guest that took over the VMM, or a QMP client
// naming a file, reaches only these. Empty paths (a flag not given) are
// left out.
type Files struct {
	// ReadDirs are directories whose files are read at run time (the
	// kernel cache, /proc/self for the metrics' process collector). A
	// path that is not a directory gets no rule: a kernel cache given as
	// a file is unusable anyway, and Landlock refuses a directory's
	// rights on a file, which failed the whole start (found by an audit).
	ReadDirs []string
	// ReadFiles are files read at run time (/proc/stat, from which the
	// process collector takes the boot time behind
	// process_start_time_seconds).
	ReadFiles []string
	// Outputs are the files govmm writes at run time: its reports.
	// Streams need nothing (atomicfile.Save writes /dev/stdout,
	// /dev/stderr and /dev/fd/N, bash's >(cmd) included, through the
	// descriptors); a FIFO or device may be written in place;
	// anything else is created, replaced (a temporary file renamed
	// over it) or removed in its directory, which is therefore open to
	// that for every file in it.
	Outputs []string
	// Removed are files govmm only removes (its QMP socket, at exit): in
	// their directories it may remove files, and create or write none.
	Removed []string
}

const (
	readDir    = ll.AccessFSReadFile | ll.AccessFSReadDir
	writeFile  = ll.AccessFSWriteFile | ll.AccessFSTruncate
	replaceDir = readDir | writeFile | ll.AccessFSMakeReg | ll.AccessFSRemoveFile
)

// Landlock confines every thread of the process to files, as far as the
// kernel's Landlock goes (best effort). It reports whether the kernel
// enforces it at all: false on a kernel without Landlock, where it does
// nothing. Call it before Seccomp, whose filter does not allow Landlock's
// system calls.
func Landlock(files Files) (bool, error) {
	if abi, err := ll.LandlockGetABIVersion(); err != nil || abi < 1 {
		return false, nil
	}
	// Loaded on first use: once confined, /etc/localtime could no longer
	// be read and log lines would switch to UTC.
	_ = time.Now().Local()
	var inPlace, dirs, removeDirs []string
	for _, p := range files.Outputs {
		if p == "" || atomicfile.Stream(p) != nil {
			continue // written through the descriptor govmm has
		}
		if fi, err := os.Stat(p); err == nil && !fi.Mode().IsRegular() && !fi.IsDir() {
			inPlace = append(inPlace, p)
		} else {
			dirs = append(dirs, filepath.Dir(p))
		}
	}
	for _, p := range files.Removed {
		if p == "" {
			continue // filepath.Dir would make it the working directory
		}
		removeDirs = append(removeDirs, filepath.Dir(p))
	}
	rules := []landlock.Rule{
		landlock.PathAccess(readDir, directories(reachable(files.ReadDirs))...),
		landlock.PathAccess(ll.AccessFSReadFile, reachable(files.ReadFiles)...),
		landlock.PathAccess(writeFile, reachable(inPlace)...),
		landlock.PathAccess(replaceDir, reachable(dirs)...),
		landlock.PathAccess(ll.AccessFSRemoveFile, reachable(removeDirs)...),
	}
	if err := landlock.V11.BestEffort().RestrictPaths(rules...); err != nil {
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			// go-landlock calls this a bug of its own; it is the limit.
			return false, fmt.Errorf("landlock: no file descriptor left for its ruleset: raise the open-files limit (ulimit -n)")
		}
		return false, fmt.Errorf("landlock: %w", err)
	}
	return true, nil
}

// reachable returns the paths govmm can reach at all (open with O_PATH, as
// Landlock does for its rules): one that does not exist, or lies behind a
// directory govmm may not search (a kernel cache of another user's), is
// out of reach anyway and needs no rule.
func reachable(paths []string) []string {
	var out []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		unix.Close(fd)
		out = append(out, p)
	}
	return out
}

// directories returns those of paths that are directories.
func directories(paths []string) []string {
	var out []string
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			out = append(out, p)
		}
	}
	return out
}
