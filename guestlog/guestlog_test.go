package guestlog

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// testLogger returns a logger with a clock the test moves and the lines
// it logs.
func testLogger(device string) (*Logger, *time.Time, *[]string) {
	l := New(device)
	now := time.Unix(1000, 0)
	var lines []string
	l.now = func() time.Time { return now }
	l.printf = func(format string, v ...any) { lines = append(lines, fmt.Sprintf(format, v...)) }
	return l, &now, &lines
}

func TestBurstThenSummaries(t *testing.T) {
	l, now, lines := testLogger("virtio-blk")
	for i := range 1000 {
		l.Printf("bad_request", "request %d", i)
	}
	if len(*lines) != Burst {
		t.Fatalf("%d lines for 1000 events, want %d", len(*lines), Burst)
	}
	if !strings.HasPrefix((*lines)[0], "virtio-blk: request 0") || !strings.Contains((*lines)[Burst-1], "summarized") {
		t.Errorf("lines %q", *lines)
	}
	// A period later, the next event brings a summary of what was
	// suppressed, itself included.
	*now = now.Add(Period)
	l.Printf("bad_request", "request %d", 1000)
	if len(*lines) != Burst+1 || !strings.Contains((*lines)[Burst], "991 bad_request events suppressed") ||
		!strings.HasSuffix((*lines)[Burst], "request 1000") {
		t.Fatalf("summary %q", (*lines)[Burst:])
	}
	// Then quiet again until the next period.
	*now = now.Add(Period - time.Second)
	l.Printf("bad_request", "x")
	if len(*lines) != Burst+1 {
		t.Errorf("a line within the period: %q", (*lines)[Burst+1:])
	}
	// Another kind has its own burst.
	l.Printf("host_io", "disk gone")
	if len(*lines) != Burst+2 {
		t.Errorf("first event of a second kind not logged")
	}
	if got, want := l.Counts(), map[string]uint64{"bad_request": 1002, "host_io": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("counts %v, want %v", got, want)
	}
}

func TestSetCounts(t *testing.T) {
	var s Set
	a, b, c := s.Logger("pci"), s.Logger("virtio-blk"), s.Logger("pci")
	for _, l := range []*Logger{a, b, c} {
		l.printf = func(string, ...any) {}
	}
	a.Printf("bar_overlap", "x")
	c.Printf("bar_overlap", "y")
	b.Printf("bad_request", "z")
	want := []Count{{"pci", "bar_overlap", 2}, {"virtio-blk", "bad_request", 1}}
	if got := s.Counts(); !reflect.DeepEqual(got, want) {
		t.Errorf("counts %v, want %v", got, want)
	}
	var none *Set
	if none.Logger("x") == nil || none.Counts() != nil {
		t.Error("nil Set")
	}
}

// TestConcurrent is for -race: devices log from vCPUs and goroutines.
func TestConcurrent(t *testing.T) {
	var s Set
	l := s.Logger("dev")
	l.printf = func(string, ...any) {}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				l.Printf("k", "event")
				s.Counts()
			}
		})
	}
	wg.Wait()
	if n := l.Counts()["k"]; n != 4000 {
		t.Errorf("count %d, want 4000", n)
	}
}
