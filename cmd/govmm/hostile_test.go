package main

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Hostile-guest tests: guests/hostile.c unbinds a virtio-pci function in
// the guest and drives it by hand, as a malicious driver would. govmm
// must keep running and bound what the guest makes it do, the guest must
// carry on afterwards, and a stop must win over whatever was queued.

// consoleTxMax is virtio's bound on the output of one transmit request.
const consoleTxMax = 64 << 10

// hostileBootBound bounds a whole hostile run: boot, attack, power-off.
// Generous: the two cores here are shared.
const hostileBootBound = 3 * time.Minute

// outputCounter counts everything written and keeps the first keepMax
// bytes: a guest may try to make govmm print gigabytes.
type outputCounter struct {
	mu    sync.Mutex
	total int64
	head  []byte
}

const keepMax = 8 << 20

func (c *outputCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total += int64(len(p))
	if room := keepMax - len(c.head); room > 0 {
		c.head = append(c.head, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (c *outputCounter) snapshot() (int64, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total, string(c.head)
}

// hostileVM is govmm running the test initramfs with `hostile ATTACK
// ROUNDS` as the guest's program.
type hostileVM struct {
	attack string
	cmd    *exec.Cmd
	out    *outputCounter // console output: the guest's lines and what it made devices print
	stderr *syncBuffer
	done   chan error // the exit, once
}

func startHostile(t *testing.T, attack string, rounds int, flags ...string) *hostileVM {
	t.Helper()
	kernel := needGuest(t)
	args := append([]string{"run", "--kernel", kernel, "--initrd", initramfs, "--mem", "512M",
		"--append", fmt.Sprintf("console=ttyS0 reboot=k panic=-1 quiet govmm.run=hostile,%s,%d", attack, rounds)}, flags...)
	vm := &hostileVM{attack: attack, cmd: exec.Command(govmmBin, args...), out: &outputCounter{},
		stderr: &syncBuffer{}, done: make(chan error, 1)}
	vm.cmd.Stdout, vm.cmd.Stderr = vm.out, vm.stderr
	if err := vm.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { vm.done <- vm.cmd.Wait() }()
	t.Cleanup(func() {
		vm.cmd.Process.Kill()
		<-vm.done
	})
	return vm
}

// waitExit waits up to bound for govmm to end and wants exit status 0.
func (vm *hostileVM) waitExit(t *testing.T, bound time.Duration) {
	t.Helper()
	select {
	case err := <-vm.done:
		vm.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("govmm: %v, want exit status 0\n%s", err, vm.report())
		}
	case <-time.After(bound):
		t.Fatalf("govmm still running after %v\n%s", bound, vm.report())
	}
}

// waitOutput waits until cond holds for the console output so far.
func (vm *hostileVM) waitOutput(t *testing.T, what string, cond func(total int64, text string) bool) {
	t.Helper()
	deadline := time.Now().Add(hostileBootBound)
	for {
		if cond(vm.out.snapshot()) {
			return
		}
		select {
		case err := <-vm.done:
			vm.done <- err
			t.Fatalf("govmm ended (%v) before %s\n%s", err, what, vm.report())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v\n%s", what, hostileBootBound, vm.report())
		}
	}
}

// report is the guest's own lines (not the binary a device was made to
// print) and govmm's stderr, for failure messages.
func (vm *hostileVM) report() string {
	total, text := vm.out.snapshot()
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "GOVMM-") || strings.HasPrefix(l, "HOSTILE-") || strings.HasPrefix(l, "hostile:") {
			lines = append(lines, l)
		}
	}
	return fmt.Sprintf("console (%d bytes), guest lines:\n%s\nstderr:\n%s", total, strings.Join(lines, "\n"), vm.stderr)
}

// checkCarriedOn checks that the attack finished and the guest went on:
// the HOSTILE-DONE line carries a token drawn after the attack (so it is
// no copy of guest memory a device was made to print), init's result line
// follows it, and the guest powered off by itself.
func (vm *hostileVM) checkCarriedOn(t *testing.T) {
	t.Helper()
	_, text := vm.out.snapshot()
	done := regexp.MustCompile(`HOSTILE-DONE ` + regexp.QuoteMeta(vm.attack) + ` [0-9a-f]{16}\r?\n`).FindStringIndex(text)
	if done == nil {
		t.Fatalf("no HOSTILE-DONE line\n%s", vm.report())
	}
	if !strings.Contains(text[done[1]:], "GOVMM-RESULT rc=0") {
		t.Errorf("the guest printed no GOVMM-RESULT rc=0 after the attack\n%s", vm.report())
	}
	if !strings.Contains(vm.stderr.String(), "guest powered off") {
		t.Errorf("the guest did not power off by itself\n%s", vm.report())
	}
	if m := regexp.MustCompile(`HOSTILE-ROUND ` + regexp.QuoteMeta(vm.attack) + ` [0-9]+ [^\n]*`).FindString(text); m != "" {
		t.Errorf("a round the device never completed: %s\n%s", m, vm.report())
	}
}

// A transmit chain of 64 descriptors, each covering all of guest RAM,
// would make 32 GiB of output per request: govmm prints at most
// consoleTxMax of each, completes every request, and the guest goes on.
func TestHostileConsoleChain(t *testing.T) {
	const rounds = 16
	vm := startHostile(t, "console-chain", rounds, "--console", "virtio")
	vm.waitExit(t, hostileBootBound)
	vm.checkCarriedOn(t)
	total, _ := vm.out.snapshot()
	// The guest's own lines are a few hundred bytes; 256 KiB of slack.
	if limit := int64(rounds*consoleTxMax + 256<<10); total > limit {
		t.Errorf("the console printed %d bytes for %d requests, want at most %d", total, rounds, limit)
	}
}

// SIGTERM while the guest keeps resubmitting that chain ends govmm, with
// status 0, within endBound.
func TestHostileConsoleChainSIGTERM(t *testing.T) {
	vm := startHostile(t, "console-chain", 0, "--console", "virtio")
	var start int64
	vm.waitOutput(t, "HOSTILE-START", func(total int64, text string) bool {
		if i := strings.Index(text, "HOSTILE-START console-chain"); i >= 0 {
			start = int64(i)
			return true
		}
		return false
	})
	// Two requests' worth of output past the start line: the attack is
	// under way.
	vm.waitOutput(t, "attack output", func(total int64, _ string) bool { return total > start+2*consoleTxMax })
	if err := vm.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	vm.waitExit(t, endBound)
	// An orderly end, as on any stop: the exit table is printed.
	if !strings.Contains(vm.stderr.String(), "TOTAL") {
		t.Errorf("no exit table after SIGTERM\n%s", vm.report())
	}
}
