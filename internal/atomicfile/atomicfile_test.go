package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A write that fails halfway leaves the old file as it was and no
// temporary file behind.
func TestFailedWriteKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "trace.json")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := Save(path, func(w io.Writer) error {
		w.Write(make([]byte, 1<<20)) // past the buffer: reaches the file
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Save: %v, want boom", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old\n" {
		t.Errorf("the old file now holds %d bytes", len(b))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want the old file only", len(entries))
	}
}

// WriteFunc puts a file where a link was; the link's target is untouched.
func TestReplaceDoesNotFollowLinks(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "trace.json")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	if err := WriteFunc(path, 0o644, func(w io.Writer) error { _, err := io.WriteString(w, "new\n"); return err }); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the link's target now holds %q", b)
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Fatalf("%s: %v (%v), want a regular 0644 file", path, fi.Mode(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new\n" {
		t.Errorf("%s holds %q", path, b)
	}
}

// /dev/stdout redirected to a file ("govmm run ... > log") is written
// after what the file already holds, through the descriptor, and the
// link in /dev stays a link.
func TestSaveStdoutAppendsToRedirectedFile(t *testing.T) {
	log, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	if _, err := log.WriteString("console output\n"); err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = log
	defer func() { os.Stdout = saved }()
	before, lerr := os.Lstat("/dev/stdout")
	err = Save("/dev/stdout", func(w io.Writer) error {
		_, err := io.WriteString(w, "{}\n")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(log.Name()); string(got) != "console output\n{}\n" {
		t.Errorf("log holds %q, want the output, then the JSON", got)
	}
	if after, err := os.Lstat("/dev/stdout"); lerr == nil && (err != nil || after.Mode() != before.Mode()) {
		t.Errorf("/dev/stdout was %v, now %v (%v)", before.Mode(), after.Mode(), err)
	}
}

// A file that cannot be created is named in the error as the caller
// named it, not by its temporary name.
func TestCreateErrorNamesPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-dir", "out.json")
	err := Write(path, 0o644, []byte("x"))
	if !errors.Is(err, os.ErrNotExist) || err.Error() != "create "+path+": no such file or directory" {
		t.Errorf("error %q, want create %s: no such file or directory", err, path)
	}
}

// CheckSave refuses, up front, what Save would fail on at the end.
func TestCheckSave(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{filepath.Join(dir, "new.json"), file, fifo, "/dev/null", "/dev/stdout"} {
		if err := CheckSave(ok); err != nil {
			t.Errorf("CheckSave(%s): %v", ok, err)
		}
	}
	bad := []string{dir, filepath.Join(dir, "missing", "x.json"), filepath.Join(file, "x.json")}
	if os.Geteuid() != 0 { // root writes anywhere
		bad = append(bad, filepath.Join(ro, "x.json"))
	}
	for _, p := range bad {
		if err := CheckSave(p); err == nil {
			t.Errorf("CheckSave(%s) = nil", p)
		} else {
			t.Logf("%s: %v", p, err)
		}
	}
}

// A report named by a descriptor a shell handed over (5> log: /dev/fd/5,
// /proc/self/fd/5) is written through it, after what the file held; one
// not open, open read-only, or opened by the process itself is refused
// by CheckSave; so is a relative path in a working directory since
// removed. They passed the check before and lost the report after the
// run (an audit; the process's own in review). The descriptors are
// handed to a child run of this test, as a shell hands them to govmm.
func TestSaveThroughDescriptorAndCheckGoneDir(t *testing.T) {
	if os.Getenv("GOVMM_ATOMICFILE_CHILD") != "" {
		os.Exit(descriptorChild())
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	if err := os.WriteFile(log, []byte("console\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSaveThroughDescriptorAndCheckGoneDir$")
	cmd.Env = append(os.Environ(), "GOVMM_ATOMICFILE_CHILD=1")
	cmd.ExtraFiles = []*os.File{w, r} // descriptors 3 and 4
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(log); string(b) != "console\n{}\n{}\n" {
		t.Errorf("the file holds %q, want the console's line, then both reports", b)
	}
	gone := t.TempDir()
	t.Chdir(gone)
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	if err := CheckSave("report.json"); err == nil {
		t.Error("CheckSave in a removed working directory passed")
	}
}

// descriptorChild checks, in the child, descriptor 3 (the log, for
// writing) and 4 (read-only) it was started with, and one it opens.
func descriptorChild() int {
	bad := 0
	for _, path := range []string{"/dev/fd/3", "/proc/self/fd/3"} {
		if err := CheckSave(path); err != nil {
			fmt.Println("CheckSave", path, err)
			bad++
		}
		if err := Save(path, func(w io.Writer) error { _, err := io.WriteString(w, "{}\n"); return err }); err != nil {
			fmt.Println("Save", path, err)
			bad++
		}
	}
	own, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer own.Close()
	for _, path := range []string{"/dev/fd/4", "/dev/fd/987", fmt.Sprintf("/dev/fd/%d", own.Fd())} {
		if err := CheckSave(path); err == nil || !strings.Contains(err.Error(), "not a descriptor handed to govmm") {
			fmt.Println("CheckSave", path, err, "want it refused")
			bad++
		}
	}
	if bad > 0 {
		return 1
	}
	return 0
}

// A socket at the path (another VM's QMP socket) cannot be opened to be
// written as a stream, so Save replaced it with the report: CheckSave
// refuses it at start (an audit).
func TestCheckSaveRefusesSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := CheckSave(path); err == nil || !strings.Contains(err.Error(), "is a socket") {
		t.Errorf("CheckSave(socket) = %v, want it refused", err)
	}
}
