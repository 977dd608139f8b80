package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// signalEnder ends the VM on the first SIGINT, SIGTERM or SIGHUP, as QEMU
// does, and the process on the second, or on the first once the VM has
// ended: a shutdown that hangs (a disk or pipe that blocks, a bug) must
// never leave the user without a way out, and a supervisor that sends
// one SIGTERM before its SIGKILL gets an exit.
//
// It watches from the start of `govmm run`, before the VM is built: a
// signal during set-up (the kernel unpacked, its cache entry written, the
// sockets made) ends the VM as soon as it is attached, after which the
// usual clean-up runs, instead of killing the process half-way. It
// watches until the process exits, so a signal during the final clean-up
// is handled too.
type signalEnder struct {
	ch chan os.Signal

	mu      sync.Mutex
	first   os.Signal   // the signal that ended the VM, nil if none
	stop    func()      // how the VM is ended; nil until attach
	ended   func() bool // whether the VM has ended already
	cleanup func()      // what a forced exit must undo
}

// watchSignals starts watching for the signals.
func watchSignals() *signalEnder {
	e := &signalEnder{ch: make(chan os.Signal, 2), cleanup: func() {}}
	signal.Notify(e.ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		for s := range e.ch {
			e.mu.Lock()
			second := e.first != nil
			after := !second && e.ended != nil && e.ended()
			if !second && !after {
				e.first = s
			}
			stop, cleanup := e.stop, e.cleanup
			e.mu.Unlock()
			switch {
			case second:
				cleanup()
				forceExit(fmt.Sprintf("second signal (%v) while shutting down", s))
			case after:
				cleanup()
				forceExit(fmt.Sprintf("signal (%v) after the VM ended, while shutting down", s))
			case stop != nil:
				stop()
			}
		}
	}()
	return e
}

// attach says how to end the VM (stop), how to tell that it has ended on
// its own (ended), and what a forced exit must undo (cleanup, which must
// not block). A signal that came before it ends the VM now.
func (e *signalEnder) attach(stop func(), ended func() bool, cleanup func()) {
	e.mu.Lock()
	e.stop, e.ended, e.cleanup = stop, ended, cleanup
	early := e.first != nil
	e.mu.Unlock()
	if early {
		stop()
	}
}

// forceExit says why on stderr and exits with status 1. stderr may be
// what the shutdown hangs on (a pipe nobody reads), so the message gets a
// second at most.
func forceExit(why string) {
	said := make(chan struct{})
	go func() {
		fmt.Fprintf(os.Stderr, "\ngovmm: %s: exiting at once\n", why)
		close(said)
	}()
	select {
	case <-said:
	case <-time.After(time.Second):
	}
	os.Exit(1)
}

// EndedVM is the signal that ended the VM, or nil if none did (the VM
// had ended on its own, or no signal came).
func (e *signalEnder) EndedVM() os.Signal {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.first
}
