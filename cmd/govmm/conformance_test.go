package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goqemu "github.com/digitalocean/go-qemu/qemu"
	goqmp "github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
	landlocksys "github.com/landlock-lsm/go-landlock/landlock/syscall"

	"github.com/govmm/govmm/internal/testenv"
)

// The go-qemu conformance test boots the test guest under govmm and, where
// it is installed, under QEMU 7.2 on the same kernel, and plays each
// scenario below on both through go-qemu (qemu.Domain and qmp/raw) as a
// go-qemu user would. It compares behaviour, not only JSON: the replies
// and errors of each call, the run states, the events and their data
// (reason, guest), whether the connection and the VM are still there, and
// the process's exit status. Every scenario states what QEMU does (want);
// QEMU is held to it too, so the table is checked against the reference
// wherever QEMU runs.

// observation is what one VMM did in one scenario.
type observation struct {
	// Steps are the calls' results and checkpoints, in order.
	Steps []string
	// Events are every event received, as "NAME" or "NAME guest=G
	// reason=R", in order, until the connection closed.
	Events []string
}

// scenario is one row of the conformance table.
type scenario struct {
	name string
	// run is govmm.run (commas for spaces); the guest powers off when it
	// returns (or reboots, with exit "reboot").
	run, exit string
	// button is govmm.button (the test initramfs answers the ACPI power
	// button unless it is "ignore").
	button string
	// ready makes the scenario wait for the guest's GOVMM-READY line, by
	// which its power button handler listens.
	ready bool
	// qemuArgs are added to QEMU's command line (-no-reboot, say), and
	// govmmArgs to govmm's (--no-reboot); {dir} in govmmArgs is a
	// directory of the test's, session.dir.
	qemuArgs, govmmArgs []string
	// commands and events are the ones the scenario exercises: every
	// command govmm lists in query-commands must be in some scenario.
	commands, events []string
	play             func(s *session)
	want             observation
	// govmmOnly marks govmm's own commands (and those QEMU 7.2 dropped
	// but go-qemu still calls): QEMU does not play them.
	govmmOnly bool
	// pending, if set, says why govmm does not behave as QEMU yet: the
	// scenario then runs against QEMU only, so that the expectation stays
	// checked, and the govmm half is skipped with this message. Whoever
	// makes govmm match deletes the line.
	pending string
}

// guestSleep keeps the guest busy (and the VM running) for the length of
// any scenario.
const guestSleep = "sleep,600"

