package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// hostileDisk makes a disk image that starts with the magic the guest's
// legal reads check for, and returns its path and its SHA-256.
func hostileDisk(t *testing.T) (string, [32]byte) {
	t.Helper()
	data := make([]byte, 4<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	copy(data, "GOVMM-HOSTILE-DISK")
	return writeFile(t, "hostile.img", data), sha256.Sum256(data)
}

func checkDisk(t *testing.T, path string, want [32]byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(data) != want {
		t.Errorf("the disk image changed, though the guest wrote nothing legal")
	}
}

// hostileAttack is one attack of guests/hostile.c.
type hostileAttack struct {
	name   string
	rounds int // in the run to completion
	disk   bool
	flags  []string
}

// start boots govmm on the attack, repeated rounds times (0: without
// end), and returns a check that the disk, if any, is unchanged.
func (a hostileAttack) start(t *testing.T, rounds int) (*hostileVM, func()) {
	t.Helper()
	if !a.disk {
		return startHostile(t, a.name, rounds, a.flags...), func() {}
	}
	disk, sum := hostileDisk(t)
	vm := startHostile(t, a.name, rounds, append(a.flags, "--disk", disk)...)
	return vm, func() { checkDisk(t, disk, sum) }
}

var hostileAttacks = []hostileAttack{
	// A transmit chain of 64 descriptors, each covering all of guest
	// RAM: 32 GiB of output per request if copied.
	{name: "console-chain", rounds: 16, flags: []string{"--console", "virtio"}},
	// One indirect table of 4096 such descriptors: 2 TiB per request.
	{name: "console-indirect", rounds: 16, flags: []string{"--console", "virtio"}},
	// The whole ring full of READs of seg_max pages (~1 MiB) each.
	{name: "blk-reads", rounds: 2, disk: true},
	// The same ring, and status 0 (reset) while the device works on it.
	{name: "blk-reset", rounds: 3, disk: true},
	// Addresses outside RAM, bad sizes, looping chains, I/O past the end.
	{name: "blk-bad", rounds: 2, disk: true},
	// Notifications with nothing new, for queues that do not exist, all
	// over the notify area.
	{name: "notify-storm", rounds: 1, disk: true},
	// Status and queue registers written out of order.
	{name: "status-games", rounds: 2, disk: true},
}

// Each attack runs to completion: govmm bounds its output to consoleTxMax
// per request, the guest goes on (a legal read after each block attack
// finds the disk as it was, checked in the guest) and powers off, and the
// disk image is unchanged.
func TestHostileGuest(t *testing.T) {
	for _, a := range hostileAttacks {
		t.Run(a.name, func(t *testing.T) {
			vm, diskUnchanged := a.start(t, a.rounds)
			vm.waitExit(t, hostileBootBound)
			vm.checkCarriedOn(t)
			total, _ := vm.out.snapshot()
			// The guest's own lines are a few KiB; 256 KiB of slack.
			if limit := int64(a.rounds*consoleTxMax + 256<<10); total > limit {
				t.Errorf("the console printed %d bytes in %d rounds, want at most %d", total, a.rounds, limit)
			}
			diskUnchanged()
		})
	}
}

// SIGTERM while the guest repeats an attack without end ends govmm, with
// status 0 and its exit table, within endBound.
func TestHostileGuestSIGTERM(t *testing.T) {
	for _, a := range hostileAttacks {
		t.Run(a.name, func(t *testing.T) {
			vm, diskUnchanged := a.start(t, 0)
			marker := "HOSTILE-FIRST-ROUND " + a.name
			vm.waitOutput(t, marker, func(_ int64, text string) bool { return strings.Contains(text, marker) })
			if err := vm.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			vm.waitExit(t, endBound)
			// An orderly end, as on any stop: the exit table is printed.
			if !strings.Contains(vm.stderr.String(), "TOTAL") {
				t.Errorf("no exit table after SIGTERM\n%s", vm.report())
			}
			diskUnchanged()
		})
	}
}

// selffeedDisk is the disk of the blk-selffeed attacks: sector s holds a
// virtio-blk request header (IN, sector s+1 mod 65536) and then the
// available ring's flags and idx (1, s+2 mod 65536), so that each read
// the device completes queues the next one.
func selffeedDisk(t *testing.T) string {
	t.Helper()
	const sectors = 65536
	data := make([]byte, sectors*512)
	for s := 0; s < sectors; s++ {
		sec := data[s*512:]
		binary.LittleEndian.PutUint32(sec[0:], 0) // VIRTIO_BLK_T_IN
		binary.LittleEndian.PutUint64(sec[8:], uint64((s+1)%sectors))
		binary.LittleEndian.PutUint16(sec[16:], 1) // VIRTQ_AVAIL_F_NO_INTERRUPT
		binary.LittleEndian.PutUint16(sec[18:], uint16(s+2))
	}
	return writeFile(t, "selffeed.img", data)
}

// A guest whose block request refills itself from the device's own
// writes keeps the device busy for ever without a vCPU's help, on a
// notifier goroutine or (notified by an MMIO exit) on the vCPU's own
// thread. A host stop, pause or reset must still win within endBound,
// and a paused VM's device must do nothing: before the guest audit of
// session 16 SIGTERM, QMP stop and system_reset waited for it for ever
// (the first two only for the MMIO notification), and a paused VM went
// on reading the disk.
func TestHostileSelfFeedingRing(t *testing.T) {
	for _, v := range []struct{ name, attack, flag string }{
		{"ioeventfd", "blk-selffeed", ""},
		{"mmio-exit", "blk-selffeed-mmio", ""},
		// Every notification an exit; cont's kick then has no notifier.
		{"no-ioeventfd", "blk-selffeed", "--no-ioeventfd"},
	} {
		attack := v.attack
		marker := "HOSTILE-FIRST-ROUND " + attack
		boot := func(t *testing.T, flags ...string) *hostileVM {
			flags = append(flags, "--smp", "2", "--disk", selffeedDisk(t)+",ro")
			if v.flag != "" {
				flags = append(flags, v.flag)
			}
			vm := startHostile(t, attack, 0, flags...)
			vm.waitOutput(t, marker, func(_ int64, text string) bool { return strings.Contains(text, marker) })
			return vm
		}
		t.Run(v.name+"/SIGTERM", func(t *testing.T) {
			vm := boot(t)
			if err := vm.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			vm.waitExit(t, endBound)
		})
		t.Run(v.name+"/stop-cont-reset-quit", func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "qmp.sock")
			vm := boot(t, "--qmp", "unix:"+sock)
			mon, err := dialQMP(sock, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer mon.Disconnect()
			within := func(cmd string, f func() error) {
				t.Helper()
				done := make(chan error, 1)
				go func() { done <- f() }()
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("%s: %v", cmd, err)
					}
				case <-time.After(endBound):
					t.Fatalf("%s did not return within %v\n%s", cmd, endBound, vm.report())
				}
			}
			reads := func() float64 {
				t.Helper()
				var stats []struct {
					Stats struct {
						RdOperations float64 `json:"rd_operations"`
					} `json:"stats"`
				}
				within("query-blockstats", func() error { return runQMP(mon, "query-blockstats", nil, &stats) })
				if len(stats) != 1 {
					t.Fatalf("query-blockstats: %d disks", len(stats))
				}
				return stats[0].Stats.RdOperations
			}
			within("stop", func() error { return runQMP(mon, "stop", nil, nil) })
			// Paused, the device takes no request: no read completes
			// between two looks (the ring refills itself ~100,000 times
			// a second when it is served).
			before := reads()
			time.Sleep(100 * time.Millisecond)
			if after := reads(); after != before {
				t.Errorf("paused, the disk served %.0f more reads", after-before)
			}
			// cont gives the queue back, and the notification the pause
			// cut short is not lost: the reads go on (and cont returns).
			within("cont", func() error { return runQMP(mon, "cont", nil, nil) })
			for deadline := time.Now().Add(endBound); reads() == before; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("no read within %v of cont\n%s", endBound, vm.report())
				}
			}
			within("stop", func() error { return runQMP(mon, "stop", nil, nil) })
			within("system_reset", func() error { return runQMP(mon, "system_reset", nil, nil) })
			within("quit", func() error { return runQMP(mon, "quit", nil, nil) })
			vm.waitExit(t, endBound)
		})
	}
}
