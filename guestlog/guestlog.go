// Package guestlog logs what a guest made a device do wrong without
// letting the guest flood the host's log: per device and kind of event,
// the first Burst lines are logged, then at most one summary per Period
// says how many more were suppressed. Every event is counted, so the
// counts (exported as metrics) keep going where the log goes quiet.
package guestlog

import (
	"fmt"
	"log"
	"sort"
	"sync"
	"time"
)

const (
	// Burst is how many lines of one kind a device logs before it
	// starts suppressing them.
	Burst = 10
	// Period is the least time between two summaries of one kind.
	Period = time.Minute
)

// Logger logs one device's events. The zero value is not usable; get one
// from New or Set.Logger. Its methods are safe for concurrent use.
type Logger struct {
	device string
	now    func() time.Time              // time.Now, or a test's clock
	printf func(format string, v ...any) // log.Printf, or a test's

	mu    sync.Mutex
	kinds map[string]*kindState
}

// kindState is one kind's log state and count; mu guards it.
type kindState struct {
	total      uint64    // events, logged or not
	logged     int       // lines of the burst logged so far
	suppressed uint64    // events not logged since the last line
	last       time.Time // when the last line was logged
}

// New returns a logger for device (the log prefix and the metric label)
// that belongs to no Set.
func New(device string) *Logger {
	return &Logger{device: device, now: time.Now, printf: log.Printf, kinds: map[string]*kindState{}}
}

// Device is the device name the logger was made for.
func (l *Logger) Device() string { return l.device }

// Printf records one event of kind (a short, fixed label such as
// "bad_request") and logs it as format and args describe, unless the
// kind's burst is spent: then it is counted, and a summary is logged at
// most once per Period. The message is only formatted when logged.
func (l *Logger) Printf(kind, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.kinds[kind]
	if k == nil {
		k = &kindState{}
		l.kinds[kind] = k
	}
	k.total++
	now := l.now()
	switch {
	case k.logged < Burst:
		k.logged++
		msg := fmt.Sprintf(format, args...)
		if k.logged == Burst {
			msg += fmt.Sprintf(" (further %s events summarized every %v)", kind, Period)
		}
		l.printf("%s: %s", l.device, msg)
		k.last = now
	case now.Sub(k.last) >= Period:
		l.printf("%s: %d %s events suppressed in the last %v; the latest: %s",
			l.device, k.suppressed+1, kind, now.Sub(k.last).Round(time.Second), fmt.Sprintf(format, args...))
		k.suppressed, k.last = 0, now
	default:
		k.suppressed++
	}
}

// Counts returns how many events of each kind the logger has seen.
func (l *Logger) Counts() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]uint64, len(l.kinds))
	for name, k := range l.kinds {
		out[name] = k.total
	}
	return out
}

// Set is the loggers of one VM, for their counts. The zero value is an
// empty set; a nil *Set hands out loggers that belong to none.
type Set struct {
	mu      sync.Mutex
	loggers []*Logger
}

// Logger returns a new logger for device in the set.
func (s *Set) Logger(device string) *Logger {
	l := New(device)
	if s != nil {
		s.mu.Lock()
		s.loggers = append(s.loggers, l)
		s.mu.Unlock()
	}
	return l
}

// Count is how many events of one kind a device has seen.
type Count struct {
	Device, Kind string
	N            uint64
}

// Counts returns the counts of every logger in the set, sorted by device
// and kind; loggers of the same device name are added up.
func (s *Set) Counts() []Count {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	loggers := append([]*Logger(nil), s.loggers...)
	s.mu.Unlock()
	sum := map[[2]string]uint64{}
	for _, l := range loggers {
		for kind, n := range l.Counts() {
			sum[[2]string{l.device, kind}] += n
		}
	}
	out := make([]Count, 0, len(sum))
	for k, n := range sum {
		out = append(out, Count{Device: k[0], Kind: k[1], N: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Device != out[j].Device {
			return out[i].Device < out[j].Device
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}