var scenarios = []scenario{
	{
		name: "queries", run: guestSleep,
		commands: []string{"qmp_capabilities", "query-status", "query-version", "query-commands", "query-kvm",
			"query-cpus-fast", "query-block", "query-blockstats", "query-pci", "query-memory-size-summary", "quit"},
		events: []string{"SHUTDOWN"},
		play: func(s *session) {
			s.status()
			s.query("query-version", func() (any, error) { return s.rm.QueryVersion() })
			s.query("query-commands", func() (any, error) { return s.rm.QueryCommands() })
			s.query("query-kvm", func() (any, error) {
				k, err := s.rm.QueryKVM()
				s.step(fmt.Sprintf("kvm enabled=%v present=%v", k.Enabled, k.Present))
				return k, err
			})
			s.query("query-cpus-fast", nil)
			s.query("query-block", func() (any, error) {
				b, err := s.d.BlockDevices()
				for _, d := range b {
					s.step(fmt.Sprintf("block ro=%v drv=%s format=%s virtual-size=%d", d.Inserted.ReadOnly, d.Inserted.Driver,
						d.Inserted.Image.Format, d.Inserted.Image.VirtualSize))
				}
				if _, err := s.rm.QueryBlock(); err != nil {
					s.step("raw QueryBlock: " + err.Error())
				}
				return b, err
			})
			s.query("query-blockstats", func() (any, error) {
				b, err := s.d.BlockStats()
				s.step(fmt.Sprintf("blockstats %d device(s)", len(b)))
				if _, err := s.rm.QueryBlockstats(nil); err != nil {
					s.step("raw QueryBlockstats: " + err.Error())
				}
				return b, err
			})
			s.query("query-pci", func() (any, error) {
				p, err := s.d.PCIDevices()
				if _, err := s.rm.QueryPCI(); err != nil {
					s.step("raw QueryPCI: " + err.Error())
				}
				return p, err
			})
			s.query("query-memory-size-summary", func() (any, error) {
				m, err := s.rm.QueryMemorySizeSummary()
				plugged := "absent"
				if m.PluggedMemory != nil {
					plugged = fmt.Sprint(*m.PluggedMemory)
				}
				s.step(fmt.Sprintf("memory base=%d plugged=%s", m.BaseMemory, plugged))
				return m, err
			})
			s.call("no-such-command")
		},
		want: observation{
			Steps: []string{"status running", "query-version: ok", "query-commands: ok",
				"kvm enabled=true present=true", "query-kvm: ok", "query-cpus-fast: ok",
				"block ro=false drv=raw format=raw virtual-size=1048576", "query-block: ok",
				"blockstats 1 device(s)", "query-blockstats: ok", "query-pci: ok",
				"memory base=536870912 plugged=0", "query-memory-size-summary: ok",
				"no-such-command: The command no-such-command has not been found",
				"connection open", "VM running", "quit: ok", "exit status 0"},
			Events: []string{"SHUTDOWN guest=false reason=host-qmp-quit"},
		},
	},
	{
		name: "govmm's own and go-qemu's legacy queries", run: guestSleep, govmmOnly: true,
		commands: []string{"query-cpus", "query-exit-stats"},
		play: func(s *session) {
			s.query("query-cpus", func() (any, error) {
				c, err := s.d.CPUs()
				s.step(fmt.Sprintf("%d CPUs", len(c)))
				if _, err := s.rm.QueryCpus(); err != nil {
					s.step("raw QueryCpus: " + err.Error())
				}
				return c, err
			})
			s.query("query-exit-stats", nil)
		},
		want: observation{
			Steps:  []string{"2 CPUs", "query-cpus: ok", "query-exit-stats: ok", "connection open", "VM running", "quit: ok", "exit status 0"},
			Events: []string{"SHUTDOWN guest=false reason=host-qmp-quit"},
		},
	},
	{
		name: "stop and cont", run: guestSleep,
		commands: []string{"stop", "cont"},
		events:   []string{"STOP", "RESUME"},
		play: func(s *session) {
			s.call("stop")
			s.status()
			s.call("cont")
			s.status()
		},
		want: observation{
			Steps: []string{"stop: ok", "status paused", "cont: ok", "status running",
				"connection open", "VM running", "quit: ok", "exit status 0"},
			Events: []string{"STOP", "RESUME", "SHUTDOWN guest=false reason=host-qmp-quit"},
		},
	},
	{
		name: "stop and cont twice", run: guestSleep,
		commands: []string{"stop", "cont"},
		events:   []string{"STOP", "RESUME"},
		play: func(s *session) {
			s.call("stop")
			s.call("stop")
			s.status()
			s.call("cont")
			s.call("cont")
			s.status()
		},
		want: observation{
			Steps: []string{"stop: ok", "stop: ok", "status paused", "cont: ok", "cont: ok", "status running",
				"connection open", "VM running", "quit: ok", "exit status 0"},
			Events: []string{"STOP", "RESUME", "SHUTDOWN guest=false reason=host-qmp-quit"},
		},
	},
	{
		name: "quit while paused", run: guestSleep, ready: true,
		commands: []string{"stop", "quit"},
		events:   []string{"STOP", "SHUTDOWN"},
		play: func(s *session) {
			s.call("stop")
			s.call("quit")
			s.waitExit()
		},
		want: observation{
			Steps:  []string{"stop: ok", "quit: ok", "exit status 0", "connection closed"},
			Events: []string{"STOP", "SHUTDOWN guest=false reason=host-qmp-quit"},
		},
	},
	{
		name: "guest powers off", run: "true",
		events: []string{"SHUTDOWN"},
		play: func(s *session) {
			s.waitEvent("SHUTDOWN")
			s.waitExit()
		},
		want: observation{
			Steps:  []string{"exit status 0", "connection closed"},
			Events: []string{"SHUTDOWN guest=true reason=guest-shutdown"},
		},
	},
	{
		// reboot=t: a triple fault (QEMU's microvm has no i8042), a reset
		// for both.
		name: "guest reboots with -no-reboot", run: "true", exit: "reboot",
		qemuArgs: []string{"-no-reboot"}, govmmArgs: []string{"--no-reboot"},
		events: []string{"SHUTDOWN"},
		play: func(s *session) {
			s.waitEvent("SHUTDOWN")
			s.waitExit()
		},
		want: observation{
			Steps:  []string{"exit status 0", "connection closed"},
			Events: []string{"SHUTDOWN guest=true reason=guest-reset"},
		},
	},
	{
		name: "system_powerdown and the guest powers off", run: guestSleep, ready: true,
		commands: []string{"system_powerdown"},
		events:   []string{"POWERDOWN", "SHUTDOWN"},
		play: func(s *session) {
			s.call("system_powerdown")
			s.waitEvent("SHUTDOWN")
			s.waitExit()
		},
		want: observation{
			Steps:  []string{"system_powerdown: ok", "exit status 0", "connection closed"},
			Events: []string{"POWERDOWN", "SHUTDOWN guest=true reason=guest-shutdown"},
		},
	},
	{
		name: "system_powerdown ignored by the guest", run: guestSleep, button: "ignore", ready: true,
		commands: []string{"system_powerdown"},
		events:   []string{"POWERDOWN"},
		play: func(s *session) {
			s.call("system_powerdown")
			s.status()
		},
		want: observation{
			Steps:  []string{"system_powerdown: ok", "status running", "connection open", "VM running", "quit: ok", "exit status 0"},
			Events: []string{"POWERDOWN", "SHUTDOWN guest=false reason=host-qmp-quit"},
		},
	},
	{
		name: "system_powerdown while paused waits for cont", run: guestSleep, ready: true,
		commands: []string{"stop", "system_powerdown", "cont"},
		events:   []string{"STOP", "POWERDOWN", "RESUME", "SHUTDOWN"},
		play: func(s *session) {
			s.call("stop")
			s.call("system_powerdown")
			s.status()
			s.call("cont")
			s.waitEvent("SHUTDOWN")
			s.waitExit()
		},
		want: observation{
			Steps:  []string{"stop: ok", "system_powerdown: ok", "status paused", "cont: ok", "exit status 0", "connection closed"},
			Events: []string{"STOP", "POWERDOWN", "RESUME", "SHUTDOWN guest=true reason=guest-shutdown"},
		},
	},
	{
		name: "system_reset resets in place", run: guestSleep,
		commands: []string{"system_reset"},
		events:   []string{"RESET", "SHUTDOWN"},
		play: func(s *session) {
			s.call("system_reset")
			s.status()
		},
		want: observation{
			Steps:  []string{"system_reset: ok", "status running", "connection open", "VM running", "quit: ok", "exit status 0"},
			Events: []string{"RESET guest=false reason=host-qmp-system-reset", "SHUTDOWN guest=false reason=host-qmp-quit"},
		},
	},
	{
		name: "system_reset with -no-reboot shuts down", run: guestSleep,
		qemuArgs: []string{"-no-reboot"}, govmmArgs: []string{"--no-reboot"},
		commands: []string{"system_reset"},
		events:   []string{"SHUTDOWN"},
		play: func(s *session) {
			s.call("system_reset")
			s.waitExit()
		},
		want: observation{
			Steps:  []string{"system_reset: ok", "exit status 0", "connection closed"},
			Events: []string{"SHUTDOWN guest=false reason=host-qmp-system-reset"},
		},
	},
	{
		// The reset machine stays stopped, in prelaunch, until cont.
		name: "system_reset while paused", run: guestSleep, ready: true,
		commands: []string{"stop", "system_reset", "cont"},
		events:   []string{"STOP", "RESET", "RESUME"},
		play: func(s *session) {
			s.call("stop")
			s.call("system_reset")
			s.status()
			s.call("cont")
			s.status()
		},
		want: observation{
			Steps: []string{"stop: ok", "system_reset: ok", "status prelaunch", "cont: ok", "status running",
				"connection open", "VM running", "quit: ok", "exit status 0"},
			Events: []string{"STOP", "RESET guest=false reason=host-qmp-system-reset", "RESUME", "SHUTDOWN guest=false reason=host-qmp-quit"},
		},
	},
	{
		// A guest kernel panic reported through pvpanic stops the VM for
		// inspection (QEMU: -device pvpanic-pci -action panic=pause); cont
		// lets it go on. ${IFS} is a space the kernel command line cannot
		// carry.
		name: "guest panic with pvpanic pauses", run: "sh,-c,echo${IFS}c>/proc/sysrq-trigger",
		qemuArgs:  []string{"-device", "pvpanic-pci", "-action", "panic=pause"},
		govmmArgs: []string{"--on-panic", "pause"},
		commands:  []string{"cont"},
		events:    []string{"GUEST_PANICKED", "STOP", "RESUME", "RESET"},
		play: func(s *session) {
			s.waitEvent("STOP")
			s.status()
			s.call("cont") // the panic goes on: panic=-1 reboots the guest
			s.waitEvent("RESET")
			s.status()
		},
		want: observation{
			Steps: []string{"status guest-panicked", "cont: ok", "status running",
				"connection open", "VM running", "quit: ok", "exit status 0"},
			Events: []string{"GUEST_PANICKED action=pause", "STOP", "RESUME",
				"RESET guest=true reason=guest-reset", "SHUTDOWN guest=false reason=host-qmp-quit"},
		},
	},
	{
		// govmm's own: the exit trace of a running VM, written on request
		// (a FIFO is refused: it could hold up the QMP server).
		name: "x-govmm-dump-exit-trace", run: guestSleep, ready: true, govmmOnly: true,
		govmmArgs: []string{"--exit-trace", "{dir}/at-exit.json"},
		commands:  []string{"x-govmm-dump-exit-trace"},
		play: func(s *session) {
			// Landlock lets govmm write only beside its output files; a
			// kernel without it leaves govmm unconfined.
			outside := filepath.Join(s.t.TempDir(), "trace.json")
			_, err := s.d.Run(goqmp.Command{Execute: "x-govmm-dump-exit-trace", Args: map[string]any{"filename": outside}})
			_, statErr := os.Stat(outside)
			refused := err != nil && strings.Contains(err.Error(), "permission denied") && errors.Is(statErr, fs.ErrNotExist)
			abi, _ := landlocksys.LandlockGetABIVersion()
			s.step(fmt.Sprintf("outside refused as Landlock says: %v", refused == (abi >= 1)))
			dir := s.dir
			path := filepath.Join(dir, "trace.json")
			_, err = s.d.Run(goqmp.Command{Execute: "x-govmm-dump-exit-trace", Args: map[string]any{"filename": path}})
			s.result("x-govmm-dump-exit-trace", err)
			b, err := os.ReadFile(path)
			if err == nil {
				var sum testenv.TraceSummary
				if sum, err = testenv.CheckTrace(b); err == nil {
					_, named1 := sum.Tracks["vCPU 1"]
					s.step(fmt.Sprintf("trace valid, vCPU 0 slices %v, vCPU 1 named %v", sum.Tracks["vCPU 0"] > 0, named1))
				}
			}
			if err != nil {
				s.step("trace: " + err.Error())
			}
			fifo := filepath.Join(dir, "fifo")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				s.t.Fatal(err)
			}
			_, err = s.d.Run(goqmp.Command{Execute: "x-govmm-dump-exit-trace", Args: map[string]any{"filename": fifo}})
			s.step(fmt.Sprintf("FIFO refused: %v", err != nil && strings.Contains(err.Error(), "other than a regular file")))
		},
		want: observation{
			Steps: []string{"outside refused as Landlock says: true", "x-govmm-dump-exit-trace: ok", "trace valid, vCPU 0 slices true, vCPU 1 named true", "FIFO refused: true",
				"connection open", "VM running", "quit: ok", "exit status 0"},
			Events: []string{"SHUTDOWN guest=false reason=host-qmp-quit"},
		},
	},
}

