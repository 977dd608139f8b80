package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govmm/govmm/internal/testenv"
)

// guestDir holds the shared PVM kernel the benchmarks boot; the tests
// boot testenv.LinuxGuest's kernel (needGuest) and initramfs.
var (
	guestDir     = "../../../shared/guest"
	_, initramfs = testenv.LinuxGuest("../..", "vmlinux")
)

var govmmBin string

// TestMain builds the govmm binary once: these tests run it as a user does.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "govmm-cli")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	govmmBin = filepath.Join(dir, "govmm")
	// As `make build` builds it: static, without libc (less RSS). With
	// GOVMM_TEST_RACE=1 (make test-race) the race detector's build
	// instead, which needs cgo: every test then also looks for data
	// races in the govmm it runs (a race report fails the run's exit).
	build := exec.Command("go", "build", "-o", govmmBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if os.Getenv("GOVMM_TEST_RACE") == "1" {
		build = exec.Command("go", "build", "-race", "-o", govmmBin, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
	}
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build govmm: %v\n%s", err, out)
		os.Exit(1)
	}
	// The bzImage boots fill a kernel cache of their own, not the
	// user's ~/.cache/govmm.
	os.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needKVM(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); errors.Is(err, os.ErrNotExist) {
		t.Skip("no /dev/kvm on this machine")
	}
}

// needGuest returns the kernel the boot tests boot on this host: it skips
// without /dev/kvm and fails where /dev/kvm exists but the kernel or
// initramfs does not, so no boot test passes by skipping.
func needGuest(t *testing.T) string {
	t.Helper()
	needKVM(t)
	k, initrd := testenv.LinuxGuest("../..", "vmlinux")
	testenv.NeedLinux(t, k, initrd)
	return k
}

// benchKernel returns the shared PVM kernel the VM benchmarks boot with
// initrd: it skips without /dev/kvm and fails where /dev/kvm exists but
// either file does not (testenv.NeedLinux).
func benchKernel(b *testing.B, initrd string) string {
	b.Helper()
	kernel := guestDir + "/vmlinux"
	testenv.NeedLinux(b, kernel, initrd)
	return kernel
}

