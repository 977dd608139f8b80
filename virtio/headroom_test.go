package virtio

import "testing"

func TestParseRunnable(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"0.20 0.53 1.17 1/79 30004\n", 1, true},
		{"12.00 8.50 4.25 17/1203 999999\n", 17, true},
		{"0.00 0.00 0.00 0/1 1", 0, true},
		{"", 0, false},
		{"0.20 0.53 1.17", 0, false},
		{"0.20 0.53 1.17 x/79 1", 0, false},
		{"0.20 0.53 1.17 12", 0, false},                 // no slash: cut short
		{"0.20 0.53 1.17 1234567890123/79 1", 0, false}, // more digits than an int needs
	} {
		got, ok := parseRunnable([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("parseRunnable(%q) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// TestHeadroomZeroValueSpare: a transport that never opened the count
// (not polling, or no /proc) must never be told to stop polling, and must
// not read fd 0.
func TestHeadroomZeroValueSpare(t *testing.T) {
	if !(hostHeadroom{}).spare() {
		t.Fatal("zero hostHeadroom says the host has no spare CPU")
	}
}

// TestHeadroomCountsThisProcess: with more CPUs than runnable tasks can
// be (the reader itself is one), spare holds; with no CPUs, it never does.
func TestHeadroomCountsThisProcess(t *testing.T) {
	h := headroom()
	if !h.open {
		t.Skip("/proc/loadavg not readable")
	}
	many, none := h, h
	many.cpus, none.cpus = 1<<20, 0
	if !many.spare() {
		t.Error("spare with 2^20 CPUs = false")
	}
	if none.spare() {
		t.Error("spare with 0 CPUs = true: the reader itself is runnable")
	}
}

func TestCountCPUList(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"0-1\n", 2, true},
		{"0\n", 1, true},
		{"0-3,8,10-11\n", 7, true},
		{"", 0, false},
		{"3-1", 0, false},
		{"0-x", 0, false},
		{"-1", 0, false},
	} {
		got, ok := countCPUList(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("countCPUList(%q) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
