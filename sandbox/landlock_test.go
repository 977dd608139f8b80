package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// landlockChild confines itself to some of the files under dir, laid
// out by TestLandlockConfines, then checks every kind of access from a
// thread made before Landlock and from one made after: exit 0 if each
// was allowed or refused as Files says, else 1 with the wrong ones on
// stderr.
func landlockChild(dir string) int {
	early := make(chan func())
	go func() { // a thread made before Landlock: it must be confined too
		runtime.LockOSThread()
		for f := range early {
			f()
		}
	}()
	p := func(name string) string { return filepath.Join(dir, name) }
	// An empty path (a flag not given) must not become the working
	// directory's.
	if err := os.Chdir(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// An anonymous pipe's end handed over and named by path, as bash's
	// >(cmd) gives it (not close-on-exec): Landlock takes no rule on a
	// pipe (a rule for it failed the start) and needs none.
	_, pw, err := os.Pipe()
	if err == nil {
		_, err = unix.FcntlInt(pw.Fd(), unix.F_SETFD, 0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pipe := fmt.Sprintf("/proc/self/fd/%d", pw.Fd())
	on, err := Landlock(Files{
		ReadDirs:  []string{p("cache"), p("no-such-dir"), p("cache-file")},
		ReadFiles: []string{p("stat"), p("no-such-file")},
		Outputs:   []string{p("out/stats.json"), p("out/trace.json"), os.DevNull, "/dev/stdout", pipe, ""},
		Removed:   []string{p("run/qmp.sock"), ""},
	})
	if err != nil || !on {
		fmt.Fprintln(os.Stderr, "Landlock:", on, err)
		return 2
	}
	checks := []struct {
		what    string
		allowed bool
		do      func() error
	}{
		// The kernel and initrd stay open from the start: a reset
		// opens neither by path.
		{"read the kernel", false, func() error { _, err := os.ReadFile(p("kernel")); return err }},
		{"read a file given as a directory", false, func() error { _, err := os.ReadFile(p("cache-file")); return err }},
		{"read a file given as a file", true, func() error { _, err := os.ReadFile(p("stat")); return err }},
		{"write a file given to read", false, func() error { return os.WriteFile(p("stat"), nil, 0) }},
		{"read a file beside it", false, func() error { _, err := os.ReadFile(p("secret")); return err }},
		{"write the kernel", false, func() error { return os.WriteFile(p("kernel"), nil, 0) }},
		{"read a cache entry", true, func() error { _, err := os.ReadFile(p("cache/entry")); return err }},
		{"list the cache", true, func() error { _, err := os.ReadDir(p("cache")); return err }},
		{"write into the cache", false, func() error { return os.WriteFile(p("cache/new"), nil, 0o600) }},
		{"replace an output", true, func() error {
			if err := os.WriteFile(p("out/.tmp"), []byte("x"), 0o644); err != nil {
				return err
			}
			return os.Rename(p("out/.tmp"), p("out/stats.json"))
		}},
		{"remove an output", true, func() error { return os.Remove(p("out/stats.json")) }},
		{"make a directory among the outputs", false, func() error { return os.Mkdir(p("out/d"), 0o755) }},
		{"write elsewhere", false, func() error { return os.WriteFile(p("elsewhere"), nil, 0o644) }},
		{"remove the socket", true, func() error {
			// One stand-in for each thread's try.
			for _, n := range []string{"run/qmp.sock", "run/qmp2.sock"} {
				if err := os.Remove(p(n)); !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			return fs.ErrNotExist
		}},
		{"create beside the socket", false, func() error { return os.WriteFile(p("run/x"), nil, 0o644) }},
		{"read beside the socket", false, func() error { _, err := os.ReadFile(p("run/other")); return err }},
		{"write a device output", true, func() error { return os.WriteFile(os.DevNull, []byte("x"), 0) }},
		{"write an anonymous pipe output", true, func() error { return os.WriteFile(pipe, []byte("x"), 0) }},
		{"read beside the device", false, func() error { _, err := os.ReadFile("/dev/zero"); return err }},
	}
	bad := 0
	for _, c := range checks {
		for _, thread := range []string{"early", "new"} {
			got := make(chan error)
			run := func() { got <- c.do() }
			if thread == "early" {
				early <- run
			} else {
				go func() { runtime.LockOSThread(); run() }()
			}
			err := <-got
			if c.allowed && err != nil || !c.allowed && !errors.Is(err, fs.ErrPermission) {
				fmt.Fprintf(os.Stderr, "%s (%s thread): %v, want allowed %v\n", c.what, thread, err, c.allowed)
				bad++
			}
			if c.allowed && c.what == "remove an output" {
				os.WriteFile(p("out/.tmp"), []byte("x"), 0o644) // for the next thread
				os.Rename(p("out/.tmp"), p("out/stats.json"))
			}
		}
	}
	if bad > 0 {
		return 1
	}
	return 0
}

// Landlock leaves a confined govmm the files Files names, in the ways it
// names, on every thread, and refuses the rest with EACCES.
func TestLandlockConfines(t *testing.T) {
	if abi, err := ll.LandlockGetABIVersion(); err != nil || abi < 1 {
		t.Skip("this kernel has no Landlock")
	}
	dir := t.TempDir()
	for _, d := range []string{"cache", "out", "run"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"kernel", "secret", "cache-file", "stat", "cache/entry", "run/qmp.sock", "run/qmp2.sock", "run/other"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if code, stderr := runChildIn(t, "landlock", dir); code != 0 {
		t.Fatalf("confined child exited %d:\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "elsewhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused write left a file behind: %v", err)
	}
}