// shapeDiffsAllowed are the differences between QEMU's replies and ours
// that are deliberate, per command, with the reason.
var shapeDiffsAllowed = map[string]map[string]string{
	"query-blockstats": {
		// QEMU reports the image file's protocol node beside the format
		// node; a govmm disk is one node.
		"missing [].parent": "a govmm disk has no separate protocol node",
	},
	"query-pci": {
		// QEMU's virtio-pci functions also have an INTx pin (and so an
		// irq); govmm's are MSI-X only.
		"missing [].devices[].irq": "govmm's virtio functions have no INTx pin",
	},
}

// vmProc is a running VMM process with a QMP socket.
type vmProc struct {
	cmd     *exec.Cmd
	sock    string
	console *syncBuffer
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done closes
}

// start runs the VMM and waits for its QMP socket.
func startVM(t *testing.T, args []string, sock string) *vmProc {
	t.Helper()
	p := &vmProc{cmd: exec.Command(args[0], args[1:]...), sock: sock, console: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.console, p.console
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", args[0], err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before its QMP socket came up: %v\n%s", args[0], p.waitErr, p.console)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no QMP socket after 30 s\n%s", args[0], p.console)
		}
	}
}

// exitStatus waits up to d for the process to end and describes how.
func (p *vmProc) exitStatus(d time.Duration) string {
	select {
	case <-p.done:
	case <-time.After(d):
		return "still running"
	}
	var ee *exec.ExitError
	switch {
	case p.waitErr == nil:
		return "exit status 0"
	case errors.As(p.waitErr, &ee):
		return ee.Error()
	}
	return p.waitErr.Error()
}

