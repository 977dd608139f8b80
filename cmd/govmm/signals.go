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
// does, and the process on the second: a shutdown that hangs (a disk or
// pipe that blocks, a bug) must never leave the user without a way out.
type signalEnder struct {
	ch    chan os.Signal
	mu    sync.Mutex
	first os.Signal // the signal that ended the VM, nil if none (mu)
}

// endOnSignals starts watching for the signals. stop is how the VM is
// ended. On a second signal, cleanup (which must not block) restores what
// the user would otherwise be left with, and the process exits with
// status 1.
func endOnSignals(stop, cleanup func()) *signalEnder {
	e := &signalEnder{ch: make(chan os.Signal, 2)}
	signal.Notify(e.ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s, ok := <-e.ch
		if !ok {
			return
		}
		e.mu.Lock()
		e.first = s
		e.mu.Unlock()
		stop()
		// The channel stays read until the process ends, so a second
		// signal is never swallowed.
		if s, ok := <-e.ch; ok {
			cleanup()
			forceExit(s)
		}
	}()
	return e
}

// forceExit says why on stderr and exits with status 1. stderr may be
// what the shutdown hangs on (a pipe nobody reads), so the message gets a
// second at most.
func forceExit(s os.Signal) {
	said := make(chan struct{})
	go func() {
		fmt.Fprintf(os.Stderr, "\ngovmm: second signal (%v) while shutting down: exiting at once\n", s)
		close(said)
	}()
	select {
	case <-said:
	case <-time.After(time.Second):
	}
	os.Exit(1)
}

// First is the signal that ended the VM, or nil.
func (e *signalEnder) First() os.Signal {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.first
}

// Stop stops watching: the signals get their default action again.
func (e *signalEnder) Stop() {
	signal.Stop(e.ch)
}
