package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"golang.org/x/sys/unix"
)

// endBound is how long govmm may take to exit once told: a generous bound
// on "it ends at all", not a performance target. The failures it guards
// against (work a guest queued, a hung save) go on for minutes or for
// ever; 10 s was exceeded once by a correct govmm on a host running
// several suites at once (load average 25 on two cores).
const endBound = 30 * time.Second

// ttyVM is a govmm whose console is a pseudo-terminal, with a QMP socket.
type ttyVM struct {
	cmd     *exec.Cmd
	master  *os.File // the user's side of the terminal
	slave   *os.File // govmm's stdin and stdout
	before  *unix.Termios
	sock    string
	mon     *qmp.SocketMonitor
	console *syncBuffer // what the guest printed
	stderr  *syncBuffer
}

// startOnTTY boots the test initramfs (running a long sleep) in govmm on a
// new terminal with a QMP socket and extra flags, and returns once the
// guest is ready and the terminal is in raw mode.
func startOnTTY(t *testing.T, flags ...string) *ttyVM { return startTTY(t, nil, flags...) }

// startTTY is startOnTTY with govmm's stderr on errPipe, when not nil.
func startTTY(t *testing.T, errPipe *stderrPipe, flags ...string) *ttyVM {
	t.Helper()
	kernel := needGuest(t)
	master, slave := openPTY(t)
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	args := append([]string{"run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2", "--qmp", "unix:" + sock,
		"--append", "console=ttyS0 reboot=k panic=-1 quiet govmm.run=sleep,600"}, flags...)
	vm := &ttyVM{cmd: exec.Command(govmmBin, args...), master: master, slave: slave, before: before,
		sock: sock, console: &syncBuffer{}, stderr: &syncBuffer{}}
	vm.cmd.Stdin, vm.cmd.Stdout, vm.cmd.Stderr = slave, slave, vm.stderr
	if errPipe != nil {
		vm.cmd.Stderr = errPipe.w
	}
	if err := vm.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if errPipe != nil {
		go errPipe.copyTo(vm.stderr)
	}
	t.Cleanup(func() { vm.cmd.Process.Kill(); vm.cmd.Wait() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			vm.console.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	vm.mon = waitQMP(t, sock, vm.stderr)
	t.Cleanup(func() { vm.mon.Disconnect() })
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(vm.console.String(), "GOVMM-READY") {
		if time.Now().After(deadline) {
			t.Fatalf("guest not ready in time; console:\n%s\nstderr:\n%s", vm.console, vm.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	during, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if during.Lflag&unix.ICANON != 0 {
		t.Errorf("terminal not in raw mode while the guest runs")
	}
	return vm
}

// pause stops the vCPUs over QMP.
func (vm *ttyVM) pause(t *testing.T) {
	t.Helper()
	if err := runQMP(vm.mon, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if s := status(t, vm.mon); s != "paused" {
		t.Fatalf("status after stop %q, want paused", s)
	}
}

// waitEnd waits for govmm to exit with status code, and checks that it
// left nothing behind: the terminal is as it was and the QMP socket is
// gone. (Its threads need no check: an exited process has none, and once
// Wait has reaped it a look at /proc/PID/task could only fail on PID
// reuse.)
func (vm *ttyVM) waitEnd(t *testing.T, code int) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- vm.cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		switch {
		case err == nil && code != 0, err != nil && !errors.As(err, &ee):
			t.Errorf("govmm ended with %v, want exit status %d; stderr:\n%s", err, code, vm.stderr)
		case err != nil && ee.ExitCode() != code:
			t.Errorf("govmm: %v, want exit status %d; stderr:\n%s", err, code, vm.stderr)
		}
	case <-time.After(endBound):
		t.Fatalf("govmm still running %v later; stderr:\n%s", endBound, vm.stderr)
	}
	after, err := unix.IoctlGetTermios(int(vm.slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	b := vm.before
	if after.Lflag != b.Lflag || after.Iflag != b.Iflag || after.Oflag != b.Oflag || after.Cflag != b.Cflag {
		t.Errorf("terminal not restored: lflag %#x -> %#x, iflag %#x -> %#x", b.Lflag, after.Lflag, b.Iflag, after.Iflag)
	}
	if _, err := os.Lstat(vm.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("QMP socket left behind: %v", err)
	}
}

// Every way a user ends govmm works on a running VM and on one paused
// over QMP (where none did: a parked vCPU never woke for a stop). Each
// ends govmm with status 0, as QEMU, with the exit table printed.
func TestEndRunningAndPaused(t *testing.T) {
	ends := []struct {
		name string
		end  func(t *testing.T, vm *ttyVM)
		says string // in the report line
	}{
		{"quit", func(t *testing.T, vm *ttyVM) {
			if err := runQMP(vm.mon, "quit", nil, nil); err != nil {
				t.Fatal(err)
			}
		}, "govmm: "},
		{"SIGTERM", func(t *testing.T, vm *ttyVM) { vm.cmd.Process.Signal(syscall.SIGTERM) }, "signal terminated"},
		{"SIGINT", func(t *testing.T, vm *ttyVM) { vm.cmd.Process.Signal(syscall.SIGINT) }, "signal interrupt"},
		{"Ctrl-A x", func(t *testing.T, vm *ttyVM) {
			if _, err := vm.master.Write([]byte{ctrlA, 'x'}); err != nil {
				t.Fatal(err)
			}
		}, "govmm: "},
	}
	for _, paused := range []bool{false, true} {
		for _, e := range ends {
			name := e.name + " running"
			if paused {
				name = e.name + " paused"
			}
			t.Run(name, func(t *testing.T) {
				vm := startOnTTY(t)
				if paused {
					vm.pause(t)
				}
				e.end(t, vm)
				vm.waitEnd(t, 0)
				for _, want := range []string{e.says, "TIMEINGUEST"} {
					if !strings.Contains(vm.stderr.String(), want) {
						t.Errorf("stderr lacks %q:\n%s", want, vm.stderr)
					}
				}
			})
		}
	}
}

// A shell that took the terminal back while govmm was stopped (SIGSTOP,
// then fg) leaves it cooked: govmm puts it back in raw mode when it
// continues, as QEMU does on SIGCONT, so Ctrl-A x (and Ctrl-C, for the
// guest) work again.
func TestRawModeAfterStopAndContinue(t *testing.T) {
	vm := startOnTTY(t)
	fd := int(vm.slave.Fd())
	if err := vm.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// What the shell does once its job stopped.
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, vm.before); err != nil {
		t.Fatal(err)
	}
	if err := vm.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(endBound)
	for {
		now, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if now.Lflag&(unix.ICANON|unix.ISIG|unix.ECHO) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("terminal still cooked %v after SIGCONT (lflag %#x)", endBound, now.Lflag)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := vm.master.Write([]byte{ctrlA, 'x'}); err != nil {
		t.Fatal(err)
	}
	vm.waitEnd(t, 0)
}

// Ctrl-A x quits even behind a paste the guest cannot read (here it is
// paused): govmm reads the terminal on, holding what waits for the guest
// up to a bound, and says how much beyond it was dropped.
func TestCtrlAXBehindUnreadPaste(t *testing.T) {
	vm := startOnTTY(t)
	vm.pause(t)
	go func() {
		vm.master.Write([]byte(strings.Repeat("pasted text ", 32<<10)))
		vm.master.Write([]byte{ctrlA, 'x'})
	}()
	vm.waitEnd(t, 0)
	if !strings.Contains(vm.stderr.String(), "bytes of terminal input dropped: the guest did not read its console") {
		t.Errorf("stderr does not count the dropped input:\n%s", vm.stderr)
	}
}

// A second SIGTERM or SIGINT ends govmm even when its shutdown hangs:
// here the exit table's file is a FIFO nobody reads, so saving the table
// blocks for ever. The second signal exits with status 1 and a
// one-line message, and still restores the terminal and removes the
// socket. Once the VM has ended on its own (here by QMP quit) the first
// signal does the same: a supervisor's one SIGTERM before its SIGKILL
// must not be swallowed waiting for a second (found by a lifecycle
// audit, session 16).
func TestSecondSignalForcesExit(t *testing.T) {
	signal := func(s syscall.Signal) func(*ttyVM) error {
		return func(vm *ttyVM) error { return vm.cmd.Process.Signal(s) }
	}
	quit := func(vm *ttyVM) error { return runQMP(vm.mon, "quit", nil, nil) }
	for _, tc := range []struct {
		name   string
		end    func(*ttyVM) error // ends the VM
		report string             // in the report that follows
		signal syscall.Signal     // then sent while the table is saved
		last   string             // the last line's start
	}{
		{"SIGTERM twice", signal(syscall.SIGTERM), "with signal", syscall.SIGTERM, "govmm: second signal (terminated)"},
		{"SIGTERM then SIGINT", signal(syscall.SIGTERM), "with signal", syscall.SIGINT, "govmm: second signal (interrupt)"},
		{"SIGINT then SIGTERM", signal(syscall.SIGINT), "with signal", syscall.SIGTERM, "govmm: second signal (terminated)"},
		{"quit then SIGTERM", quit, "quit over QMP", syscall.SIGTERM, "govmm: signal (terminated) after the VM ended"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := filepath.Join(t.TempDir(), "table.json")
			if err := syscall.Mkfifo(table, 0o600); err != nil {
				t.Fatal(err)
			}
			// --exit-stats=false: nothing is printed between the report
			// and saving the table, so the message is the last line
			// whenever the signal comes (with the table printed, the
			// message could come before its last lines).
			vm := startOnTTY(t, "--exit-stats=false", "--exit-stats-json", table)
			vm.pause(t)
			if err := tc.end(vm); err != nil {
				t.Fatal(err)
			}
			// The report, whole (it ends with the RAM touched), comes
			// just before the table is saved.
			deadline := time.Now().Add(endBound)
			for e := vm.stderr.String(); !strings.Contains(e, tc.report) || !strings.HasSuffix(e, " MiB\n"); e = vm.stderr.String() {
				if time.Now().After(deadline) {
					t.Fatalf("no report %v after the VM's end; stderr:\n%s", endBound, vm.stderr)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err := vm.cmd.Process.Signal(tc.signal); err != nil {
				t.Fatal(err)
			}
			vm.waitEnd(t, 1)
			lines := strings.Split(strings.TrimRight(vm.stderr.String(), "\n"), "\n")
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, tc.last) {
				t.Errorf("last line %q, want %s ...", last, tc.last)
			}
			if fi, err := os.Lstat(table); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
				t.Errorf("the FIFO was replaced although saving the table hung: %v, %v", fi.Mode(), err)
			}
		})
	}
}

// A closed stdout (govmm run ... | head -c 10) costs the console output,
// not the VM: govmm runs the guest to its end and exits 0 with its
// report, where SIGPIPE used to kill it at the guest's next line, with
// no report, exit table or clean-up (found by a lifecycle audit).
func TestClosedStdoutKeepsRunning(t *testing.T) {
	kernel := needGuest(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // the reader is gone before govmm writes a byte
	var stderr syncBuffer
	cmd := exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--exit-stats=false",
		"--append", "console=ttyS0 reboot=k panic=-1 govmm.run=true")
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil || !strings.Contains(stderr.String(), "guest powered off") {
			t.Fatalf("govmm: %v, want exit status 0 and the report; stderr:\n%s", err, &stderr)
		}
	case <-time.After(endBound):
		cmd.Process.Kill()
		<-done
		t.Fatalf("govmm still running %v after the guest's end\n%s", endBound, &stderr)
	}
}

// stderrPipe is a stderr for govmm that the test can stop reading and
// fill, so that govmm's next write to stderr blocks.
type stderrPipe struct {
	r, w   *os.File
	held   atomic.Bool
	copied chan struct{} // closed when copyTo has returned
}

func newStderrPipe(t *testing.T) *stderrPipe {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return &stderrPipe{r: r, w: w, copied: make(chan struct{})}
}

// copyTo copies what govmm writes into buf until fill.
func (p *stderrPipe) copyTo(buf *syncBuffer) {
	defer close(p.copied)
	b := make([]byte, 4096)
	for !p.held.Load() {
		n, err := p.r.Read(b)
		buf.Write(b[:n])
		if err != nil {
			return
		}
	}
}

// fill stops reading the pipe and fills it up.
func (p *stderrPipe) fill(t *testing.T) {
	t.Helper()
	p.held.Store(true)
	if _, err := p.w.Write([]byte{'\n'}); err != nil { // wakes copyTo's Read
		t.Fatal(err)
	}
	<-p.copied
	fd := int(p.w.Fd())
	// Non-blocking only while filling: the flag is shared with govmm's
	// descriptor, which must block again afterwards.
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	defer unix.SetNonblock(fd, false)
	for {
		if _, err := unix.Write(fd, []byte{'x'}); errors.Is(err, unix.EAGAIN) {
			return
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// The second signal ends govmm even when the shutdown hangs on stderr
// itself (a pipe nobody reads): neither the report nor the one-line
// message can be written, and it still exits with status 1, the terminal
// restored and the socket removed.
func TestSecondSignalWithStderrBlocked(t *testing.T) {
	errPipe := newStderrPipe(t)
	vm := startTTY(t, errPipe)
	errPipe.fill(t)
	if err := vm.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Once the VM has ended, the next thing govmm does is write the
	// report to the full pipe.
	deadline := time.Now().Add(endBound)
	for status(t, vm.mon) != "shutdown" {
		if time.Now().After(deadline) {
			t.Fatalf("VM not shut down %v after SIGTERM", endBound)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := vm.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	vm.waitEnd(t, 1)
}

// A stderr nobody reads does not hold the guest: the device warnings a
// boot logs (unclaimed ports, on the vCPU's thread) go through a sink
// that drops what the pipe does not take, where the vCPU used to block in
// the write and the guest never booted (found by a lifecycle audit). Once
// the pipe is read again govmm ends as usual.
func TestBlockedStderrHoldsNoVCPU(t *testing.T) {
	kernel := needGuest(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fd := int(w.Fd()) // once: Fd makes the descriptor blocking again
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := unix.Write(fd, []byte{'x'}); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		t.Fatal(err)
	}
	var console syncBuffer
	cmd := exec.Command(govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--exit-stats=false",
		"--append", "console=ttyS0 reboot=k panic=-1 quiet govmm.run=true")
	cmd.Stdout, cmd.Stderr = &console, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	for deadline := time.Now().Add(endBound); !strings.Contains(console.String(), "GOVMM-READY"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the guest did not boot within %v with stderr full; console:\n%s", endBound, &console)
		}
	}
	go io.Copy(io.Discard, r)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("govmm: %v", err)
		}
	case <-time.After(endBound):
		t.Fatalf("govmm still running %v after stderr was read again", endBound)
	}
}
