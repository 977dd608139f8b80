package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/keepawake"
)

// childEnv names the confined child's job when the test binary runs as one.
const childEnv = "GOVMM_SANDBOX_TEST_CHILD"

// TestMain lets a test re-run this binary as a child that confines itself
// (a filter can never be taken off, so the test process itself stays free).
func TestMain(m *testing.M) {
	switch job := os.Getenv(childEnv); job {
	case "":
	case "landlock":
		os.Exit(landlockChild(os.Getenv("GOVMM_SANDBOX_TEST_DIR")))
	default:
		os.Exit(confinedChild(job))
	}
	os.Exit(m.Run())
}

// confinedChild installs the filter, then does job: "allowed" makes only
// calls govmm makes (a new thread, a file written and renamed) and exits
// 0; "forbidden" makes getppid(2) on a thread that existed before the
// filter ("forbidden-one-proc": with one P besides the keeper's); "fork"
// calls clone without CLONE_THREAD.
func confinedChild(job string) int {
	early := make(chan func())
	go func() { // a thread made before the filter: TSYNC must cover it
		runtime.LockOSThread()
		for f := range early {
			f()
		}
	}()
	if err := Seccomp(func() { fmt.Fprintln(os.Stderr, "onViolation ran") }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	switch job {
	case "allowed":
		done := make(chan error)
		go func() {
			runtime.LockOSThread() // a new thread after the filter
			dir := os.Getenv("GOVMM_SANDBOX_TEST_DIR")
			tmp := filepath.Join(dir, "out.tmp")
			err := os.WriteFile(tmp, []byte("x"), 0o644)
			if err == nil {
				err = os.Rename(tmp, filepath.Join(dir, "out"))
			}
			if err == nil {
				err = allowedLater(dir)
			}
			done <- err
		}()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 4
		}
		return 0
	case "forbidden", "forbidden-one-proc":
		if job == "forbidden-one-proc" {
			// govmm --go-procs 1: one P for everything but the keeper,
			// whose own P the supervisor must get to report.
			runtime.GOMAXPROCS(1)
			k, err := keepawake.Start()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 6
			}
			defer k.Stop()
		}
		done := make(chan struct{})
		early <- func() { unix.Getppid(); close(done) } // raw: it keeps its P
		<-done
		return 0 // not reached: the supervisor ends the process
	case "fork":
		// CLONE_SIGHAND without CLONE_VM: should the filter let it
		// through, the kernel refuses it (EINVAL) and nothing forks.
		unix.RawSyscall(unix.SYS_CLONE, unix.CLONE_SIGHAND, 0, 0)
		return 0
	}
	return 5
}

// allowedLater makes calls that only some hosts or paths bring after
// start, each of which an audit found the filter refusing: the Go
// runtime's naming of a mapping (PR_SET_VMA; EINVAL where the kernel
// lacks CONFIG_ANON_VMA_NAME, which is no refusal), a directory listing
// (the metrics' process collector on kernels before 6.2), and a new
// Linux AIO context (a cache=none disk whose context failed, reset).
func allowedLater(dir string) error {
	name := []byte("govmm test\x00")
	page, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	defer unix.Munmap(page)
	err = unix.Prctl(unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME, uintptr(unsafe.Pointer(&page[0])), 4096, uintptr(unsafe.Pointer(&name[0])))
	if err != nil && err != unix.EINVAL {
		return fmt.Errorf("prctl(PR_SET_VMA): %w", err)
	}
	if _, err := os.ReadDir(dir); err != nil {
		return err
	}
	var ctx uint64
	if _, _, e := unix.Syscall(unix.SYS_IO_SETUP, 1, uintptr(unsafe.Pointer(&ctx)), 0); e != 0 {
		return fmt.Errorf("io_setup: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IO_DESTROY, uintptr(ctx), 0, 0); e != 0 {
		return fmt.Errorf("io_destroy: %w", e)
	}
	return nil
}

func runChild(t *testing.T, job string) (exit int, stderr string) {
	t.Helper()
	return runChildIn(t, job, t.TempDir())
}

// childTimeout bounds a child: each ends in well under a second.
const childTimeout = time.Minute

// runChildIn runs the test binary as a child doing job in dir. A child
// still running after childTimeout is sent SIGQUIT, so that the failure
// shows where its goroutines were (the Go runtime prints them), instead
// of the test hanging until the package's timeout.
func runChildIn(t *testing.T, job, dir string) (exit int, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+job, "GOVMM_SANDBOX_TEST_DIR="+dir)
	var buf bytes.Buffer
	cmd.Stderr = &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	quit := time.AfterFunc(childTimeout, func() { cmd.Process.Signal(unix.SIGQUIT) })
	err := cmd.Wait()
	if !quit.Stop() {
		t.Fatalf("child %q still running after %v; its goroutines:\n%s", job, childTimeout, buf.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), buf.String()
}

func needSeccomp(t *testing.T) {
	t.Helper()
	if !seccomp.Supported() {
		t.Skip("this kernel has no seccomp filters")
	}
}

// The allow-list names only x86-64 calls that exist, and assembles.
func TestPolicyAssembles(t *testing.T) {
	for _, action := range []seccomp.Action{seccomp.ActionUserNotify, seccomp.ActionTrap} {
		if _, err := assemble(action); err != nil {
			t.Fatalf("default action %v: %v", action, err)
		}
	}
}

// A process that keeps to the list runs on, new threads and files
// included, and exits 0.
func TestAllowedCallsRun(t *testing.T) {
	needSeccomp(t)
	if code, stderr := runChild(t, "allowed"); code != 0 {
		t.Fatalf("confined child exited %d:\n%s", code, stderr)
	}
}

// A call outside the list, made on a thread that existed before the
// filter, is named on stderr, the hook runs and the exit status is 1.
func TestForbiddenCallReported(t *testing.T) {
	needSeccomp(t)
	code, stderr := runChild(t, "forbidden")
	want := regexp.MustCompile(`(?m)^govmm: seccomp: syscall 110 \(getppid\) from thread \d+ not allowed$`)
	if code != 1 || !want.MatchString(stderr) || !strings.Contains(stderr, "onViolation ran") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1, a line matching %s and the hook's line", code, stderr, want)
	}
}

// So is one made while the thread making it holds the one P that the
// keeper leaves (govmm --go-procs 1): the supervisor reports on the
// keeper's P, which each preemption signal frees for a moment.
func TestForbiddenCallReportedWithOneProc(t *testing.T) {
	needSeccomp(t)
	code, stderr := runChild(t, "forbidden-one-proc")
	if code != 1 || !strings.Contains(stderr, "syscall 110 (getppid)") || !strings.Contains(stderr, "onViolation ran") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 naming getppid, and the hook's line", code, stderr)
	}
}

// clone is allowed for threads only: one without CLONE_THREAD (a fork;
// Go's os/exec falls back to it when clone3 says ENOSYS) is reported.
func TestForkReported(t *testing.T) {
	needSeccomp(t)
	code, stderr := runChild(t, "fork")
	if code != 1 || !strings.Contains(stderr, "syscall 56 (clone)") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 naming clone", code, stderr)
	}
}