// writeFile makes a test input file of the given content.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Bad input: each is a one-line error naming the problem and a non-zero
// exit, before or instead of any guest running.
func TestBadInput(t *testing.T) {
	kernel := needGuest(t)
	bzPath, _ := testenv.LinuxGuest("../..", "bzImage")
	testenv.NeedLinux(t, bzPath, initramfs)
	bz, err := os.ReadFile(bzPath)
	if err != nil {
		t.Fatal(err)
	}
	truncated := writeFile(t, "truncated-bzImage", bz[:len(bz)/2])
	notKernel := writeFile(t, "notes.txt", []byte("this is not a kernel\n"))
	bigInitrd := testenv.SparseFile(t, "big.cpio", nil, 64<<20)
	// Files larger than any guest, sparse: refused unread, not read
	// until the heap runs out.
	hugeInitrd := testenv.SparseFile(t, "huge.cpio", nil, 30<<30)
	hugeBzImage := testenv.SparseFile(t, "huge-bzImage", bz[:0x400], 30<<30)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error line
	}{
		{"no kernel flag", []string{"run"}, "--kernel is required"},
		{"kernel is a directory", []string{"run", "--kernel", t.TempDir()}, "not a regular file"},
		{"kernel is a FIFO", []string{"run", "--kernel", fifo}, "not a regular file"},
		{"initrd is a FIFO", []string{"run", "--kernel", kernel, "--initrd", fifo}, "not a regular file"},
		{"initrd of 30 GiB", []string{"run", "--kernel", kernel, "--initrd", hugeInitrd}, "initrd (32212254720 bytes) does not fit"},
		{"bzImage of 30 GiB", []string{"run", "--kernel", hugeBzImage}, "larger than guest memory"},
		{"missing kernel file", []string{"run", "--kernel", "/nonexistent/bzImage"}, "no such file"},
		{"unknown flag", []string{"run", "--kernel", kernel, "--frobnicate"}, "frobnicate"},
		{"unknown command", []string{"walk"}, "unknown command"},
		{"mem 0", []string{"run", "--kernel", kernel, "--mem", "0"}, "--mem"},
		{"mem garbage", []string{"run", "--kernel", kernel, "--mem", "lots"}, "--mem"},
		{"mem too large", []string{"run", "--kernel", kernel, "--mem", "1025G"}, "--mem 1074790400K: at most 1024 GiB"},
		{"smp 0", []string{"run", "--kernel", kernel, "--smp", "0"}, "--smp 0"},
		{"smp too many", []string{"run", "--kernel", kernel, "--smp", "100000"}, "--smp 100000"},
		{"truncated bzImage", []string{"run", "--kernel", truncated}, "truncated-bzImage"},
		{"not a kernel", []string{"run", "--kernel", notKernel}, "not a Linux kernel"},
		{"initrd larger than memory", []string{"run", "--kernel", kernel, "--mem", "32M", "--initrd", bigInitrd}, "initrd"},
		{"cmdline too long", []string{"run", "--kernel", kernel, "--append", strings.Repeat("x", 5000)}, "command line"},
		{"disk is a directory", []string{"run", "--kernel", kernel, "--disk", t.TempDir() + ",ro"}, "is a directory: a disk must be a regular file or a block device"},
		{"disk is a FIFO", []string{"run", "--kernel", kernel, "--disk", fifo + ",ro"}, "is a FIFO"},
		{"mem-path missing", []string{"run", "--kernel", kernel, "--mem-path", "/nonexistent/hugepages"}, "--mem-path /nonexistent/hugepages: no such file"},
		{"mem-path not hugetlbfs", []string{"run", "--kernel", kernel, "--mem-path", t.TempDir()}, "not a hugetlbfs mount"},
		{"mem-hugepages garbage", []string{"run", "--kernel", kernel, "--mem-hugepages=maybe"}, "mem-hugepages"},
		{"on-panic garbage", []string{"run", "--kernel", kernel, "--on-panic", "reboot"}, `--on-panic "reboot"`},
		{"go-procs negative", []string{"run", "--kernel", kernel, "--go-procs", "-1"}, "--go-procs -1"},
		{"go-procs too many", []string{"run", "--kernel", kernel, "--go-procs", "100000"}, "--go-procs 100000"},
		{"exit-trace-events 0", []string{"run", "--kernel", kernel, "--exit-trace", "t.json", "--exit-trace-events", "0"}, "--exit-trace-events 0"},
		{"guest-symbols is a FIFO", []string{"run", "--kernel", kernel, "--guest-symbols", fifo}, "not a regular file"},
		{"truncated bzImage, protected boot", []string{"run", "--kernel", truncated, "--boot", "protected"}, "lies beyond the end"},
		{"exit-stats-json in a missing directory", []string{"run", "--kernel", kernel, "--exit-stats-json", "/nonexistent/x.json"}, "--exit-stats-json: stat /nonexistent: no such file"},
		{"exit-stats-json is a directory", []string{"run", "--kernel", kernel, "--exit-stats-json", t.TempDir()}, "is a directory"},
		{"exit-trace in a missing directory", []string{"run", "--kernel", kernel, "--exit-trace", "/nonexistent/t.json"}, "--exit-trace: stat /nonexistent: no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(govmmBin, tc.args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.Stdin = nil
			start := time.Now()
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("exit %v, want a non-zero status; stderr:\n%s", err, stderr.String())
			}
			msg := strings.TrimRight(stderr.String(), "\n")
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line:\n%s", msg)
			}
			if !strings.HasPrefix(msg, "govmm: ") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not name %q", msg, tc.want)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v to fail", d)
			}
		})
	}
}