func (p *vmProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// session is one scenario being played on one VMM through go-qemu.
type session struct {
	t    *testing.T
	dir  string // {dir} in govmmArgs
	proc *vmProc
	d    *goqemu.Domain
	rm   *raw.Monitor
	obs  observation
	// replies are the raw "return" values of the queries, for the shape
	// comparison.
	replies map[string]any

	mu       sync.Mutex
	events   []string
	arrived  chan struct{} // nudged on every event
	finished chan struct{} // closed when the event stream ends
}

// formatEvent is how events are compared: name, and the data fields
// that carry behaviour.
func formatEvent(e goqmp.Event) string {
	s := e.Event
	if g, ok := e.Data["guest"]; ok {
		s += fmt.Sprintf(" guest=%v", g)
	}
	if r, ok := e.Data["reason"]; ok {
		s += fmt.Sprintf(" reason=%v", r)
	}
	if a, ok := e.Data["action"]; ok {
		s += fmt.Sprintf(" action=%v", a)
	}
	return s
}

func newSession(t *testing.T, p *vmProc) *session {
	t.Helper()
	// The socket file appears at bind(), before the VMM listens: a dial in
	// between is refused, so retry that (and only that) for a while.
	var mon *goqmp.SocketMonitor
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if mon, err = goqmp.NewSocketMonitor("unix", p.sock, 5*time.Second); err == nil {
			break
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			t.Fatalf("%v\n%s", err, p.console)
		}
		select {
		case <-p.done:
			t.Fatalf("%v: the VMM exited: %v\n%s", err, p.waitErr, p.console)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := mon.Connect(); err != nil {
		t.Fatalf("go-qemu Connect: %v", err)
	}
	d, err := goqemu.NewDomain(mon, "conformance")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	evs, _, err := d.Events()
	if err != nil {
		t.Fatal(err)
	}
	s := &session{t: t, proc: p, d: d, rm: raw.NewMonitor(mon), replies: map[string]any{},
		arrived: make(chan struct{}, 1), finished: make(chan struct{})}
	// go-qemu's event channels are unbuffered: read them all the time,
	// or its reader stops and commands hang.
	go func() {
		defer close(s.finished)
		for e := range evs {
			s.mu.Lock()
			s.events = append(s.events, formatEvent(e))
			s.mu.Unlock()
			select {
			case s.arrived <- struct{}{}:
			default:
			}
		}
	}()
	return s
}

func (s *session) step(what string) { s.obs.Steps = append(s.obs.Steps, what) }

// result records a call's outcome: "ok" or go-qemu's error (QEMU's desc).
func (s *session) result(cmd string, err error) {
	if err != nil {
		s.step(cmd + ": " + err.Error())
	} else {
		s.step(cmd + ": ok")
	}
}

// call runs cmd as qemu.Domain.Run does (no arguments).
func (s *session) call(cmd string) {
	_, err := s.d.Run(goqmp.Command{Execute: cmd})
	s.result(cmd, err)
}

// query runs cmd through decode (go-qemu's typed API; nil for none),
// and keeps its raw reply for the shape comparison.
func (s *session) query(cmd string, decode func() (any, error)) {
	if decode != nil {
		if _, err := decode(); err != nil {
			s.result(cmd, fmt.Errorf("go-qemu: %w", err))
			return
		}
	}
	b, err := s.d.Run(goqmp.Command{Execute: cmd})
	if err == nil {
		var r struct{ Return any }
		if err = json.Unmarshal(b, &r); err == nil {
			s.replies[cmd] = r.Return
		}
	}
	s.result(cmd, err)
}

// status records query-status as go-qemu's typed Domain.Status reads it.
func (s *session) status() {
	st, err := s.rm.QueryStatus()
	if err != nil {
		s.step("query-status: " + err.Error())
		return
	}
	if (st.Status == raw.RunStateRunning) != st.Running {
		s.step(fmt.Sprintf("status %v but running=%v", st.Status, st.Running))
		return
	}
	s.step("status " + st.Status.String())
}

// waitEvent waits for an event named name; the wait itself is not a step
// (the event list is compared in full at the end).
func (s *session) waitEvent(name string) {
	deadline := time.After(30 * time.Second)
	for {
		s.mu.Lock()
		seen := slices.ContainsFunc(s.events, func(e string) bool { return strings.Fields(e)[0] == name })
		s.mu.Unlock()
		if seen {
			return
		}
		select {
		case <-s.arrived:
		case <-s.finished:
			return
		case <-deadline:
			s.step("no " + name + " event within 30 s")
			return
		}
	}
}

// waitExit records how the process ended (within 20 s) and whether the
// connection went with it.
func (s *session) waitExit() {
	s.step(s.proc.exitStatus(20 * time.Second))
	s.step(s.connection())
}

// connection says whether the QMP connection still answers.
func (s *session) connection() string {
	answered := make(chan error, 1)
	go func() {
		_, err := s.rm.QueryStatus()
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			return "connection closed"
		}
		return "connection open"
	case <-time.After(10 * time.Second):
		return "connection open but silent for 10 s"
	}
}

// finish ends a scenario that left the VM running: the connection and
// the VM must still be there; then quit, and the event stream must end.
func (s *session) finish() observation {
	if s.proc.running() {
		s.step(s.connection())
		s.step("VM running")
		s.call("quit")
		s.step(s.proc.exitStatus(20 * time.Second))
	}
	select {
	case <-s.finished:
	case <-time.After(10 * time.Second):
		s.step("event stream still open 10 s after the VM ended")
	}
	s.mu.Lock()
	s.obs.Events = slices.Clone(s.events)
	s.mu.Unlock()
	return s.obs
}

// guestCmdline is the kernel command line of a scenario.
func guestCmdline(sc scenario) string {
	c := "console=ttyS0 reboot=t panic=-1 quiet govmm.run=" + sc.run
	if sc.exit != "" {
		c += " govmm.exit=" + sc.exit
	}
	if sc.button != "" {
		c += " govmm.button=" + sc.button
	}
	return c
}

// waitReady waits for the guest's GOVMM-READY line on the console.
func (s *session) waitReady() {
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s.proc.console.String(), "GOVMM-READY") {
		if time.Now().After(deadline) || !s.proc.running() {
			s.t.Fatalf("no GOVMM-READY from the guest within 30 s:\n%s", lastLines(s.proc.console.String(), 15))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// diskImage is a 1 MiB raw disk for one VM.
func diskImage(t *testing.T) string {
	t.Helper()
	p := filepath.Join(testenv.ShortTempDir(t), "disk.img")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func playGovmm(t *testing.T, kernel string, sc scenario) (observation, map[string]any, *syncBuffer) {
	sock := filepath.Join(testenv.ShortTempDir(t), "qmp.sock")
	dir := t.TempDir()
	args := []string{govmmBin, "run", "--kernel", kernel, "--initrd", initramfs, "--smp", "2", "--mem", "512M",
		"--disk", diskImage(t), "--append", guestCmdline(sc), "--qmp", "unix:" + sock}
	for _, a := range sc.govmmArgs {
		args = append(args, strings.ReplaceAll(a, "{dir}", dir))
	}
	p := startVM(t, args, sock)
	s := newSession(t, p)
	s.dir = dir
	if sc.ready {
		s.waitReady()
	}
	sc.play(s)
	return s.finish(), s.replies, p.console
}

// playQEMU runs QEMU as guests/Makefile does on these hosts (microvm, the
// vmlinux through PVH, -cpu host without arch-capabilities for kvm_pvm),
// with a PCIe bus and a virtio-blk-pci disk named as govmm names its own.
func playQEMU(t *testing.T, qemu, kernel string, sc scenario) (observation, map[string]any, *syncBuffer) {
	sock := filepath.Join(testenv.ShortTempDir(t), "qmp.sock")
	args := []string{qemu, "-M", "microvm,pcie=on", "-enable-kvm", "-cpu", "host,-arch-capabilities",
		"-smp", "2", "-m", "512", "-kernel", kernel, "-initrd", initramfs, "-append", guestCmdline(sc),
		"-display", "none", "-nodefaults", "-no-user-config", "-serial", "stdio",
		"-drive", "file=" + diskImage(t) + ",format=raw,if=none,id=virtio-blk",
		"-device", "virtio-blk-pci,drive=virtio-blk,id=virtio-blk,disable-legacy=on",
		"-qmp", "unix:" + sock + ",server=on,wait=off"}
	p := startVM(t, append(args, sc.qemuArgs...), sock)
	s := newSession(t, p)
	if sc.ready {
		s.waitReady()
	}
	sc.play(s)
	return s.finish(), s.replies, p.console
}

// qemuForConformance finds QEMU 7.2, or says why the QEMU half is skipped.
func qemuForConformance() (string, string) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", "qemu-system-x86_64 is not installed: the QEMU half of the conformance test is skipped"
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.Contains(string(out), "version 7.2") {
		return "", fmt.Sprintf("%s is not QEMU 7.2 (%q): the QEMU half of the conformance test is skipped", bin, firstLine(string(out)))
	}
	return bin, ""
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func diffObservation(t *testing.T, who string, got, want observation, console *syncBuffer) {
	t.Helper()
	if !reflect.DeepEqual(got.Steps, want.Steps) {
		t.Errorf("%s steps:\n got %q\nwant %q", who, got.Steps, want.Steps)
	}
	if !reflect.DeepEqual(got.Events, want.Events) {
		t.Errorf("%s events:\n got %q\nwant %q", who, got.Events, want.Events)
	}
	if t.Failed() {
		t.Logf("%s output:\n%s", who, lastLines(console.String(), 15))
	}
}

// TestQMPGoQEMUConformance plays every scenario through go-qemu on govmm and,
// side by side, on QEMU 7.2.
func TestQMPGoQEMUConformance(t *testing.T) {
	kernel := needGuest(t)
	qemu, noQEMU := qemuForConformance()
	if noQEMU != "" {
		t.Log(noQEMU)
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			var ours, theirs map[string]any
			if qemu != "" && !sc.govmmOnly {
				t.Run("QEMU", func(t *testing.T) {
					obs, replies, console := playQEMU(t, qemu, kernel, sc)
					theirs = replies
					diffObservation(t, "QEMU", obs, sc.want, console)
				})
			}
			t.Run("govmm", func(t *testing.T) {
				if sc.pending != "" {
					t.Skip("pending: " + sc.pending)
				}
				obs, replies, console := playGovmm(t, kernel, sc)
				ours = replies
				diffObservation(t, "govmm", obs, sc.want, console)
			})
			compareShapes(t, theirs, ours)
		})
	}
	t.Run("every command and event is covered", func(t *testing.T) { checkCoverage(t, kernel) })
}

// compareShapes compares the replies of the queries both sides answered.
func compareShapes(t *testing.T, theirs, ours map[string]any) {
	t.Helper()
	cmds := make([]string, 0, len(ours))
	for cmd := range ours {
		if _, ok := theirs[cmd]; ok {
			cmds = append(cmds, cmd)
		}
	}
	sort.Strings(cmds)
	for _, cmd := range cmds {
		for _, d := range testenv.ShapeDiff(testenv.JSONShape(theirs[cmd]), testenv.JSONShape(ours[cmd])) {
			if why, ok := shapeDiffsAllowed[cmd][d]; ok {
				t.Logf("%s: %s (%s)", cmd, d, why)
				continue
			}
			t.Errorf("%s reply differs from QEMU's: %s", cmd, d)
		}
	}
}

// checkCoverage asks govmm for its commands and requires each, and each
// event govmm emits, to be played by some scenario.
func checkCoverage(t *testing.T, kernel string) {
	sock := filepath.Join(testenv.ShortTempDir(t), "qmp.sock")
	p := startVM(t, []string{govmmBin, "run", "--kernel", kernel, "--initrd", initramfs,
		"--append", guestCmdline(scenario{run: guestSleep}), "--qmp", "unix:" + sock}, sock)
	s := newSession(t, p)
	cmds, err := s.d.Commands()
	if err != nil {
		t.Fatal(err)
	}
	s.call("quit")
	covered := map[string]bool{}
	events := map[string]bool{}
	for _, sc := range scenarios {
		for _, c := range sc.commands {
			covered[c] = true
		}
		for _, e := range sc.events {
			events[e] = true
		}
	}
	for _, c := range cmds {
		if !covered[c] {
			t.Errorf("govmm lists %s, which no conformance scenario plays", c)
		}
	}
	// The events govmm emits: those of qmp.Machine's contract.
	for _, e := range []string{"STOP", "RESUME", "POWERDOWN", "RESET", "SHUTDOWN"} {
		if !events[e] {
			t.Errorf("no conformance scenario covers the %s event", e)
		}
	}
}