// openPTY returns the master and slave ends of a new pseudo-terminal.
func openPTY(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

type syncBuffer = testenv.SyncBuffer

// A guest that powers off: exit status 0 and an exit table with serial
// exits on stderr.
func TestRunPrintsExitTable(t *testing.T) {
	kernel := needGuest(t)
	cmd := exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("govmm run: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "GOVMM-READY") {
		t.Errorf("no ready line on the console:\n%s", stdout.String())
	}
	for _, want := range []string{"guest powered off", "IO:serial", "TIMEINGUEST", "TOTAL"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), "open-files limit") {
		t.Errorf("warned of the open-files limit at the default one:\n%s", stderr.String())
	}
	// The 8250 driver's probe of COM2-4 is expected: a plain boot warns
	// of nothing (it printed 18 unclaimed-port lines).
	if strings.Contains(stderr.String(), "unclaimed") {
		t.Errorf("a plain boot logged unclaimed accesses:\n%s", stderr.String())
	}
	cmd = exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--exit-stats=false")
	stderr.Reset()
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("govmm run --exit-stats=false: %v\nstderr:\n%s", err, stderr.String())
	}
	if strings.Contains(stderr.String(), "TIMEINGUEST") {
		t.Errorf("--exit-stats=false still printed a table:\n%s", stderr.String())
	}
}

// --mem above 3 GiB: the guest gets all of it (RAM past 3 GiB at 4 GiB),
// and the end-of-run report counts what it touched there too. The guest
// touches tens of MiB of its 5 GiB.
func TestRunMemAbove3G(t *testing.T) {
	kernel := needGuest(t)
	cmd := exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--mem", "5G",
		"--append", "console=ttyS0 reboot=k panic=-1 quiet govmm.run=grep,MemTotal,/proc/meminfo")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("govmm run --mem 5G: %v\nstderr:\n%s", err, stderr.String())
	}
	m := regexp.MustCompile(`MemTotal: +(\d+) kB`).FindStringSubmatch(stdout.String())
	if m == nil || !strings.Contains(stdout.String(), "GOVMM-RESULT rc=0") {
		t.Fatalf("no MemTotal from the guest:\n%s", stdout.String())
	}
	// 5 GiB less what the kernel keeps for itself; low RAM alone is 3 GiB.
	if kb, _ := strconv.ParseUint(m[1], 10, 64); kb < 4<<20 {
		t.Errorf("guest's MemTotal is %d kB, want more than 4 GiB", kb)
	}
	if !regexp.MustCompile(`guest RAM touched [0-9.]+ MiB`).MatchString(stderr.String()) {
		t.Errorf("no guest RAM report on stderr:\n%s", stderr.String())
	}
}

// An open-files limit that leaves govmm too few descriptors once the VM
// is set up is told at start: what needs one later fails only then (a
// QMP client is not even accepted), with the VM long running.
func TestLowFileLimitWarns(t *testing.T) {
	kernel := needGuest(t)
	cmd := exec.Command("sh", "-c", `ulimit -n 24 && exec "$@"`, "sh",
		govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--exit-stats=false",
		"--qmp", "unix:"+filepath.Join(t.TempDir(), "qmp.sock"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("govmm run at ulimit -n 24: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "warning: the open-files limit (24) leaves") {
		t.Errorf("no warning of the open-files limit:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "guest powered off") {
		t.Errorf("the guest did not run to its end:\n%s", stderr.String())
	}
}

// --exit-stats-json saves the table; `govmm stat --diff` compares two.
func TestSavedTablesDiff(t *testing.T) {
	kernel := needGuest(t)
	dir := t.TempDir()
	for _, name := range []string{"a.json", "b.json"} {
		cmd := exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--exit-stats-json", filepath.Join(dir, name))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("govmm run: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "p99(us)") {
			t.Errorf("the printed table has no percentiles:\n%s", out)
		}
		if saved, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !strings.Contains(string(saved), `"p999_us":`) {
			t.Errorf("the saved table has no percentiles (%v)", err)
		}
	}
	out, err := exec.Command(govmmBin, "stat", "--diff", filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")).CombinedOutput()
	if err != nil {
		t.Fatalf("govmm stat --diff: %v\n%s", err, out)
	}
	for _, want := range []string{"IO:serial", "TIMEINGUEST", "count A", "count B", "p99 A(us)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("diff lacks %q:\n%s", want, out)
		}
	}
	bad := writeFile(t, "bad.json", []byte("{not json"))
	if out, err := exec.Command(govmmBin, "stat", "--diff", bad, filepath.Join(dir, "a.json")).CombinedOutput(); err == nil {
		t.Errorf("a corrupt table was accepted:\n%s", out)
	}
}
